"""Faults a careless user hits with the data folder's layout, its dataset card and its plots.

Each test reproduces a bug found by attacking `collect`, `filter`, `stats` and `report` as a user
would: a run half moved into `runs/`, a file named `runs`, run names whose config names clash,
and a full disk under `stats --plot`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from disks import fill
from synthetic_runs import make_episode, standard_episodes, write_run
from test_layout import collect_run, full_disk, load_dataset  # noqa: F401 (fixtures)

from pettingllms.dataset_card import config_names, write_card
from pettingllms.exceptions import DataError
from pettingllms.runfiles import RUNS_FOLDER, RunFiles


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pettingllms", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def collect_args(directory, run_name: str, episodes: int = 2) -> list[str]:
    return [
        "collect",
        "env.name=sokoban",
        "policy=expert",
        f"training.sft_data_dir={directory}",
        f"training.run_name={run_name}",
        f"training.sft_num_episodes={episodes}",
    ]


@pytest.mark.slow
def test_a_run_half_moved_into_runs_is_refused_instead_of_played_again(tmp_path):
    # The user converts a run by hand and moves only its ledger: resuming used to start a new
    # ledger at the top and play every episode again, leaving the old one as an orphan twin.
    files = collect_run(tmp_path, "half", 4).files
    ledger = files.rollouts.read_bytes()
    records = files.records.read_bytes()
    for path in (files.stats, files.config):
        path.rename(tmp_path / path.name)

    with pytest.raises(DataError, match=r"has files both at the top .* \(rollouts_half.jsonl\); move its rollouts"):
        collect_run(tmp_path, "half", 6)
    assert not (tmp_path / files.rollouts.name).exists(), "no second ledger at the top"
    assert files.rollouts.read_bytes() == ledger and files.records.read_bytes() == records


@pytest.mark.slow
def test_a_file_named_runs_is_one_error_line_naming_it(tmp_path):
    (tmp_path / RUNS_FOLDER).write_text("my notes\n")
    done = run_cli(*collect_args(tmp_path, "a"))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / RUNS_FOLDER} is a file, and a run's files go into a folder of that name; "
        "move the file away."
    )
    assert (tmp_path / RUNS_FOLDER).read_text() == "my notes\n"


def test_a_run_named_like_another_runs_sanitized_config_keeps_its_own_name():
    names = config_names(["a b", "run_a_b", "a:b", "solo run"])
    assert names["run_a_b"] == "run_a_b", "a valid run name is always its own config name"
    assert names["solo run"] == "run_solo_run"
    assert len(set(names.values())) == 4 and "run_a_b" not in (names["a b"], names["a:b"])
    # A config name never passes to another run when a run is added: it stays, or it goes.
    later = config_names(["a b", "run_a_b", "a:b", "solo run", "a-b", "a;b"])
    assert all(later[run] == name for run, name in names.items())


def test_load_dataset_by_a_runs_config_name_loads_that_run(tmp_path, load_dataset):  # noqa: F811
    for run, turns in (("a b", 1), ("run_a_b", 2)):
        files = write_run(tmp_path, run, [make_episode(0, 0, True, rounds=turns)])
        rows = [{"messages": [{"role": "user", "content": run}, {"role": "assistant", "content": "ok"}]}] * turns
        files.records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_card(tmp_path)

    loaded = load_dataset(str(tmp_path), "run_a_b")["train"]
    assert [row["messages"][0]["content"] for row in loaded] == ["run_a_b", "run_a_b"]


def test_stats_plot_on_a_full_disk_is_one_error_line(full_disk):  # noqa: F811
    files = write_run(full_disk, "toy", standard_episodes())
    files.records.write_text("")
    fill(full_disk)

    done = run_cli("stats", "--plot", "--data-dir", str(full_disk), "toy")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Cannot write the plot ") and "No space left on device" in last
    assert "Traceback" not in done.stderr
    assert not any(RunFiles(full_disk, "toy").folder.glob("plots_toy/*.png")), "no half-written PNG stays"
