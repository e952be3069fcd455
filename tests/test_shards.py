"""Scale-out: N collectors each play one shard of a run; together they are the unsharded run."""

from __future__ import annotations

import json

import pytest

from pettingllms.cli import train_data_paths
from pettingllms.collect import EpisodePlan, collect
from pettingllms.config import load_config
from pettingllms.exceptions import ConfigError
from pettingllms.runfiles import RunFiles, read_ledger
from pettingllms.training.data import read_records

SUDOKU = ["env.name=sudoku", "policy=expert", "policy.error_rate=0.3", "training.sft_num_episodes=10"]


def without_timings(episode: dict) -> dict:
    episode = {key: value for key, value in episode.items() if key != "wall_time_s"}
    episode["turns"] = [
        {key: value for key, value in turn.items() if key not in ("generate_s", "step_s", "details")}
        for turn in episode["turns"]
    ]
    return episode


@pytest.mark.slow
def test_three_shards_together_are_the_unsharded_run(tmp_path):
    whole = collect(load_config([*SUDOKU, f"training.sft_data_dir={tmp_path}", "training.run_name=whole"]))
    shards = [
        collect(load_config([*SUDOKU, f"training.sft_data_dir={tmp_path}", "training.run_name=split",
                             "training.num_shards=3", f"training.shard_index={index}"]))
        for index in range(3)
    ]  # fmt: skip
    assert [result.files.run_name for result in shards] == [f"split.shard-{i}-of-3" for i in range(3)]
    assert [result.stats["total_episodes"] for result in shards] == [4, 3, 3]
    episodes = [episode for result in shards for episode in read_ledger(result.files.rollouts)]
    by_id = lambda rows: sorted((without_timings(row) for row in rows), key=lambda row: row["episode_id"])  # noqa: E731
    assert by_id(episodes) == by_id(read_ledger(whole.files.rollouts))

    config = load_config([f"training.sft_data_dir={tmp_path}", "training.run_name=split"])
    paths = train_data_paths(config)
    assert [path.rsplit("/", 1)[1] for path in paths] == [f"sft_data_split.shard-{i}-of-3.jsonl" for i in range(3)]
    records = [json.dumps(r["messages"]) for r in read_records(paths)]
    expected = [json.dumps(r["messages"]) for r in read_records([str(whole.files.records)])]
    assert sorted(records) == sorted(expected)


@pytest.mark.slow
def test_a_shard_resumes_on_its_own_files(tmp_path):
    args = [*SUDOKU, f"training.sft_data_dir={tmp_path}", "training.run_name=r", "training.num_shards=2"]
    first = collect(load_config([*args, "training.shard_index=1"]))
    again = collect(load_config([*args, "training.shard_index=1"]))
    assert first.stats["total_episodes"] == again.stats["total_episodes"] == 5
    assert len(read_ledger(RunFiles(tmp_path, "r.shard-1-of-2").rollouts)) == 5


@pytest.mark.parametrize(
    "settings, message",
    [
        (["training.num_shards=3"], "training.run_name=None is invalid; expected a name shared by every shard"),
        (["training.num_shards=3", "training.shard_index=3", "training.run_name=x"], "expected 0..2"),
        (["training.num_shards=0"], "training.num_shards=0 is invalid"),
    ],
)
def test_bad_shard_settings_are_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        EpisodePlan(load_config(settings))
