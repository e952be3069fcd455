"""Judged rewards (pettingllms/judge.py): scores read from any reply, a scripted judge server with known scores
for exact filter counts, broken judges counted and never fatal, `filter --rejudge`, and a real `transformers serve`.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import FaultyServer, free_port
from synthetic_runs import make_episode, standard_episodes, write_run
from test_openai_collect import served_model  # noqa: F401 - the fixture: a `transformers serve` of the tiny model

from pettingllms.cli import main
from pettingllms.config import load_config
from pettingllms.config.schema import RewardConfig
from pettingllms.curation import filter_run
from pettingllms.exceptions import ConfigError, UserError
from pettingllms.judge import (
    CRITERIA,
    Judge,
    built_in_rubric,
    check_rubric,
    combine_reward,
    judge_all,
    parse_score,
    render_rubric,
    start_judge,
)
from pettingllms.records import CollectionStats, RecordFilter
from pettingllms.runfiles import RunFiles


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- reading a score


@pytest.mark.parametrize(
    "reply, score",
    [
        ("The plan is sound.\nScore: 0.7", 0.7),
        ("7/10", 0.7),
        ("**8/10**", 0.8),
        ('{"score": 0.9, "why": "clear"}', 0.9),
        ("0.25", 0.25),
        ("  5 ", 0.5),  # a bare number above 1 is read on 0-10
        ("Score: 85%", 0.85),
        ("**Score:** 3 out of 4", 0.75),
        ("I'd say 3/10 at first. Final score = 0.6.", 0.6),  # the Score line wins over a fraction
        ("<think>Score: 0.1? no.</think>\nScore: 1", 1.0),  # a reasoning model's thoughts do not count
        ("Score: 0", 0.0),
        ("score is 40", 0.4),  # above 10: read on 0-100
    ],
)
def test_scores_are_read_from_the_usual_ways_of_writing_them(reply, score):
    assert parse_score(reply) == (pytest.approx(score), None)


@pytest.mark.parametrize(
    "reply, problem",
    [
        ("A fine reply, well argued.", "has no score"),
        ("", "has no score"),
        ("Score: 12/10", "outside its scale"),
        ("Score: -1", "outside its scale"),
        ("Score: 250", "outside its scale"),
        ("Score: 3/0", "outside its scale"),
        ("Score: 120%", "outside its scale"),
    ],
)
def test_a_reply_without_a_score_in_range_is_an_error_not_a_guess(reply, problem):
    score, why = parse_score(reply)
    assert score is None and problem in why


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list('Score: /%0123456789.-+*{}"out of</think>\n')) | st.characters()))
def test_reading_a_score_never_raises_and_stays_in_range(reply):
    score, problem = parse_score(reply)
    assert (score is None) != (problem is None)
    assert score is None or 0.0 <= score <= 1.0


def test_the_combined_reward_mixes_env_reward_and_score_by_the_weights():
    assert combine_reward(1.0, 0.5, {"rule": 0.6, "judge": 0.4}) == pytest.approx(0.8)
    assert combine_reward(0.0, 0.5, {"rule": 0.0, "judge": 2.0}) == 0.5
    assert combine_reward(0.3, None, {"rule": 1.0, "judge": 0.0}) == 0.3  # the score does not count
    assert combine_reward(0.3, None, {"rule": 1.0, "judge": 1.0}) is None  # it counts, and is missing


# ---------------------------------------------------------------- rubrics and settings


def test_rubrics_fill_their_fields_and_leave_other_braces():
    text = render_rubric('{agent} wrote {response}; answer {"score": x} {task}', {"agent": "tool", "response": "R"})
    assert text == 'tool wrote R; answer {"score": x} {task}'  # a field without a value stays as written
    for env_name in [*CRITERIA, "someone_elses_env"]:
        for unit in ("turn", "episode"):
            check_rubric(built_in_rubric(env_name, unit))
    assert "{response}" in built_in_rubric("sokoban", "turn") and "{transcript}" in built_in_rubric("x", "episode")
    assert CRITERIA["sokoban"] in built_in_rubric("sokoban", "turn")


@pytest.mark.parametrize(
    "override, message",
    [
        ("reward.weights={rule: 0, judge: 0}", r"^reward.weights=\{'rule': 0.0, 'judge': 0.0\} is invalid; expected"),
        ("reward.weights.style=1", r"^reward.weights.style=1.0 is invalid; expected only the keys 'rule' and 'judge'"),
        ("reward.weights.rule=-1", r"^reward.weights.rule=-1.0 is invalid; expected a finite number >= 0"),
        ("reward.weights.judge=0.4", r"^reward.weights.judge=0.4 is invalid; expected 0 without a judge"),
        ("reward.judge.backend=expert", r"^reward.judge.backend='expert' is invalid; expected 'openai' or 'hf'"),
        ("reward.judge.model=m", r"^reward.judge.base_url=None is invalid; expected the judge server's URL"),
        ("reward.unit=dialogue", r"^reward.unit='dialogue' is invalid; expected 'turn' or 'episode'"),
        ("reward.rubric=Grade {reply}", r"^reward.rubric: unknown field \{reply\}; a rubric may use \{task\}"),
        ("reward.rubric=Grade it.", r"^reward.rubric shows the judge no reply; use \{response\} or \{transcript\}"),
        ("reward.judge.bas_url=http://x/v1", r"^Unknown config key 'reward.judge.bas_url'. Did you mean"),
        ("training.min_reward=.nan", r"^training.min_reward=nan is invalid; expected a finite number"),
    ],
)
def test_bad_reward_settings_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_config([override])
    assert "\n" not in str(error.value)


def test_reward_settings_load_from_overrides():
    config = load_config(
        [
            "reward.judge.base_url=http://127.0.0.1:9/v1",
            "reward.judge.model=20250101",  # text, as typed: not the number 20250101
            "reward.weights.rule=0.6",
            "reward.weights.judge=0.4",
            "training.min_reward=0.5",
        ]
    )
    judge = config.reward.judge
    assert judge.backend == "openai" and judge.model == "20250101" and judge.temperature == 0.0
    assert config.reward.weights == {"rule": 0.6, "judge": 0.4} and config.training.min_reward == 0.5
    assert load_config([]).reward.judge is None


def test_the_reward_keys_are_listed(capsys):
    assert main(["keys", "reward"]) == 0
    listed = capsys.readouterr().out
    for key in ("reward.judge.base_url", "reward.judge.model", "reward.weights", "reward.unit", "reward.rubric"):
        assert key in listed


# ---------------------------------------------------------------- a scripted judge: exact counts


class ScriptedJudge(FaultyServer):
    """A judge server whose reply depends on the reply it is shown: the first key of `replies` found in the prompt
    picks it ("Score: 1" otherwise, which is also what the start-up probe gets)."""

    def __init__(self, replies: dict[str, str], **kwargs):
        super().__init__(**kwargs)
        self.replies = replies

    def answer(self, path, body):
        answer = super().answer(path, body)
        if path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
            text = next((reply for key, reply in self.replies.items() if key in prompt), "Score: 1")
            answer["choices"][0]["message"]["content"] = text
        return answer

    @property
    def judge_calls(self) -> int:
        """Requests other than the probe (whose prompt is 'Say: Score: 1')."""
        return sum(b"Say: Score: 1" not in entry["body"] for entry in self.log)


def scripted_episodes() -> list[dict]:
    """`standard_episodes` with a reply of its own per turn, `reply <env>-<rollout>-t<turn>`."""
    episodes = standard_episodes()
    for episode in episodes:
        for turn in episode["turns"]:
            turn["response"] = f"reply {episode['env_idx']}-{episode['rollout_idx']}-t{turn['turn_idx']}"
    return episodes


SCRIPT = {
    # The 8 turns a successful-only filter could keep; the planner's last turn has env reward 1, the others 0.
    "reply 0-0-t0": "Solid program.\nScore: 0.9",  # combined (0 + 0.9) / 2 = 0.45: below 0.5
    "reply 0-0-t1": "7/10",  # (1 + 0.7) / 2 = 0.85: kept
    "reply 0-1-t0": "Looks fine to me.",  # no score: judge_error
    "reply 0-1-t1": '{"score": 0.2}',  # 0.6: kept
    "reply 1-1-t0": "Score: 0.5",  # 0.25: below
    "reply 1-1-t1": "**8/10**",  # 0.4: below
    "reply 1-1-t2": "Score: 12/10",  # out of range: judge_error
    "reply 1-1-t3": "0.3",  # 0.65: kept
}
EXPECTED_REMOVED = {"error_episode": 2, "judge_error": 2, "not_successful": 12, "reward_below_min": 3}
REWARD = ["reward.weights.rule=0.5", "reward.weights.judge=0.5"]


def reward_settings(server: FaultyServer, *overrides: str) -> RewardConfig:
    judge = [f"reward.judge.base_url={server.base_url}", "reward.judge.model=judge", "reward.judge.max_retries=0"]
    return load_config([*judge, *REWARD, *overrides]).reward


def judge_and_filter(reward: RewardConfig, episodes: list[dict], min_reward: float | None = 0.5):
    """What collection does with each finished episode: judge it, then filter it; and the stats."""
    judge = start_judge(reward, "toy")
    record_filter, stats = RecordFilter(min_reward=min_reward), CollectionStats("toy", "run")

    async def run():
        for episode in episodes:
            await judge(episode)
        await judge.close()

    asyncio.run(run())
    records = []
    for episode in episodes:
        kept = record_filter.keep(episode)
        stats.add(episode, kept)
        records += kept
    return records, record_filter.removed, stats.to_dict(1.0, record_filter.removed)


def test_known_scores_give_exact_filter_counts_and_stats():
    episodes = scripted_episodes()
    with ScriptedJudge(SCRIPT) as server:
        records, removed, stats = judge_and_filter(reward_settings(server), episodes)
        assert server.judge_calls == 8  # one per turn that could be kept, none for the others
    assert dict(removed) == EXPECTED_REMOVED
    kept = {record["metadata"]["episode_id"]: record["metadata"] for record in records}
    assert [(meta["turn_idx"], meta["judge_score"], meta["combined_reward"]) for meta in kept.values()] == [
        (1, 0.7, pytest.approx(0.85)),
        (1, 0.2, pytest.approx(0.6)),
        (3, 0.3, pytest.approx(0.65)),
    ]
    assert all(meta["reward"] == 1.0 for meta in kept.values())  # metadata.reward stays the env's reward
    assert stats["judge"] == {
        "calls": 8,
        "judged_turns": 8,
        "scored": 6,
        "errors": {"judge_unparsable": 2},
        "mean_score": round((0.9 + 0.7 + 0.2 + 0.5 + 0.8 + 0.3) / 6, 4),
    }
    unjudged = [turn for episode in episodes for turn in episode["turns"] if "judge" not in turn]
    assert len(unjudged) == 14 and not any("combined_reward" in turn for turn in unjudged)


def test_without_min_reward_a_judge_error_keeps_its_turn_with_a_null_score():
    with ScriptedJudge(SCRIPT) as server:
        records, removed, _ = judge_and_filter(reward_settings(server), scripted_episodes(), min_reward=None)
    assert len(records) == 8 and "judge_error" not in removed
    assert sum(record["metadata"]["judge_score"] is None for record in records) == 2


def test_episode_unit_makes_one_call_and_gives_its_score_to_every_candidate_turn():
    script = {"reply 1-1-t3": "Score: 0.8", "reply 0-0-t1": "Score: 0.4", "reply 0-1-t1": "nothing"}
    with ScriptedJudge(script) as server:
        records, removed, stats = judge_and_filter(reward_settings(server, "reward.unit=episode"), scripted_episodes())
        assert server.judge_calls == 3
    assert stats["judge"]["calls"] == 3 and stats["judge"]["judged_turns"] == 8
    assert stats["judge"]["errors"] == {"judge_unparsable": 1}
    # 0-0: (0 + .4) / 2 and (1 + .4) / 2 -> one kept; 0-1: two judge errors; 1-1: .4, .4, .4, .9 -> one kept
    assert removed["judge_error"] == 2 and removed["reward_below_min"] == 4 and len(records) == 2


def test_a_judge_server_returning_garbage_is_counted_and_never_fatal():
    # After the probe: two 500s, a body that is not JSON, a completion without choices, then fine replies.
    schedule = ["ok", "500", "500", "bad_json", "malformed"]
    with ScriptedJudge(SCRIPT, schedule=schedule) as server:
        records, removed, stats = judge_and_filter(reward_settings(server), scripted_episodes())
    # Episode 0-0's two turns get the 500s, 0-1's the broken bodies, 1-1's the script (one score out of range).
    assert stats["judge"]["errors"] == {"bad_response": 2, "http_5xx": 2, "judge_unparsable": 1}
    assert stats["total_records"] == 22 and len(records) + sum(removed.values()) == 22


def test_a_judge_server_that_is_down_stops_before_anything_is_written(tmp_path, capsys):
    write_run(tmp_path, "big", scripted_episodes())
    down = f"http://127.0.0.1:{free_port()}/v1"
    settings_ = [f"reward.judge.base_url={down}", "reward.judge.model=m", "reward.judge.max_retries=0"]
    with pytest.raises(UserError, match=r"^The judge \(reward.judge\) did not answer: .*ConnectError") as error:
        start_judge(load_config(settings_).reward, "toy")
    assert "\n" not in str(error.value)
    status = main(["filter", "big", "--output", "judged", "--data-dir", str(tmp_path), "--rejudge", *settings_])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: The judge (reward.judge) did not answer")
    judged = RunFiles(tmp_path, "judged")
    assert not any(path.exists() for path in (judged.records, judged.stats, judged.config, judged.rollouts))


# ---------------------------------------------------------------- filter --rejudge


def test_rejudge_writes_its_own_rollouts_and_stats_that_agree_leaving_the_source_alone(tmp_path):
    source = write_run(tmp_path, "big", scripted_episodes(), training={"min_reward": 0.5})
    before = source.rollouts.read_bytes()
    with ScriptedJudge(SCRIPT) as server:
        result = filter_run("big", reward_overrides(server), "judged", data_dir=str(tmp_path), rejudge=True)
    assert source.rollouts.read_bytes() == before
    stats = json.loads(result.files.stats.read_text())
    assert stats["removed"] == EXPECTED_REMOVED and stats["kept_records"] == 3
    episodes = read_jsonl(result.files.rollouts)
    assert [episode["episode_id"] for episode in episodes] == [
        json.loads(line)["episode_id"] for line in before.splitlines()
    ]
    recounted = CollectionStats("toy", "judged")
    for episode in episodes:
        recounted.add(episode, [])
    assert stats["judge"] == recounted.judge.to_dict()
    verdicts = [turn["judge"] for episode in episodes for turn in episode["turns"] if "judge" in turn]
    assert {verdict["text"] for verdict in verdicts} == set(SCRIPT.values())
    config = json.loads(result.files.config.read_text())
    assert config["filtered_from"]["rejudged"] is True and config["config"]["reward"]["weights"] == {
        "rule": 0.5,
        "judge": 0.5,
    }
    # The judged run filters again with other weights from its saved scores, without a judge.
    again = filter_run("judged", ["reward.weights.rule=0"], "by_judge", data_dir=str(tmp_path))
    assert again.stats["removed"]["judge_error"] == 2 and again.stats["kept_records"] == 4  # .9 .7 .5 .8


def test_the_judged_fields_are_the_ones_docs_data_format_describes(tmp_path):
    from test_docs import table

    from pettingllms.records import Judgement, Turn

    write_run(tmp_path, "big", scripted_episodes(), training={"only_success": False})
    with ScriptedJudge(SCRIPT) as server:
        result = filter_run("big", reward_overrides(server), "judged", data_dir=str(tmp_path), rejudge=True)
    turns = [turn for episode in read_jsonl(result.files.rollouts) for turn in episode["turns"]]
    judged = [turn for turn in turns if "judge" in turn]
    assert judged and {key for turn in judged for key in turn} - set(Turn.__annotations__) == table(
        "Judged turn fields"
    )
    assert {key for turn in judged for key in turn["judge"]} == set(Judgement.__annotations__) == table("Judge fields")
    metadata = [record["metadata"] for record in read_jsonl(result.files.records)]
    assert {key for meta in metadata for key in meta} == {*table("Metadata fields"), *table("Judged record fields")}
    stats = json.loads(result.files.stats.read_text())
    assert {f"judge.{key}" for key in stats["judge"]} == table("Judge stats fields")


def reward_overrides(server: FaultyServer) -> list[str]:
    return [f"reward.judge.base_url={server.base_url}", "reward.judge.model=judge", *REWARD]


def test_filter_refuses_judge_settings_without_rejudge_and_rejudge_without_a_judge(tmp_path):
    write_run(tmp_path, "big", scripted_episodes())
    with pytest.raises(ConfigError, match=r"^'reward.judge.model=m' describes the judge.*add --rejudge"):
        filter_run("big", ["reward.judge.model=m"], "x", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^--rejudge needs a judge and the run had none"):
        filter_run("big", [], "x", data_dir=str(tmp_path), rejudge=True)
    with pytest.raises(ConfigError, match=r"^reward.weights.judge=0.5 is invalid; expected 0 without a judge"):
        filter_run("big", ["reward.weights.judge=0.5"], "x", data_dir=str(tmp_path))
    assert not RunFiles(tmp_path, "x").records.exists()


@pytest.mark.slow
def test_rejudging_a_saved_expert_run_counts_what_judging_at_collection_would(tmp_path):
    from pettingllms.collect import collect

    settings_ = ["env.name=plan_path", "policy=expert", "policy.error_rate=0.4", "training.sft_num_episodes=4"]
    collect(load_config([*settings_, f"training.sft_data_dir={tmp_path}", "training.run_name=expert"]))
    # Scores by agent: the planner's replies are worth little ((1 + .1) / 2 < .6), the tool's much.
    script = {"agent (tool) saw": "Score: 0.9", "agent (planner) saw": "Score: 0.1"}
    with ScriptedJudge(script) as server:
        result = filter_run("expert", [*reward_overrides(server), "min_reward=0.6"], "judged", str(tmp_path), True)
        episodes = read_jsonl(RunFiles(tmp_path, "expert").rollouts)
        records, removed, stats = judge_and_filter(reward_settings(server), episodes, min_reward=0.6)
    assert result.stats["removed"] == dict(sorted(removed.items())) and result.stats["judge"] == stats["judge"]
    candidates = [turn for episode in episodes if episode["success"] for turn in episode["turns"]]
    assert result.stats["judge"]["calls"] == len(candidates) > 0 and removed["reward_below_min"] > 0 and records
    assert result.files.records.read_text() == "".join(json.dumps(record) + "\n" for record in records)


# ---------------------------------------------------------------- a real judge server


@pytest.mark.slow
def test_a_real_transformers_serve_judge_records_a_verdict_for_every_candidate(served_model, tmp_path):  # noqa: F811
    base_url, model_dir = served_model
    episodes = [make_episode(number, 0, number % 3 != 0, rounds=2) for number in range(6)]
    source = write_run(tmp_path, "small", episodes)
    overrides = [
        f"reward.judge.base_url={base_url}",
        f"reward.judge.model={model_dir}",
        "reward.judge.max_tokens=8",
        "reward.concurrency=4",
        *REWARD,
    ]
    result = filter_run("small", overrides, "judged", data_dir=str(tmp_path), rejudge=True)
    judged = read_jsonl(result.files.rollouts)
    assert len(judged) == len(read_jsonl(source.rollouts)) == 6  # nothing lost
    candidates = [turn for episode in judged if episode["success"] for turn in episode["turns"]]
    assert len(candidates) == 16 and all("judge" in turn for turn in candidates)
    for turn in candidates:  # the tiny model writes noise: a score in range, or a counted judge_unparsable
        verdict = turn["judge"]
        assert isinstance(verdict["text"], str)
        if verdict["score"] is None:
            assert verdict["error"]["kind"] == "judge_unparsable"
        else:
            assert 0 <= verdict["score"] <= 1 and verdict["error"] is None
    judge_stats = result.stats["judge"]
    assert judge_stats["calls"] == 16 and judge_stats["scored"] + sum(judge_stats["errors"].values()) == 16
    assert result.stats["kept_records"] + sum(result.stats["removed"].values()) == result.stats["total_records"]


def test_judge_all_keeps_the_episodes_in_order_and_bounds_calls():
    with ScriptedJudge(SCRIPT, delay_s=0.02) as server:
        reward = reward_settings(server, "reward.concurrency=2")
        judge = Judge.from_settings(reward, "toy")
        episodes = scripted_episodes()
        order = [episode["episode_id"] for episode in episodes]

        async def run():
            await judge_all(judge, episodes)
            await judge.close()

        asyncio.run(run())
        assert server.max_in_flight <= 2 and server.judge_calls == 8
    assert [episode["episode_id"] for episode in episodes] == order
