"""Ctrl-C (SIGINT) and SIGTERM during a collection: a clean stop, consistent files, a resume hint.

Episodes in flight are abandoned, never half-written; everything finished is on disk; the
exit status is 128 + the signal (130 for SIGINT, 143 for SIGTERM), as shells expect; stderr says which
`training.run_name=` resumes; and the same command then finishes the run exactly.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_resume import (
    check_consistent,
    collect_command,
    kill_group,
    read_jsonl,
    run_collect_command,
    start_collect,
    wait_for_lines,
)

from pettingllms.runfiles import RunFiles

pytestmark = pytest.mark.slow

EPISODES = 16
STOP_WITHIN_S = 15.0


def interrupt_after_some_episodes(directory: Path, run_name: str, send) -> tuple[subprocess.Popen, float, str]:
    """Start a run, let a few episodes finish, call `send(process)`; return the process, how long
    it took to exit after the signal, and its stderr."""
    files = RunFiles(directory, run_name)
    process = start_collect(collect_command(directory, run_name, EPISODES))
    try:
        if not wait_for_lines(files.rollouts, 3, process):
            pytest.fail(f"the run ended before the signal: {kill_group(process)[-2000:]!r}")
        sent = time.monotonic()
        send(process)
        try:
            _, stderr = process.communicate(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not stop within {STOP_WITHIN_S} s of the signal")
        return process, time.monotonic() - sent, stderr.decode()
    finally:
        if process.poll() is None:
            kill_group(process)


def check_interrupted_files(files: RunFiles) -> None:
    """After a clean stop: every line whole, records only of logged episodes, stats matching the ledger."""
    episodes, records, stats = check_consistent(files)
    assert 3 <= len(episodes) < EPISODES, "the signal came after 3 episodes and before the end"
    assert stats["run_name"] == files.run_name
    assert not list(files.directory.rglob("*.tmp")), "no temporary file may be left behind"


def resume_and_finish(files: RunFiles, interrupted_at: int) -> None:
    finished = run_collect_command(collect_command(files.directory, files.run_name, EPISODES))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{interrupted_at} episodes already collected" in finished.stderr
    check_consistent(files, EPISODES)


@pytest.mark.parametrize(
    "name, send, status",
    [
        # Ctrl-C in a terminal signals the whole foreground process group.
        pytest.param("sigint", lambda process: os.killpg(process.pid, signal.SIGINT), 130, id="sigint"),
        # A process manager (systemd, docker stop, slurm) sends SIGTERM to the main process only.
        pytest.param("sigterm", lambda process: os.kill(process.pid, signal.SIGTERM), 143, id="sigterm"),
    ],
)
def test_signal_stops_cleanly_and_the_same_command_resumes(tmp_path, name, send, status):
    files = RunFiles(tmp_path, name)
    process, took, stderr = interrupt_after_some_episodes(tmp_path, name, send)

    assert process.returncode == status, f"exit status {process.returncode}; stderr:\n{stderr[-3000:]}"
    assert took < STOP_WITHIN_S
    assert f"training.run_name={name}" in stderr, "the message must say how to resume"
    assert "Traceback" not in stderr
    check_interrupted_files(files)
    resume_and_finish(files, len(read_jsonl(files.rollouts)))


def test_ctrl_c_pressed_again_while_stopping_still_leaves_consistent_files(tmp_path):
    """An impatient user keeps pressing Ctrl-C: the stop may be quicker, never messier."""
    files = RunFiles(tmp_path, "twice")

    def press_until_stopped(process):
        deadline = time.monotonic() + 5
        while process.poll() is None and time.monotonic() < deadline:
            os.killpg(process.pid, signal.SIGINT)
            time.sleep(0.05)

    process, took, stderr = interrupt_after_some_episodes(tmp_path, "twice", press_until_stopped)

    assert process.returncode == 130, f"exit status {process.returncode}; stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr
    assert "training.run_name=twice" in stderr, "the message must say how to resume"
    check_interrupted_files(files)
    resume_and_finish(files, len(read_jsonl(files.rollouts)))
