"""Faults a real user hits while collecting: files already there, a full disk, damaged ledgers,
odd run names, huge requests, a server that is down. Each must cost one clear line and lose nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from disks import mounted_tmpfs
from servers import FaultyServer, free_port

from pettingllms.collect import EpisodePlan, collect
from pettingllms.config import load_config
from pettingllms.exceptions import ConfigError, DataError, ResumeMismatchError
from pettingllms.runfiles import RunFiles, read_ledger
from pettingllms.stats import stats_for_file

SOKOBAN = ["env.name=sokoban", "policy=expert", "env.max_turns=2"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pettingllms", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed command (and proof that there is no traceback)."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def collected_once(tmp_path_factory) -> RunFiles:
    folder = tmp_path_factory.mktemp("collected")
    config = load_config([*SOKOBAN, f"training.sft_data_dir={folder}", "training.run_name=ref"])
    config.training.sft_num_episodes = 6
    return collect(config).files


@pytest.fixture
def small_run(collected_once, tmp_path) -> RunFiles:
    """A fresh copy of a finished 6-episode run, for a test to damage as it likes."""
    shutil.copytree(collected_once.directory, tmp_path / "made")
    return RunFiles(tmp_path / "made", "ref")


# -- files that are already there -----------------------------------------------------------------


@pytest.mark.slow
def test_a_records_file_without_its_rollouts_is_never_rewritten(small_run, tmp_path):
    """The README says data files move between machines: a records file copied alone must survive."""
    folder = tmp_path / "moved"
    folder.mkdir()
    shutil.copy(small_run.records, folder / small_run.records.name)
    before = (folder / small_run.records.name).read_bytes()
    result = run_cli(
        "collect", *SOKOBAN, "training.sft_num_episodes=2", "training.run_name=ref", f"training.sft_data_dir={folder}",
        cwd=tmp_path,
    )  # fmt: skip
    line = one_error_line(result)
    assert "does not account for" in line and "sft_data_ref.jsonl" in line and "training.run_name" in line
    assert (folder / small_run.records.name).read_bytes() == before


@pytest.mark.slow
def test_a_crash_between_records_and_ledger_is_still_repaired(small_run, tmp_path):
    """Our own writes leave at most one episode's records ahead of the ledger: that one is dropped on resume."""
    ledger = small_run.rollouts.read_bytes().splitlines(keepends=True)
    small_run.rollouts.write_bytes(b"".join(ledger[:-1]))  # the last episode's records stay, its ledger line goes
    config = load_config([*SOKOBAN, f"training.sft_data_dir={small_run.directory}", "training.run_name=ref"])
    config.training.sft_num_episodes = 6
    result = collect(config)
    assert result.stats["total_episodes"] == 6
    records = [json.loads(line) for line in small_run.records.read_text().splitlines()]
    assert len(records) == result.stats["kept_records"]
    assert len({(r["metadata"]["episode_id"], r["metadata"]["turn_idx"]) for r in records}) == len(records)


# -- damaged ledgers --------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["env_name", "turns", "success", "env_idx"])
def test_a_ledger_line_missing_fields_is_a_data_error_naming_file_and_line(small_run, missing):
    lines = small_run.rollouts.read_text().splitlines()
    episode = json.loads(lines[2])
    del episode[missing]
    lines[2] = json.dumps(episode)
    small_run.rollouts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"rollouts_ref\.jsonl:3: the episode's '{missing}' is missing"):
        stats_for_file(small_run.rollouts)
    with pytest.raises(DataError, match=r"rollouts_ref\.jsonl:3"):
        read_ledger(small_run.rollouts)


def test_a_turn_missing_its_trainable_flag_is_a_data_error(small_run):
    lines = small_run.rollouts.read_text().splitlines()
    episode = json.loads(lines[0])
    del episode["turns"][0]["trainable"]
    lines[0] = json.dumps(episode)
    small_run.rollouts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"rollouts_ref\.jsonl:1: the turn 0's 'trainable' is missing"):
        read_ledger(small_run.rollouts)


# -- names and sizes --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_data_folder_with_glob_characters_trains_on_its_own_run_only(tmp_path):
    """A run name is never a pattern: `r[1]` is refused, and a folder named `d[1]` is taken literally."""
    for name, folder in (("r1", "d1"), ("r1", "d[1]")):
        config = load_config([*SOKOBAN, f"training.sft_data_dir={tmp_path / folder}", f"training.run_name={name}"])
        config.training.sft_num_episodes = 2 if folder == "d1" else 3
        collect(config)
    from pettingllms.cli import train_data_paths

    config = load_config([f"training.sft_data_dir={tmp_path / 'd[1]'}", "training.run_name=r1"])
    from pettingllms.training.data import read_records

    records = read_records(train_data_paths(config))
    assert {r["source"].rsplit(":", 1)[0] for r in records} == {str(tmp_path / "d[1]" / "sft_data_r1.jsonl")}
    with pytest.raises(ConfigError, match="glob characters"):
        load_config(["training.run_name=r[1]"])


def test_a_huge_episode_count_is_refused_and_a_large_plan_is_lazy():
    with pytest.raises(ConfigError, match=r"sft_num_episodes=99999999999999999999999 is invalid|Integer"):
        load_config(["training.sft_num_episodes=99999999999999999999999"])
    with pytest.raises(ConfigError, match="reaches the test split's seeds"):
        EpisodePlan(load_config(["training.sft_num_episodes=1000000", "training.seed=5"]))
    tracemalloc.start()
    plan = EpisodePlan(load_config(["training.sft_num_episodes=999000"]))
    first = next(iter(plan))
    last = plan.spec(len(plan) - 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000, "the plan must not be built in memory"
    assert (first.seed, last.seed) == (0, 998_999)


def test_files_are_not_executable(tmp_path):
    config = load_config([*SOKOBAN, f"training.sft_data_dir={tmp_path}"])  # default run name
    config.training.sft_num_episodes = 2
    files = collect(config).files
    for path in (files.records, files.rollouts, files.stats, files.config):
        assert stat.S_IMODE(path.stat().st_mode) & 0o111 == 0, path


@pytest.mark.slow
def test_the_zero_success_hint_speaks_of_models_only_when_a_model_played(tmp_path):
    result = run_cli(
        "collect", *SOKOBAN, "policy.error_rate=1", "training.sft_num_episodes=2", "training.sft_data_dir=data",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No episode succeeded" in result.stdout and "untrained model" not in result.stdout


# -- a full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KiB tmpfs: a collection fills it within a few dozen episodes."""
    with mounted_tmpfs(tmp_path / "disk", "size=160k") as mount:
        yield mount


@pytest.mark.slow
def test_a_full_disk_is_one_line_leaves_no_temp_file_and_resumes(small_disk, tmp_path):
    args = [*SOKOBAN, "training.sft_num_episodes=150", "training.run_name=full", f"training.sft_data_dir={small_disk}"]
    result = run_cli("collect", *args, cwd=tmp_path)
    line = one_error_line(result)
    assert "No space left on device" in line and str(small_disk) in line and "resume" in line
    assert not list(small_disk.rglob("*.tmp")), list(small_disk.rglob("*"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run_cli("collect", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    files = RunFiles(small_disk, "full")
    episodes = read_ledger(files.rollouts)
    stats = json.loads(files.stats.read_text())
    assert len(episodes) == stats["total_episodes"] == 150
    records = [json.loads(line) for line in files.records.read_text().splitlines()]
    assert len(records) == stats["kept_records"]
    assert len({(r["metadata"]["episode_id"], r["metadata"]["turn_idx"]) for r in records}) == len(records)


# -- episodes lost to a server that was down ------------------------------------------------------------


def math_over_openai(data_dir: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "env.name=math_single_agent", "policy=openai", f"policy.base_url={base_url}", "policy.model=faulty-model",
        "policy.max_retries=0", "policy.connect_timeout_s=1", "training.sft_num_episodes=4", "training.run_name=srv",
        f"training.sft_data_dir={data_dir}", "training.only_success=false", *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("retry", [True, False])
def test_a_resume_plays_again_the_episodes_a_down_server_cost(tmp_path, retry):
    down = f"http://127.0.0.1:{free_port()}/v1"
    flag = f"training.retry_infra_errors={str(retry).lower()}"
    first = collect(load_config(math_over_openai(tmp_path, down, flag)))
    assert first.stats["error_episodes"] == 4 and set(first.stats["errors"]) <= {"connection", "connect_error"}
    with FaultyServer(reply="\\boxed{7}") as server:
        second = collect(load_config(math_over_openai(tmp_path, server.base_url, flag)))
    if retry:
        assert second.retried == 4 and len(server.log) == 4
        assert second.stats["total_episodes"] == 4 and second.stats["error_episodes"] == 0
        assert second.stats["kept_records"] == 4
    else:
        assert second.retried == 0 and server.log == []
        assert second.stats["error_episodes"] == 4
    episodes = read_ledger(RunFiles(tmp_path, "srv").rollouts)
    assert len(episodes) == 4 and all((episode["error"] is None) == retry for episode in episodes)
    assert os.path.getsize(RunFiles(tmp_path, "srv").records) > 0 or not retry


def test_a_power_cut_leaving_several_episodes_of_records_ahead_is_repaired(small_run):
    """Records are fsynced before the ledger, every few episodes: a power cut can leave a tail of them ahead."""
    ledger = small_run.rollouts.read_bytes().splitlines(keepends=True)
    small_run.rollouts.write_bytes(b"".join(ledger[:3]))
    config = load_config([*SOKOBAN, f"training.sft_data_dir={small_run.directory}", "training.run_name=ref"])
    config.training.sft_num_episodes = 6
    assert collect(config).stats["total_episodes"] == 6


def test_records_unknown_to_the_ledger_before_known_ones_are_refused(small_run):
    """Our writes only ever put unknown records at the end; unknown ones first mean another file."""
    lines = small_run.records.read_text().splitlines()
    stranger = json.loads(lines[0])
    stranger["metadata"]["episode_id"] = "someone-else-0"
    small_run.records.write_text("\n".join([json.dumps(stranger), *lines]) + "\n")
    config = load_config([*SOKOBAN, f"training.sft_data_dir={small_run.directory}", "training.run_name=ref"])
    config.training.sft_num_episodes = 6
    with pytest.raises(DataError, match="does not account for"):
        collect(config)


def test_a_refused_start_leaves_no_empty_run_behind(tmp_path):
    (tmp_path / "sft_data_solo.jsonl").write_text('{"messages": [], "metadata": {"episode_id": "x"}}\n')
    config = load_config([*SOKOBAN, f"training.sft_data_dir={tmp_path}", "training.run_name=solo"])
    with pytest.raises(DataError):
        collect(config)
    assert not RunFiles(tmp_path, "solo").rollouts.exists()


def test_resume_compares_sampling_but_not_default_spellings(small_run):
    base = [*SOKOBAN, f"training.sft_data_dir={small_run.directory}", "training.run_name=ref"]
    same = load_config([*base, "agents.tool.trainable=true"])  # the default, spelled out
    same.training.sft_num_episodes = 6
    assert collect(same).stats["total_episodes"] == 6
    hotter = load_config([*base, "policy.temperature=0.5"])
    hotter.training.sft_num_episodes = 6
    with pytest.raises(ResumeMismatchError, match="temperature"):
        collect(hotter)


def test_a_run_saved_before_new_settings_existed_still_resumes(small_run):
    saved = json.loads(small_run.config.read_text())
    for key in ("imports", "benchmark"):
        del saved["identity"]["env"][key]
    for policy in saved["identity"]["policies"].values():
        for key in ("temperature", "top_p", "max_tokens", "stop", "enable_thinking"):
            del policy[key]
    small_run.config.write_text(json.dumps(saved))
    config = load_config([*SOKOBAN, f"training.sft_data_dir={small_run.directory}", "training.run_name=ref"])
    config.training.sft_num_episodes = 7
    assert collect(config).stats["total_episodes"] == 7


def test_collecting_into_a_filtered_run_is_refused(small_run):
    from pettingllms.curation import filter_run

    filter_run("ref", ["dedup=true"], "deduped", data_dir=str(small_run.directory))
    before = RunFiles(small_run.directory, "deduped").records.read_bytes()
    config = load_config([*SOKOBAN, f"training.sft_data_dir={small_run.directory}", "training.run_name=deduped"])
    with pytest.raises(DataError, match="written by `pettingllms filter`"):
        collect(config)
    assert RunFiles(small_run.directory, "deduped").records.read_bytes() == before
