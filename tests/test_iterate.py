"""`pettingllms iterate`: rounds of collect -> train -> evaluate on the tiny model, at seconds scale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pettingllms.runfiles import RunFiles, read_ledger

pytestmark = pytest.mark.slow

SMALL = [
    "env.name=sudoku", "policy=expert", "training.sft_num_episodes=3", "training.only_success=false",
    "training.sft_config.max_steps=1", "eval.num_episodes=2", "eval.max_tokens=8", "policy.max_tokens=8",
]  # fmt: skip


def iterate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pettingllms", "iterate", *SMALL, *args],
        capture_output=True, text=True, cwd=cwd, timeout=900,
    )  # fmt: skip


def test_round_two_collects_with_round_ones_model_and_every_round_has_data_model_and_eval(tmp_path):
    result = iterate("rounds=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "sft_iterate"
    summary = json.loads((root / "iterate_summary.json").read_text())
    assert [row["round"] for row in summary["rounds"]] == [1, 2]
    for number in (1, 2):
        folder = root / f"round_{number}"
        assert (folder / "data" / f"sft_data_round_{number}.jsonl").stat().st_size > 0
        assert (folder / "model" / "adapter_config.json").is_file()
        assert json.loads((folder / "eval" / f"eval_round_{number}.json").read_text())["episodes"] == 2
    records = [json.loads(line) for line in (root / "round_2" / "data" / "sft_data_round_2.jsonl").open()]
    assert {r["metadata"]["policy_name"] for r in records} == {"round_1_model"}
    first = [json.loads(line) for line in (root / "round_1" / "data" / "sft_data_round_1.jsonl").open()]
    assert {r["metadata"]["policy_name"] for r in first} == {"expert"}
    played = read_ledger(RunFiles(root / "round_2" / "eval", "round_2").rollouts)
    assert {turn["policy_name"] for episode in played for turn in episode["turns"]} == {"evaluated_model"}
    assert "iteration on sudoku" in result.stdout and "base" in result.stdout


def test_an_interrupted_iteration_resumes_in_the_round_and_stage_where_it_stopped(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "pettingllms", "iterate", *SMALL, "rounds=2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in process.stdout:  # kill it as round 2 starts training: round 1 is done, round 2 half
        if line.startswith("Round 2: training"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=600)
    root = tmp_path / "sft_iterate"
    round_one = (root / "round_1" / "model" / "training_summary.json").stat().st_mtime
    time.sleep(1)
    result = iterate("rounds=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "round_1" / "model" / "training_summary.json").stat().st_mtime == round_one, "round 1 retrained"
    assert "Round 1: collecting" in result.stdout and "Resuming run 'round_1'" in result.stderr
    summary = json.loads((root / "iterate_summary.json").read_text())
    assert [row["round"] for row in summary["rounds"]] == [1, 2]


def test_bad_round_counts_are_one_line(tmp_path):
    result = iterate("rounds=0", cwd=tmp_path)
    assert result.returncode == 2 and "iterate.rounds=0 is invalid; expected an integer > 0" in result.stderr
    assert "Traceback" not in result.stderr
