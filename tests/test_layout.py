"""A data folder the Hugging Face tools load as it is: records at the top, the rest under runs/, a card.

`load_dataset("json", data_files="<dir>/*.jsonl")` and `load_dataset(<dir>)` (what `trl sft
--dataset_name <dir>` calls) must read exactly the kept records; runs written before runs/
existed (the legacy layout) must still resume and be read where they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from disks import fill, mounted_tmpfs
from synthetic_runs import standard_episodes, write_run

from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.curation import filter_run
from pettingllms.dataset_card import CARD_MARKER, config_names, write_card
from pettingllms.exceptions import DataError
from pettingllms.runfiles import RUNS_FOLDER, RunFiles, find_runs, read_ledger
from pettingllms.stats import print_stats, resolve_run, stats_for_file

SOKOBAN = ["env.name=sokoban", "policy=expert", "policy.error_rate=0.5", "training.rollout_concurrency=2"]


def collect_run(directory, run_name: str, episodes: int = 6, *extra: str):
    settings = [*SOKOBAN, f"training.sft_data_dir={directory}", f"training.run_name={run_name}"]
    return collect(load_config([*settings, f"training.sft_num_episodes={episodes}", *extra]))


@pytest.fixture
def load_dataset(tmp_path, monkeypatch):
    """`datasets.load_dataset` offline, with its cache in this test's folder."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import: the variable may come too late
    return lambda *args, **kwargs: datasets.load_dataset(*args, cache_dir=str(tmp_path / "hf_cache"), **kwargs)


def card_header(directory) -> dict:
    import yaml

    text = (directory / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n") and CARD_MARKER in text
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.slow
def test_the_folder_loads_exactly_the_kept_records(tmp_path, load_dataset):
    result = collect_run(tmp_path / "data", "first")
    directory = result.files.directory
    assert result.files.rollouts.parent == directory / RUNS_FOLDER == result.files.stats.parent
    assert result.card == directory / "README.md"
    kept = result.stats["kept_records"]
    assert 0 < kept < result.stats["total_records"]

    by_glob = load_dataset("json", data_files=f"{directory}/*.jsonl")["train"]
    assert by_glob.num_rows == kept and set(by_glob.column_names) == {"messages", "metadata"}
    by_folder = load_dataset(str(directory))["train"]  # what `trl sft --dataset_name DIR` calls
    assert by_folder.num_rows == kept and by_folder[0]["messages"] == by_glob[0]["messages"]
    assert load_dataset(str(directory), "first")["train"].num_rows == kept


@pytest.mark.slow
def test_every_run_of_the_folder_is_in_the_card_odd_names_and_empty_runs_too(tmp_path, load_dataset):
    directory = tmp_path / "data"
    first = collect_run(directory, "first")
    odd = collect_run(directory, "zweiter Lauf: é ü", 4)
    empty = collect_run(directory, "empty", 2, "policy.error_rate=1.0")
    assert empty.stats["kept_records"] == 0 and empty.files.records.read_bytes() == b""

    names = config_names(["first", "zweiter Lauf: é ü", "empty"])
    configs = {config["config_name"]: config["data_files"] for config in card_header(directory)["configs"]}
    assert configs == {
        "default": "sft_data_*.jsonl",
        "first": "sft_data_first.jsonl",
        names["zweiter Lauf: é ü"]: "sft_data_zweiter Lauf: é ü.jsonl",
    }  # the empty run has no config: `load_dataset` refuses an empty file
    text = (directory / "README.md").read_text(encoding="utf-8")
    for run in ("first", "zweiter Lauf: é ü", "empty"):
        assert f"## Run `{run}`" in text
    assert "its records file is empty" in text and "sokoban" in text and "not_successful" in text

    both = first.stats["kept_records"] + odd.stats["kept_records"]
    assert load_dataset(str(directory))["train"].num_rows == both  # an empty file among others adds nothing
    assert load_dataset("json", data_files=f"{directory}/*.jsonl")["train"].num_rows == both
    assert load_dataset(str(directory), names["zweiter Lauf: é ü"])["train"].num_rows == odd.stats["kept_records"]
    with pytest.raises(StopIteration):  # datasets 5.2, as the card and docs/data-format.md say
        load_dataset("json", data_files=str(empty.files.records))


@pytest.mark.slow
def test_a_users_own_readme_is_never_replaced(tmp_path, capsys):
    directory = tmp_path / "data"
    directory.mkdir()
    own = "# My data\n\nWritten by hand. ünïcode\n".encode()
    (directory / "README.md").write_bytes(own)
    result = collect_run(directory, "mine", 2)
    assert result.card is None
    assert (directory / "README.md").read_bytes() == own
    warning = [line for line in capsys.readouterr().err.splitlines() if "dataset card" in line]
    assert len(warning) == 1 and "not written" in warning[0] and "not one pettingllms wrote" in warning[0]


def make_legacy(files: RunFiles) -> RunFiles:
    """Move a run's files back to the top of its folder, as runs were written before runs/ existed."""
    for path in (files.rollouts, files.stats, files.config):
        shutil.move(path, files.directory / path.name)
    legacy = RunFiles(files.directory, files.run_name)
    assert legacy.is_legacy and legacy.rollouts == files.directory / files.rollouts.name
    return legacy


@pytest.mark.slow
def test_a_legacy_run_resumes_where_it_is_and_is_read_there(tmp_path, capsys):
    directory = tmp_path / "data"
    legacy = make_legacy(collect_run(directory, "old", 4).files)
    resumed = collect_run(directory, "old", 6)

    assert resumed.files == legacy and resumed.files.is_legacy
    assert not (directory / RUNS_FOLDER / legacy.rollouts.name).exists()
    episodes = read_ledger(legacy.rollouts)
    ids = [json.loads(line)["episode_id"] for line in legacy.rollouts.read_text().splitlines()]
    assert len(episodes) == resumed.stats["total_episodes"] == 6 and len(set(ids)) == len(ids) == 6
    records = legacy.records.read_text().splitlines()
    assert len(records) == resumed.stats["kept_records"] == json.loads(legacy.stats.read_text())["kept_records"]

    assert stats_for_file(legacy.rollouts)["kept_records"] == len(records)
    print_stats(["old"], data_dir=str(directory))
    assert "Per agent" in capsys.readouterr().out
    filtered = filter_run("old", [], "again", data_dir=str(directory))
    assert not filtered.files.is_legacy and filtered.files.records.read_bytes() == legacy.records.read_bytes()
    assert [files.run_name for files in find_runs(directory)] == ["again", "old"]


def test_the_name_of_a_sharded_run_counts_its_shards_as_one_and_names_the_missing_one(tmp_path, capsys):
    episodes = standard_episodes()
    write_run(tmp_path, "split.shard-0-of-3", episodes[:4])
    write_run(tmp_path, "split.shard-2-of-3", episodes[4:])
    print_stats(["split"], data_dir=str(tmp_path))
    captured = capsys.readouterr()
    assert "2 shards counted as one run (split.shard-0-of-3, split.shard-2-of-3)" in captured.out
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 1 and "no shard split.shard-1-of-3" in warnings[0]

    print_stats(["split"], data_dir=str(tmp_path), as_json=True)
    merged = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert merged["total_episodes"] == 6 and merged["successful_episodes"] == 3
    assert merged["merged_shards"] == ["split.shard-0-of-3", "split.shard-2-of-3"]
    whole = write_run(tmp_path / "whole", "whole", episodes)
    assert merged["kept_records"] == stats_for_file(whole.rollouts)["kept_records"]
    with pytest.raises(DataError, match=r"^Run 'split' was collected in shards .*takes one shard's name"):
        resolve_run("split", tmp_path)  # what report and filter read: one run's files


@pytest.fixture
def full_disk(tmp_path):
    """A 200 KiB tmpfs (filled up by the tests that use it with `fill`)."""
    with mounted_tmpfs(tmp_path / "disk", "size=200k") as mount:
        yield mount


def test_a_full_disk_while_writing_the_card_is_a_warning_and_keeps_the_old_card(full_disk, capsys):
    files = write_run(full_disk, "toy", standard_episodes()[:2])
    files.records.write_text('{"messages": []}\n')
    assert write_card(full_disk) == full_disk / "README.md"
    write_run(full_disk, "more", standard_episodes()[:1])  # a new run: the card must change
    before = {path: path.read_bytes() for path in full_disk.rglob("*") if path.is_file()}
    fill(full_disk)

    assert write_card(full_disk) is None
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: dataset card") and "No space left on device" in warning
    assert "\n" not in warning
    after = {path: path.read_bytes() for path in full_disk.rglob("*") if path.is_file() and path.name != "filler"}
    assert after == before, "the old card and every run file stay whole; no temporary file is left"


@pytest.mark.slow
def test_trl_sft_trains_on_the_folder_as_it_is(tmp_path):
    """The real `trl sft` command line, pointed at a data folder with a run inside: it reads the card's
    default config (records only, not `runs/`) and trains the tiny model for two steps."""
    import sys
    from pathlib import Path

    from pettingllms.models import resolve_model

    result = collect_run(tmp_path / "data", "a run")
    trl = Path(sys.executable).with_name("trl")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf_cache")}
    command = [str(trl), "sft", "--model_name_or_path", str(resolve_model(None)), "--dataset_name"]
    command += [str(result.files.directory), "--max_steps", "2", "--per_device_train_batch_size", "2"]
    command += ["--output_dir", str(tmp_path / "out"), "--use_cpu", "--bf16", "false", "--report_to", "none"]
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
