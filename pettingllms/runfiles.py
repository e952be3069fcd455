"""The files of a collection run: their names, the run's lock, its ledger, and safe writes.

A run named `<run>` lives in one folder (`training.sft_data_dir`):

    sft_data_<run>.jsonl          the kept records (what `train` reads)
    sft_data_<run>_stats.json     counts of what happened
    sft_data_<run>_config.json    the settings that made it (resume checks them)
    rollouts_<run>.jsonl          every episode: the run's ledger
    eval_<run>.json               an evaluation run's summary (`pettingllms eval`)

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
from pathlib import Path
from typing import Any

from pettingllms.exceptions import ConfigError, DataError, UserError
from pettingllms.jsonl import read_jsonl, split_torn_tail
from pettingllms.records import Episode, check_episode

RECORDS_PREFIX = "sft_data_"
ROLLOUTS_PREFIX = "rollouts_"
EVAL_PREFIX = "eval_"
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
    """The files of one collection run, named after it."""

    directory: Path
    run_name: str

    @property
    def records(self) -> Path:
        return self.directory / f"{RECORDS_PREFIX}{self.run_name}.jsonl"

    @property
    def stats(self) -> Path:
        return self.directory / f"{RECORDS_PREFIX}{self.run_name}_stats.json"

    @property
    def config(self) -> Path:
        return self.directory / f"{RECORDS_PREFIX}{self.run_name}_config.json"

    @property
    def rollouts(self) -> Path:
        return self.directory / f"{ROLLOUTS_PREFIX}{self.run_name}.jsonl"

    @property
    def evaluation(self) -> Path:
        """The summary `pettingllms eval` writes for an evaluation run."""
        return self.directory / f"{EVAL_PREFIX}{self.run_name}.json"

    @classmethod
    def of(cls, path: Path | str) -> RunFiles | None:
        """The run a records or rollouts file belongs to, by its name; None for other files."""
        path = Path(path)
        name = path.name
        if name.startswith(ROLLOUTS_PREFIX) and name.endswith(".jsonl"):
            run = name.removeprefix(ROLLOUTS_PREFIX).removesuffix(".jsonl")
        elif name.startswith(RECORDS_PREFIX) and name.endswith(".jsonl"):
            run = name.removeprefix(RECORDS_PREFIX).removesuffix(".jsonl")
        else:
            return None
        return cls(path.parent, run) if run else None


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


def newest_records(directory: Path | str) -> Path:
    """The most recently written records file in `directory`; DataError when there is none."""
    directory = Path(directory)
    candidates = [
        path for path in directory.glob(f"{RECORDS_PREFIX}*.jsonl") if path.is_file() and RunFiles.of(path) is not None
    ]
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
        try:
            os.close(os.open(RunFiles(directory, name).rollouts, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return name
        except FileExistsError:
            suffix += 1
            name = f"{stamp}_{suffix}"


def lock_run(files: RunFiles):
    """Hold the run's ledger locked for as long as the returned file stays open."""
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
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "w") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")
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
