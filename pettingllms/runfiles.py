"""The files of a collection run: their names, the run's lock, its ledger, and safe writes.

A run named `<run>` lives in one folder (`training.sft_data_dir`):

    sft_data_<run>.jsonl               the kept records (what `train` reads)
    README.md                          the dataset card of every run in the folder (`dataset_card`)
    eval_<run>.json                    an evaluation run's summary (`pettingllms eval`)
    runs/rollouts_<run>.jsonl          every episode: the run's ledger
    runs/sft_data_<run>_stats.json     counts of what happened
    runs/sft_data_<run>_config.json    the settings that made it (resume checks them)

The records are the only JSONL at the top, so `load_dataset("json", data_files="<dir>/*.jsonl")`
and `trl sft --dataset_name <dir>` read them and nothing else. Runs written before `runs/`
existed keep their files at the top (the legacy layout); `RunFiles` finds them there.

This module is the only place that spells those names; collection, `stats`, `train` and the
command line all ask it. `docs/data-format.md` describes what each file holds.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pettingllms.exceptions import ConfigError, DataError, UserError
from pettingllms.jsonl import read_jsonl, split_torn_tail
from pettingllms.records import Episode, check_episode

RECORDS_PREFIX = "sft_data_"
ROLLOUTS_PREFIX = "rollouts_"
EVAL_PREFIX = "eval_"
RUNS_FOLDER = "runs"
"""The sub-folder of a run's files other than its records (and an evaluation's summary)."""
RECORDS_GLOB = f"{RECORDS_PREFIX}*.jsonl"
"""The records of every run in a folder: what `load_dataset` and the dataset card's default config read."""
SHARD = re.compile(r"\.shard-(\d+)-of-(\d+)\.jsonl")
"""What follows a run name in the records file of one of its shards."""
_UNSAFE_NAME = re.compile(r"[/\\*?\[\]\x00-\x1f\x7f]")
"""Path separators, glob characters and control characters (newlines): never in a run name."""


def check_run_name(name: str, key: str = "training.run_name") -> None:
    """Raise ConfigError unless `name` can name a run's files and be found again without globbing."""
    if not name or name in (".", "..") or name.startswith("-") or _UNSAFE_NAME.search(name):
        raise ConfigError(
            f"{key}={name!r} is invalid; expected a name without path separators, glob characters "
            "(*?[]), control characters such as newlines, or a leading '-'."
        )


@dataclass(frozen=True)
class RunFiles:
    """The files of one collection run, named after it.

    Which layout a run has is decided here, from what exists: a run whose rollouts, stats or
    config file sits at the top of `directory` was written before `runs/` existed and keeps
    all its files there; any other run (a new one too) has them in `runs/`. A run never has
    files in both places, so every reader and a resume find the same files.
    """

    directory: Path
    run_name: str

    @property
    def records(self) -> Path:
        return self.directory / f"{RECORDS_PREFIX}{self.run_name}.jsonl"

    @property
    def stats(self) -> Path:
        return self.folder / f"{RECORDS_PREFIX}{self.run_name}_stats.json"

    @property
    def config(self) -> Path:
        return self.folder / f"{RECORDS_PREFIX}{self.run_name}_config.json"

    @property
    def rollouts(self) -> Path:
        return self.folder / f"{ROLLOUTS_PREFIX}{self.run_name}.jsonl"

    @property
    def evaluation(self) -> Path:
        """The summary `pettingllms eval` writes for an evaluation run (at the top, next to the records)."""
        return self.directory / f"{EVAL_PREFIX}{self.run_name}.json"

    @cached_property
    def folder(self) -> Path:
        """Where the run's files other than its records live: `runs/`, or the top of `directory` for a
        run of the legacy layout. Decided once per `RunFiles`, by what exists."""
        stem = f"{RECORDS_PREFIX}{self.run_name}"
        top = (f"{ROLLOUTS_PREFIX}{self.run_name}.jsonl", f"{stem}_stats.json", f"{stem}_config.json")
        if any((self.directory / name).exists() for name in top):
            return self.directory
        return self.directory / RUNS_FOLDER

    @property
    def is_legacy(self) -> bool:
        """Whether the run was written before `runs/` existed, with all its files at the top."""
        return self.folder == self.directory

    def prepare(self) -> None:
        """Make the folders a run writes into; called when a run starts.

        A run half moved between the layouts (its rollouts in `runs/`, its config still at the top)
        is refused: writing it would start its ledger anew at the top, playing every episode again."""
        runs = self.directory / RUNS_FOLDER
        if self.is_legacy:
            stray = [path.name for path in (runs / self.rollouts.name, runs / self.stats.name, runs / self.config.name)]
            stray = [name for name in stray if (runs / name).exists()]
            if stray:
                raise DataError(
                    f"Run '{self.run_name}' has files both at the top of {self.directory} and in {runs} "
                    f"({', '.join(stray)}); move its rollouts, stats and config files into {RUNS_FOLDER}/ together."
                )
        elif runs.exists() and not runs.is_dir():
            raise DataError(f"{runs} is a file, and a run's files go into a folder of that name; move the file away.")
        self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def of(cls, path: Path | str) -> RunFiles | None:
        """The run a records or rollouts file belongs to, by its name and place; None for other files."""
        path = Path(path)
        name = path.name
        if name.startswith(ROLLOUTS_PREFIX) and name.endswith(".jsonl"):
            run = name.removeprefix(ROLLOUTS_PREFIX).removesuffix(".jsonl")
            # In a folder named runs/, it is a run's ledger unless its records sit beside it: then
            # the folder is a data folder that happens to be named runs/, holding a legacy run.
            records_beside = path.parent / f"{RECORDS_PREFIX}{run}.jsonl"
            if run and path.parent.name == RUNS_FOLDER and not records_beside.exists():
                return cls(path.parent.parent, run)
        elif name.startswith(RECORDS_PREFIX) and name.endswith(".jsonl"):
            run = name.removeprefix(RECORDS_PREFIX).removesuffix(".jsonl")
        else:
            return None
        return cls(path.parent, run) if run else None


def find_runs(directory: Path | str) -> list[RunFiles]:
    """Every run in `directory` with a records or rollouts file (either layout), sorted by name."""
    directory = Path(directory)
    paths = [*directory.glob(RECORDS_GLOB), *directory.glob(f"{ROLLOUTS_PREFIX}*.jsonl")]
    paths += (directory / RUNS_FOLDER).glob(f"{ROLLOUTS_PREFIX}*.jsonl")
    runs = {files.run_name: files for path in paths if path.is_file() and (files := RunFiles.of(path))}
    return [runs[name] for name in sorted(runs)]


def run_records(directory: Path | str, run_name: str) -> Path:
    """The records file of run `run_name` in `directory` (it may not exist yet)."""
    return RunFiles(Path(directory), run_name).records


def shard_run_name(run_name: str, index: int, shards: int) -> str:
    """The name under which shard `index` of `shards` writes run `run_name`'s files."""
    return run_name if shards == 1 else f"{run_name}.shard-{index}-of-{shards}"


def run_records_with_shards(directory: Path | str, run_name: str) -> list[Path]:
    """The records of run `run_name`: its own file, else the files of its shards (in shard order)."""
    own = run_records(directory, run_name)
    if own.exists():
        return [own]
    shards = Path(directory).glob(glob.escape(f"{RECORDS_PREFIX}{run_name}.shard-") + "*-of-*.jsonl")
    found = [path for path in shards if SHARD.fullmatch(path.name.removeprefix(RECORDS_PREFIX + run_name))]
    return sorted(found, key=lambda path: int(SHARD.fullmatch(path.name.removeprefix(RECORDS_PREFIX + run_name))[1]))


def find_shards(directory: Path | str, run_name: str) -> tuple[list[RunFiles], list[str]]:
    """The shards of run `run_name` in `directory`, in shard order, and the names of those missing."""
    found: dict[int, RunFiles] = {}
    counts: set[int] = set()
    for files in find_runs(directory):
        rest = files.run_name.removeprefix(run_name) if files.run_name.startswith(run_name) else ""
        if match := SHARD.fullmatch(rest + ".jsonl"):
            found[int(match[1])] = files
            counts.add(int(match[2]))
    if len(counts) > 1:
        raise DataError(
            f"The shards of run '{run_name}' in {directory} disagree on their number ({sorted(counts)}): "
            "pass one shard's run name instead."
        )
    total = counts.pop() if counts else 0
    missing = [shard_run_name(run_name, index, total) for index in range(total) if index not in found]
    return [found[index] for index in sorted(found)], missing


def newest_records(directory: Path | str) -> Path:
    """The most recently written records file in `directory`; DataError when there is none."""
    directory = Path(directory)
    candidates = [path for path in directory.glob(RECORDS_GLOB) if path.is_file() and RunFiles.of(path) is not None]
    if not candidates:
        raise DataError(
            f"No training data: no {RECORDS_PREFIX}*.jsonl in {directory}. Collect first "
            "(`pettingllms collect`) or pass training.train_data_path=FILE."
        )
    return max(candidates, key=lambda path: path.stat().st_mtime)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, unreadable or holds something else."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def read_run_config(files: RunFiles) -> dict[str, Any] | None:
    """The saved `_config.json` of a run, or None when it is missing or unreadable."""
    return read_json_object(files.config)


def default_run_name(directory: Path) -> str:
    """The start time, made unique in `directory` by creating the run's ledger on the spot,
    so two collections started in the same second cannot share a run."""
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    name, suffix = stamp, 1
    while True:
        files = RunFiles(directory, name)
        files.prepare()
        try:
            os.close(os.open(files.rollouts, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return name
        except FileExistsError:
            suffix += 1
            name = f"{stamp}_{suffix}"


def lock_run(files: RunFiles):
    """Hold the run's ledger locked for as long as the returned file stays open."""
    files.prepare()
    handle = open(files.rollouts, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"Run '{files.run_name}' in {files.directory} is being collected by another process; "
            "wait for it or use another training.run_name."
        ) from None
    return handle


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON so that a reader never sees half a file, and no temporary file stays behind."""
    write_text_atomic(path, json.dumps(content, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` through a temporary file renamed over `path`: the old file or the new one, never half.

    The temporary file is named after the process, so that two runs rewriting the same file (the
    folder's dataset card) never write into one temporary file. The parent folder is made when
    missing: the first file of a run in `runs/` may come from `pettingllms filter`, in a folder
    that held only runs of the legacy layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_ledger(path: Path, repair: bool = True) -> list[Episode]:
    """The episodes a run finished, from its rollouts file; a later line for an episode replaces an earlier one.

    A kill can only leave a last line without its newline (a torn write): it is cut off with a
    warning (`repair` truncates the file) and its episode runs again. A broken line before it
    means the file was damaged some other way, and that is a DataError, not something to guess about.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, tail = split_torn_tail(data)
    episodes: dict[str, Episode] = {}
    for row, where in read_jsonl(path, data=complete):
        episode = check_episode(row, where)
        episodes.pop(episode["episode_id"], None)  # a re-run episode takes its new place in the order
        episodes[episode["episode_id"]] = episode
    if tail:
        line = complete.count(b"\n") + 1
        print(
            f"warning: {path}:{line} is a torn line (the run was killed mid-write); "
            "dropping it, its episode runs again.",
            file=sys.stderr,
        )
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(len(complete))
    return list(episodes.values())
