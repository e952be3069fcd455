"""A judge during collection: verdicts saved in the ledger, the filter on the combined reward, a resume that
judges only the new episodes, `filter` reproducing the records, and a judge that dies in the middle."""

from __future__ import annotations

import json

import pytest
from servers import free_port
from test_judge import ScriptedJudge

from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.curation import filter_run
from pettingllms.exceptions import UserError
from pettingllms.runfiles import RunFiles

# Scores by agent: the tool's replies are worth much, the planner's little ((1 + 0.1) / 2 < 0.6).
SCRIPT = {"agent (tool) saw": "Score: 0.9", "agent (planner) saw": "Score: 0.1"}
SETTINGS = [
    "env.name=plan_path",
    "policy=expert",
    "policy.error_rate=0.4",
    "training.run_name=judged",
    "training.min_reward=0.6",
    "reward.weights.rule=0.5",
    "reward.weights.judge=0.5",
    "reward.judge.model=judge",
    "reward.judge.max_retries=0",
]


def collect_judged(folder, server_url: str, episodes: int):
    settings = [*SETTINGS, f"training.sft_data_dir={folder}", f"training.sft_num_episodes={episodes}"]
    return collect(load_config([*settings, f"reward.judge.base_url={server_url}"]))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def candidates(episodes: list[dict]) -> list[dict]:
    """The turns a judge scores here: every turn of a successful episode (both agents are trainable)."""
    return [
        turn for episode in episodes if episode["success"] and not episode.get("error") for turn in episode["turns"]
    ]


@pytest.mark.slow
def test_collection_judges_filters_on_the_combined_reward_and_resumes_without_judging_again(tmp_path):
    with ScriptedJudge(SCRIPT) as server:
        collect_judged(tmp_path, server.base_url, 6)
        files = RunFiles(tmp_path, "judged")
        first = read_jsonl(files.rollouts)
        assert server.judge_calls == len(candidates(first)) > 0
        for turn in candidates(first):
            expected = 0.9 if turn["agent"] == "tool" else 0.1
            assert turn["judge"]["score"] == expected and turn["judge"]["error"] is None
            assert turn["combined_reward"] == pytest.approx((turn["reward"] + expected) / 2)

        calls_before = server.judge_calls
        collect_judged(tmp_path, server.base_url, 10)  # resume: 4 more episodes
        episodes = read_jsonl(files.rollouts)
        assert len(episodes) == 10
        assert server.judge_calls - calls_before == len(candidates(episodes[6:]))

    records = read_jsonl(files.records)
    assert records and {record["metadata"]["agent_name"] for record in records} == {"tool"}
    assert all(record["metadata"]["combined_reward"] >= 0.6 for record in records)
    stats = json.loads(files.stats.read_text())
    below = [turn for turn in candidates(episodes) if turn["combined_reward"] < 0.6]
    assert stats["removed"]["reward_below_min"] == len(below) > 0
    assert stats["judge"]["calls"] == len(candidates(episodes)) and stats["kept_records"] == len(records)

    # Filtering the saved rollouts again with the run's own settings makes no judge call and the same records.
    again = filter_run("judged", [], "again", data_dir=str(tmp_path))
    assert again.files.records.read_bytes() == files.records.read_bytes()


@pytest.mark.slow
def test_a_judge_that_fails_after_the_start_costs_scores_not_episodes(tmp_path):
    # The start-up check passes ("ok"), then every judge call gets a 500: counted errors, every episode kept.
    with ScriptedJudge(SCRIPT, schedule=["ok"], failure_rate=1.0, faults=("500",)) as server:
        collect_judged(tmp_path, server.base_url, 6)
    files = RunFiles(tmp_path, "judged")
    episodes = read_jsonl(files.rollouts)
    assert len(episodes) == 6 and candidates(episodes)
    assert all(turn["judge"]["score"] is None and turn["judge"]["error"] for turn in candidates(episodes))
    stats = json.loads(files.stats.read_text())
    assert stats["removed"]["judge_error"] == len(candidates(episodes))
    assert stats["kept_records"] == 0 and stats["total_episodes"] == 6

    # Down at the start: one line, and the run's files stay as they were.
    before = files.rollouts.read_bytes()
    with pytest.raises(UserError, match=r"^The judge \(reward.judge\) did not answer"):
        collect_judged(tmp_path, f"http://127.0.0.1:{free_port()}/v1", 8)
    assert files.rollouts.read_bytes() == before


@pytest.mark.slow
def test_the_collect_summary_says_what_the_judge_did(tmp_path, capsys):
    from pettingllms.cli import main

    # A judge that answers the start-up check and then never gives a score: the summary must show it.
    with ScriptedJudge({"agent (": "I cannot grade this."}) as server:
        settings = [*SETTINGS, "env.name=math_single_agent", f"training.sft_data_dir={tmp_path}"]
        status = main(["collect", *settings, "training.sft_num_episodes=3", f"reward.judge.base_url={server.base_url}"])
    assert status == 0
    stats = json.loads(RunFiles(tmp_path, "judged").stats.read_text())
    calls = stats["judge"]["calls"]
    line = f"Judge: {calls} calls, 0 scores (mean n/a), errors: {calls} judge_unparsable."
    assert calls > 0 and line in capsys.readouterr().out.splitlines()
