"""Resuming a collection run: killed runs continue exactly where they stopped.

The promise (docs/data-format.md, "Resuming"): whatever point a run is
killed at, running the same command again ends with exactly `training.sft_num_episodes`
episodes, each once, every line valid JSON, and records and stats equal to those of a run
that was never interrupted. A resumed run refuses settings that would mix two kinds of data.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pettingllms.collect import EpisodePlan, collect
from pettingllms.collect import collector as collector_module
from pettingllms.config import load_config
from pettingllms.exceptions import DataError
from pettingllms.records import record_key
from pettingllms.runfiles import RunFiles

TIMING_STATS = ("wall_time_s", "episodes_per_s")
SOKOBAN = ["env.name=sokoban", "policy=expert", "policy.error_rate=0.3"]


# -- helpers shared with test_interrupt.py -------------------------------------------------


def collect_command(directory: Path, run_name: str, episodes: int, *extra: str) -> list[str]:
    """The `python -m pettingllms collect ...` command line of a sokoban expert run."""
    return [
        sys.executable,
        "-m",
        "pettingllms",
        "collect",
        *SOKOBAN,
        f"training.sft_num_episodes={episodes}",
        "training.rollout_concurrency=4",
        f"training.sft_data_dir={directory}",
        f"training.run_name={run_name}",
        *extra,
    ]


def start_collect(command: list[str]) -> subprocess.Popen:
    """Start a collection in its own process group (so the test can kill all of it)."""
    environment = {**os.environ, "PETTINGLLMS_PROGRESS": "0"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, start_new_session=True
    )


def run_collect_command(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PETTINGLLMS_PROGRESS": "0"}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)


def kill_group(process: subprocess.Popen) -> bytes:
    """SIGKILL the collector and anything it started in its group; reap it; return its stderr."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return process.communicate(timeout=30)[1]


def complete_lines(path: Path) -> int:
    """Lines that have their newline (a line being written does not count)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll until `path` has `count` complete lines; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while complete_lines(path) < count:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"{path} did not reach {count} lines in {timeout} s"
        time.sleep(0.01)
    return True


def read_jsonl(path: Path) -> list[dict]:
    """Every line of `path` as JSON; fails the test on a torn or broken line."""
    data = path.read_text()
    assert data == "" or data.endswith("\n"), f"{path} ends with a torn line"
    rows = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            pytest.fail(f"{path}:{number} is not valid JSON ({error})")
    return rows


def without_timing(episode: dict) -> dict:
    """An episode minus what depends on the clock."""
    turns = [
        {key: value for key, value in turn.items() if key not in ("generate_s", "step_s")} for turn in episode["turns"]
    ]
    return {**{key: value for key, value in episode.items() if key != "wall_time_s"}, "turns": turns}


def comparable_stats(stats: dict) -> dict:
    """Stats minus timing, and minus the run's own name (two runs compared have two names)."""
    return {key: value for key, value in stats.items() if key not in (*TIMING_STATS, "run_name")}


def record_order(record: dict) -> tuple:
    return record["metadata"]["episode_id"], record["metadata"]["turn_idx"]


def check_consistent(files: RunFiles, episodes_wanted: int | None = None) -> tuple[list, list, dict]:
    """The three files agree: valid JSON lines, each episode once, records only of logged
    episodes and each turn once, stats counting exactly the ledger. Returns their contents."""
    episodes, records = read_jsonl(files.rollouts), read_jsonl(files.records)
    stats = json.loads(files.stats.read_text())
    ids = [episode["episode_id"] for episode in episodes]
    assert len(ids) == len(set(ids)), "an episode id appears twice in the rollouts file"
    if episodes_wanted is not None:
        assert len(episodes) == episodes_wanted
    turn_keys = [record_order(record) for record in records]
    assert len(turn_keys) == len(set(turn_keys)), "a (episode_id, turn_idx) appears twice in the records"
    assert {episode_id for episode_id, _ in turn_keys} <= set(ids), "records of an episode not in the ledger"
    successful = [episode for episode in episodes if episode["success"]]
    assert sorted(turn_keys) == sorted((e["episode_id"], t["turn_idx"]) for e in successful for t in e["turns"])
    assert stats["total_episodes"] == len(episodes)
    assert stats["successful_episodes"] == len(successful)
    assert stats["kept_records"] == len(records)
    assert stats["total_records"] == sum(len(episode["turns"]) for episode in episodes)
    return episodes, records, stats


def planned_ids(episodes: int) -> set[str]:
    return {spec.episode_id for spec in EpisodePlan(load_config([*SOKOBAN, f"training.sft_num_episodes={episodes}"]))}


def assert_same_collection(files: RunFiles, reference: RunFiles, episodes_wanted: int) -> None:
    """`files` hold exactly what the uninterrupted `reference` run holds (timing aside)."""
    episodes, records, stats = check_consistent(files, episodes_wanted)
    ref_episodes, ref_records, ref_stats = check_consistent(reference, episodes_wanted)
    by_id = lambda rows: sorted((without_timing(row) for row in rows), key=lambda e: e["episode_id"])  # noqa: E731
    assert by_id(episodes) == by_id(ref_episodes)
    assert sorted(records, key=record_order) == sorted(ref_records, key=record_order)
    assert comparable_stats(stats) == comparable_stats(ref_stats)


# -- (a) SIGKILL at random points, three times, then finish ---------------------------------

KILL_EPISODES = 40


@pytest.mark.slow
def test_killed_three_times_then_resumed_equals_an_uninterrupted_run(tmp_path):
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    files, reference = RunFiles(killed_dir, "r"), RunFiles(reference_dir, "ref")
    command = collect_command(killed_dir, "r", KILL_EPISODES)
    # The reference runs alongside (it only competes for CPU), so the test costs one run less.
    reference_process = start_collect(collect_command(reference_dir, "ref", KILL_EPISODES))
    chooser = random.Random(20240611)
    kills = []
    try:
        for _ in range(3):
            done = complete_lines(files.rollouts)
            process = start_collect(command)
            try:
                # Kill after a few more episodes, a random moment later (mid-episode, maybe mid-write).
                reached = wait_for_lines(files.rollouts, done + chooser.randint(2, 8), process)
                time.sleep(chooser.uniform(0.0, 0.4))
            finally:
                stderr = kill_group(process)
            assert reached and process.returncode == -signal.SIGKILL, f"the run ended by itself: {stderr[-2000:]!r}"
            if files.stats.exists():  # replaced atomically: a kill never leaves half a stats file
                json.loads(files.stats.read_text())
            kills.append(complete_lines(files.rollouts))
        assert kills[-1] < KILL_EPISODES, "the kills must leave episodes for the last resume"
        finished = run_collect_command(command)
        assert finished.returncode == 0, finished.stderr[-3000:]
        assert f"Resuming run 'r': {kills[-1]} episodes already collected" in finished.stderr
        _, reference_err = reference_process.communicate(timeout=180)
        assert reference_process.returncode == 0, reference_err[-3000:]
    finally:
        if reference_process.poll() is None:
            kill_group(reference_process)
    assert_same_collection(files, reference, KILL_EPISODES)
    assert {episode["episode_id"] for episode in read_jsonl(files.rollouts)} == planned_ids(KILL_EPISODES)
    assert files.config.exists(), "the run's config must be saved beside its data"


# -- a finished small run, for the tests below -----------------------------------------------


def collect_in_process(directory: Path, run_name: str, episodes: int, *extra: str):
    config = load_config(
        [
            *SOKOBAN,
            f"training.sft_num_episodes={episodes}",
            "training.rollout_concurrency=2",
            f"training.sft_data_dir={directory}",
            f"training.run_name={run_name}",
            *extra,
        ]
    )
    return collect(config)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> RunFiles:
    """A finished 6-episode run (read-only: tests copy it before changing anything)."""
    directory = tmp_path_factory.mktemp("finished")
    result = collect_in_process(directory, "small", 6)
    assert not result.interrupted
    return result.files


def copy_run(files: RunFiles, directory: Path) -> RunFiles:
    shutil.copytree(files.directory, directory)
    return RunFiles(directory, files.run_name)


# -- (b) a torn last line ----------------------------------------------------------------------


@pytest.mark.slow
def test_torn_last_line_is_dropped_with_a_warning_and_its_episode_runs_again(finished_run, tmp_path, capsys):
    files = copy_run(finished_run, tmp_path / "run")
    lines = files.rollouts.read_bytes().splitlines(keepends=True)
    torn = json.loads(lines[-1])
    # A kill mid-write: the last ledger line lost its second half (and its newline), and the
    # records file got half a line too.
    files.rollouts.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    record_line = files.records.read_bytes().splitlines(keepends=True)[0]
    with open(files.records, "ab") as handle:
        handle.write(record_line[: len(record_line) // 3])
    capsys.readouterr()

    result = collect_in_process(files.directory, "small", 10)

    stderr = capsys.readouterr().err
    assert "warning" in stderr and "torn" in stderr and str(files.rollouts) in stderr
    episodes, records, stats = check_consistent(result.files, 10)
    assert stats == result.stats
    rerun = [episode for episode in episodes if episode["episode_id"] == torn["episode_id"]]
    assert len(rerun) == 1 and without_timing(rerun[0]) == without_timing(torn)
    assert [e["episode_id"] for e in episodes[:5]] == [json.loads(line)["episode_id"] for line in lines[:5]]
    assert {episode["episode_id"] for episode in episodes} == planned_ids(10)


@pytest.mark.slow
def test_damaged_line_before_the_last_is_an_error_not_a_guess(finished_run, tmp_path):
    files = copy_run(finished_run, tmp_path / "run")
    lines = files.rollouts.read_bytes().splitlines(keepends=True)
    files.rollouts.write_bytes(b"".join([lines[0], b"{not json\n", *lines[1:]]))
    before = files.rollouts.read_bytes()
    with pytest.raises(DataError, match=r"rollouts_small\.jsonl:2"):
        collect_in_process(files.directory, "small", 10)
    assert files.rollouts.read_bytes() == before, "a refused resume must leave the files alone"


# -- (c) nothing left to do ---------------------------------------------------------------------


def test_resume_of_a_finished_run_runs_nothing(finished_run, tmp_path, monkeypatch, capsys):
    files = copy_run(finished_run, tmp_path / "run")
    rollouts, records = files.rollouts.read_bytes(), read_jsonl(files.records)
    stats = json.loads(files.stats.read_text())

    async def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run must not start an episode")

    monkeypatch.setattr(collector_module, "run_episode", must_not_run)
    capsys.readouterr()
    result = collect_in_process(files.directory, "small", 6)

    assert "6 episodes already collected" in capsys.readouterr().err
    assert not result.interrupted
    assert files.rollouts.read_bytes() == rollouts
    assert read_jsonl(files.records) == records
    assert comparable_stats(result.stats) == comparable_stats(stats)
    assert result.stats["run_name"] == "small"
    check_consistent(files, 6)


# -- (d) the config guard -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, setting, old, new",
    [
        ("env.name=plan_path", "env", "sokoban", "plan_path"),
        ("env.max_turns=2", "env", "'max_turns': 3", "'max_turns': 2"),
        ("training.seed=5", "training.seed", "0", "5"),
        ("training.num_samples_per_task=2", "training.num_samples_per_task", "1", "2"),
        ("training.only_success=false", "training.only_success", "True", "False"),
        ("training.dedup=true", "training.dedup", "False", "True"),
    ],
)
@pytest.mark.slow
def test_resume_with_other_settings_is_refused_naming_them(finished_run, tmp_path, override, setting, old, new):
    files = copy_run(finished_run, tmp_path / "run")
    before = {path: path.read_bytes() for path in files.directory.rglob("*") if path.is_file()}
    command = collect_command(files.directory, "small", 6, override)

    refused = run_collect_command(command, timeout=60)

    assert refused.returncode == 2, refused.stderr
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, f"one line, no traceback:\n{message}"
    assert message.startswith("error: ") and "Traceback" not in message
    assert f"{setting}:" in message
    difference = message.split(f"{setting}:", 1)[1]
    assert old in difference and new in difference, message
    assert "training.run_name" in message, "the message says how to start a separate run"
    assert {path: path.read_bytes() for path in files.directory.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("content", ["{", "{}"], ids=["torn", "no-identity"])
@pytest.mark.slow
def test_damaged_saved_config_is_a_one_line_error(finished_run, tmp_path, content):
    files = copy_run(finished_run, tmp_path / "run")
    files.config.write_text(content)
    refused = run_collect_command(collect_command(files.directory, "small", 6), timeout=60)
    assert refused.returncode == 2, refused.stderr[-2000:]
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1 and str(files.config) in message


@pytest.mark.slow
def test_resume_with_a_larger_count_or_other_concurrency_is_allowed(finished_run, tmp_path):
    files = copy_run(finished_run, tmp_path / "run")
    result = collect_in_process(files.directory, "small", 8, "training.rollout_concurrency=3")
    check_consistent(result.files, 8)


# -- (e) dedup and caps -------------------------------------------------------------------------

SAMPLED = ["policy.error_rate=0.0", "training.num_samples_per_task=3", "training.rollout_concurrency=1"]


@pytest.mark.slow
def test_dedup_drops_repeated_records_and_counts_them(tmp_path):
    result = collect_in_process(tmp_path, "dedup", 9, *SAMPLED, "training.dedup=true")
    episodes, records, stats = read_jsonl(result.files.rollouts), read_jsonl(result.files.records), result.stats
    assert len(episodes) == 9 and all(episode["success"] for episode in episodes)
    turns = sum(len(episode["turns"]) for episode in episodes)
    # The expert plays the three samples of a task identically: only the first sample is kept.
    assert {r["metadata"]["rollout_idx"] for r in records} == {0}
    keys = [record_key(record) for record in records]
    assert len(keys) == len(set(keys)), "two kept records teach the same thing"
    assert stats["kept_records"] == len(records) == turns // 3
    assert stats["removed"] == {"duplicate": turns - len(records)}


@pytest.mark.slow
def test_dedup_memory_survives_a_resume(tmp_path):
    fresh = collect_in_process(tmp_path / "fresh", "d", 9, *SAMPLED, "training.dedup=true")
    collect_in_process(tmp_path / "resumed", "d", 4, *SAMPLED, "training.dedup=true")
    resumed = collect_in_process(tmp_path / "resumed", "d", 9, *SAMPLED, "training.dedup=true")
    assert read_jsonl(resumed.files.records) == read_jsonl(fresh.files.records)
    assert comparable_stats(resumed.stats) == comparable_stats(fresh.stats)


@pytest.mark.slow
def test_max_records_per_task_caps_and_counts(tmp_path):
    result = collect_in_process(tmp_path, "cap", 9, *SAMPLED, "training.max_records_per_task=3")
    episodes, records, stats = read_jsonl(result.files.rollouts), read_jsonl(result.files.records), result.stats
    turns_per_task: dict[str, int] = {}
    for episode in episodes:
        turns_per_task[episode["task_id"]] = turns_per_task.get(episode["task_id"], 0) + len(episode["turns"])
    kept_per_task: dict[str, int] = {}
    for record in records:
        kept_per_task[record["metadata"]["task_id"]] = kept_per_task.get(record["metadata"]["task_id"], 0) + 1
    assert kept_per_task == {task: min(3, turns) for task, turns in turns_per_task.items()}
    assert stats["kept_records"] == len(records)
    assert stats["removed"] == {"max_records_per_task": sum(turns_per_task.values()) - len(records)}


# -- the token summary of the stats (found broken while comparing stats; fixed since) -------------


def test_stats_count_the_tokens_of_kept_records(finished_run):
    """transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True): len() was 2."""
    from transformers import AutoTokenizer

    stats = json.loads(finished_run.stats.read_text())
    tokenizer = AutoTokenizer.from_pretrained(stats["kept_record_tokens"]["tokenizer"])
    lengths = []
    for record in read_jsonl(finished_run.records):
        text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    assert (stats["kept_record_tokens"]["min"], stats["kept_record_tokens"]["max"]) == (min(lengths), max(lengths))
