"""What a user sees: quick-test captured to a log file is clean, --quiet prints only the summaries,
-v brings the libraries' own output back, and training keeps its whole loss curve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def quick_test(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # Pipes, not a terminal: what a user gets with `pettingllms quick-test > log 2>&1`.
    # A user's shell: none of the switches `quiet_libraries` sets in this test process (other tests call it).
    ours = {"PETTINGLLMS_PROGRESS", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"}
    ours |= {"HF_DATASETS_DISABLE_PROGRESS_BARS", "TOKENIZERS_PARALLELISM"}
    environment = {key: value for key, value in os.environ.items() if key not in ours}
    return subprocess.run(
        [sys.executable, "-m", "pettingllms", *args], capture_output=True, text=True, cwd=cwd, timeout=900,
        env=environment,
    )  # fmt: skip


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("log")
    return quick_test(folder, "quick-test"), folder


def test_a_logged_quick_test_has_no_warning_raw_dict_or_bar_and_ends_with_the_summaries(logged):
    result, _ = logged
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\r" not in output and "\x1b[" not in output, "progress must be plain lines in a log file"
    assert not re.search(r"Warning|warnings\.warn|Loading weights|Tokenizing|\{'loss'|\[RANK", output), output[-3000:]
    lines = result.stdout.rstrip().splitlines()
    assert "quick-test summary" in lines[-9:] and "training" in result.stdout
    assert lines[-1].startswith("model ")


def test_training_keeps_a_loss_for_every_step(logged):
    _, folder = logged
    summary = json.loads((folder / "sft_model_quick_test" / "training_summary.json").read_text())
    steps = [entry["step"] for entry in summary["loss_curve"] if "loss" in entry]
    assert steps == list(range(1, summary["global_steps"] + 1))
    assert summary["first_train_loss"] == summary["loss_curve"][0]["loss"]


def test_quiet_prints_only_the_summaries_and_verbose_brings_the_libraries_back(tmp_path):
    quiet = quick_test(tmp_path, "-q", "quick-test", "training.run_name=quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.strip() == "" and "Dropped" not in quiet.stdout and "episodes:" not in quiet.stdout
    assert "quick-test summary" in quiet.stdout
    verbose = quick_test(tmp_path, "quick-test", "--verbose", "training.run_name=verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "Loading weights" in verbose.stdout + verbose.stderr
