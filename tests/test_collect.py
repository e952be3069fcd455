"""`collect` end to end with the expert: the three files, and stats that agree with them."""

import json
import re
from pathlib import Path

import pytest

from pettingllms.collect import EpisodePlan, collect
from pettingllms.config import load_config


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_collect(tmp_path, *overrides, name="run"):
    config = load_config([f"training.sft_data_dir={tmp_path}", f"training.run_name={name}", *overrides])
    return collect(config)


@pytest.mark.slow
def test_expert_collection_writes_three_files_that_agree(tmp_path):
    result = run_collect(
        tmp_path, "env.name=sokoban", "policy=expert", "training.sft_num_episodes=50", "policy.error_rate=0.3"
    )
    records, episodes = read_jsonl(result.files.records), read_jsonl(result.files.rollouts)
    stats = json.loads(result.files.stats.read_text())
    assert len(episodes) == stats["total_episodes"] == 50
    successful = [e for e in episodes if e["success"]]
    assert 0 < len(successful) < 50, "error_rate=0.3 must give both outcomes"
    assert stats["successful_episodes"] == len(successful)
    assert stats["success_rate"] == round(len(successful) / 50, 4)
    assert stats["kept_records"] == len(records) == sum(len(e["turns"]) for e in successful)
    assert stats["total_records"] == sum(len(e["turns"]) for e in episodes)
    assert {r["metadata"]["episode_id"] for r in records} == {e["episode_id"] for e in successful}
    assert all(r["metadata"]["env_success"] is True for r in records)
    for agent, counts in stats["per_agent"].items():
        assert counts["kept"] == sum(r["metadata"]["agent_name"] == agent for r in records)
    assert stats["removed"]["not_successful"] == stats["total_records"] - stats["kept_records"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stats["kept_record_tokens"]["tokenizer"])
    lengths = [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in records]
    assert stats["kept_record_tokens"]["max"] == max(lengths) > 50


@pytest.mark.slow
def test_without_errors_every_episode_succeeds(tmp_path):
    result = run_collect(tmp_path, "env.name=plan_path", "policy=expert", "training.sft_num_episodes=12")
    assert result.stats["success_rate"] == 1.0 and result.stats["kept_records"] > 0


@pytest.mark.slow
def test_same_seed_and_config_give_the_same_episodes(tmp_path):
    first = run_collect(tmp_path, "policy=expert", "policy.error_rate=0.5", "training.sft_num_episodes=12", name="a")
    second = run_collect(
        tmp_path,
        "policy=expert",
        "policy.error_rate=0.5",
        "training.sft_num_episodes=12",
        "training.rollout_concurrency=3",
        name="b",
    )

    def by_id(path):
        return sorted(read_jsonl(path), key=lambda r: (r["metadata"]["episode_id"], r["metadata"]["turn_idx"]))

    assert by_id(first.files.records) == by_id(second.files.records)


def test_samples_per_task_share_a_task(tmp_path):
    config = load_config(["training.sft_num_episodes=6", "training.num_samples_per_task=3"])
    specs = list(EpisodePlan(config))
    assert [(s.env_idx, s.rollout_idx) for s in specs] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert len({s.episode_id for s in specs}) == 6 and specs[0].seed == specs[2].seed != specs[3].seed


def test_train_and_test_splits_use_disjoint_seeds():
    train = {s.seed for s in EpisodePlan(load_config(["training.sft_num_episodes=500"]))}
    test = {s.seed for s in EpisodePlan(load_config(["training.sft_num_episodes=500", "env.split=test"]))}
    assert not train & test


@pytest.mark.slow
def test_tiny_hf_model_collects_and_stats_say_nothing_succeeded(tmp_path):
    result = run_collect(
        tmp_path,
        "env.name=sokoban",
        "policy=hf",
        "training.sft_num_episodes=4",
        "env.max_turns=1",
        "policy.max_tokens=24",
    )
    episodes = read_jsonl(result.files.rollouts)
    assert len(episodes) == 4 and all(len(e["turns"]) == 2 for e in episodes)
    assert all(t["prompt_text"] and t["prompt_text"].startswith("<|im_start|>") for e in episodes for t in e["turns"])
    assert result.stats["total_episodes"] == 4 and result.stats["errors"] == {}
    assert result.stats["kept_records"] == sum(len(e["turns"]) for e in episodes if e["success"])
    assert result.stats["usage"]["completion_tokens"] > 0


@pytest.mark.slow
def test_non_trainable_agent_and_role_specialized_policies(tmp_path):
    result = run_collect(
        tmp_path,
        "policy=expert",
        "policies.teacher.backend=expert",
        "agents.tool.policy=teacher",
        "agents.planner.trainable=false",
        "training.sft_num_episodes=6",
    )
    records = read_jsonl(result.files.records)
    assert records and {r["metadata"]["agent_name"] for r in records} == {"tool"}
    assert {r["metadata"]["policy_name"] for r in records} == {"teacher"}
    assert result.stats["removed"]["not_trainable"] == 6


def test_an_exception_inside_an_env_costs_one_episode_not_the_run(capsys):
    """A deliberately broken env (a test double: no registered env raises on purpose)."""
    import asyncio

    from pettingllms.collect import AgentSlot, EpisodeSpec, run_episode
    from pettingllms.envs import TurnBasedTextEnv
    from pettingllms.policies.base import SamplingParams
    from pettingllms.policies.expert import ExpertPolicy

    class BrokenEnv(TurnBasedTextEnv):
        possible_agents = ("solver",)

        def _reset_task(self, options):
            self.task_id = "broken-0"

        def _prompt(self, agent):
            return [{"role": "user", "content": "2+2?"}]

        def _apply_reply(self, agent, text):
            raise KeyError("bug in the env")

        def _expert_reply(self, agent, wrong):
            return "4"

    slots = {"solver": AgentSlot(ExpertPolicy(), SamplingParams(), True)}
    episode = asyncio.run(run_episode(BrokenEnv(), EpisodeSpec(0, 0, 0, 0, "broken-0-0", 0), slots, "broken"))
    assert episode["error"] == {"kind": "env_error", "message": "KeyError: 'bug in the env'"}
    assert episode["success"] is False and episode["turns"] == []
    assert "broken-0-0 failed inside the environment" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_refuses_another_policy_or_fewer_episodes(tmp_path):
    from pettingllms.exceptions import ConfigError, ResumeMismatchError

    run_collect(tmp_path, "policy=expert", "env.name=sudoku", "training.sft_num_episodes=4", name="guarded")
    with pytest.raises(ResumeMismatchError, match=r"policies: files have .*'error_rate': 0.0.*now .*'error_rate': 0.5"):
        run_collect(
            tmp_path,
            "policy=expert",
            "env.name=sudoku",
            "training.sft_num_episodes=6",
            "policy.error_rate=0.5",
            name="guarded",
        )
    with pytest.raises(ConfigError, match=r"already has 4 episodes.*sft_num_episodes=2.*at least 4"):
        run_collect(tmp_path, "policy=expert", "env.name=sudoku", "training.sft_num_episodes=2", name="guarded")
    resumed = run_collect(
        tmp_path,
        "policy=expert",
        "env.name=sudoku",
        "training.sft_num_episodes=6",
        "training.rollout_concurrency=2",
        name="guarded",
    )
    assert resumed.stats["total_episodes"] == 6


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.dataset=humaneval", "env.dataset: env 'sokoban' generates its tasks and takes no dataset."),
        ("env.kwargs.num_boxes=99", "env 'sokoban': num_boxes must be an integer from 1 to"),
        ("env.kwargs.colour=red", "env.kwargs.colour is not an argument of env 'sokoban'; it takes: max_turns,"),
    ],
)
def test_env_settings_it_does_not_take_are_config_errors(tmp_path, override, message):
    from pettingllms.exceptions import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        run_collect(tmp_path, "policy=expert", "env.name=sokoban", "training.sft_num_episodes=1", override)


def test_test_split_works_for_procedural_envs(tmp_path):
    result = run_collect(tmp_path, "policy=expert", "env.name=sudoku", "env.split=test", "training.sft_num_episodes=2")
    assert {e["seed"] for e in read_jsonl(result.files.rollouts)} == {1_000_000, 1_000_001}


def test_training_seed_shifts_where_a_dataset_walk_starts():
    specs = list(EpisodePlan(load_config(["env.name=math_env", "training.seed=50", "training.sft_num_episodes=3"])))
    assert [s.task_index for s in specs] == [50, 51, 52]


def test_two_runs_never_share_a_name_and_a_run_is_collected_by_one_process_at_a_time(tmp_path):
    from pettingllms.collect import Collector
    from pettingllms.exceptions import UserError

    config = load_config([f"training.sft_data_dir={tmp_path}", "policy=expert"])
    first, second = Collector(config), Collector(config)  # the same second, the same folder
    assert first.files.run_name != second.files.run_name
    named = load_config([f"training.sft_data_dir={tmp_path}", "policy=expert", "training.run_name=busy"])
    holder = Collector(named)
    with pytest.raises(UserError, match="'busy' .* is being collected by another process"):
        Collector(named)
    holder.close()
    Collector(named).close()
    first.close(), second.close()


def test_a_settings_mistake_is_reported_before_any_file_is_written(tmp_path):
    from pettingllms.exceptions import ConfigError

    with pytest.raises(ConfigError):
        run_collect(tmp_path / "data", "policy=expert", "env.kwargs.bogus=1")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "env", ["search_env", "search_single_agent", "consult_env", "consult_single_agent", "stateful_env sudoku"]
)
def test_the_newer_envs_write_files_that_agree_like_the_others(tmp_path, env):
    name, _, benchmark = env.partition(" ")
    overrides = [f"env.name={name}", "policy=expert", "training.sft_num_episodes=12", "policy.error_rate=0.5"]
    if benchmark:
        overrides.append(f"env.benchmark={benchmark}")
    result = run_collect(tmp_path, *overrides)
    records, episodes = read_jsonl(result.files.records), read_jsonl(result.files.rollouts)
    stats = json.loads(result.files.stats.read_text())
    assert len(episodes) == stats["total_episodes"] == 12 and stats["env_name"] == (benchmark or name)
    successful = [e for e in episodes if e["success"]]
    assert 0 < len(successful) < 12, "error_rate=0.5 must give both outcomes"
    trained = [t for e in successful for t in e["turns"] if t["trainable"]]
    assert stats["kept_records"] == len(records) == len(trained) > 0
    assert {r["metadata"]["episode_id"] for r in records} == {e["episode_id"] for e in successful}
    for agent, counts in stats["per_agent"].items():
        assert counts["kept"] == sum(r["metadata"]["agent_name"] == agent for r in records)
        assert counts["collected"] == sum(t["agent"] == agent for e in episodes for t in e["turns"])
