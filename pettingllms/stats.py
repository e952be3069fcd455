"""`pettingllms stats`: the numbers of collected runs, recomputed from their files, without new rollouts.

A RUN argument is a run name (looked up in `training.sft_data_dir`), a rollouts or records file,
or a folder (its newest run). A rollouts file is filtered again with the settings saved beside it
(or the defaults), so its numbers match what `collect` wrote; a records file stands for its run
when the run's rollouts are beside it, and is summarized as it is otherwise.

`print_stats` prints tables (`pettingllms.tables`), or with `as_json` the stats-file dict of
`stats_for_file` that scripts read; `plot` also writes PNGs (`pettingllms.plots`).
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pettingllms.exceptions import DataError
from pettingllms.records import CollectionStats, Episode, RecordFilter, summarize_lengths
from pettingllms.run_summary import RunSummary, kept_turns, summarize_episodes, summarize_records
from pettingllms.runfiles import RunFiles, read_json_object, read_ledger, read_run_config


def default_data_dir() -> str:
    from pettingllms.config.schema import TrainingConfig

    return TrainingConfig.sft_data_dir


# ---------------------------------------------------------------- which file a RUN argument names


def resolve_run(target: str, data_dir: str | Path | None = None) -> Path:
    """The rollouts or records file that `target` names: a file, a folder's newest run, or a run name."""
    path = Path(target)
    if path.is_file():
        return path
    if path.is_dir():
        return newest_run(path)
    directory = Path(data_dir or default_data_dir())
    if "/" not in target and not target.endswith(".jsonl"):
        files = RunFiles(directory, target)
        for candidate in (files.rollouts, files.records):
            if candidate.is_file():
                return candidate
        runs = runs_in(directory)
        close = difflib.get_close_matches(target, runs, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = f" Runs there: {', '.join(runs[:10])}{', ...' if len(runs) > 10 else ''}." if runs else ""
        raise DataError(
            f"No run '{target}' in {directory} (no {files.rollouts.name}) and no file of that name.{hint}{known} "
            "Pass a run name, a rollouts/records file, or --data-dir DIR."
        )
    raise DataError(f"No such file: {target}")


def newest_run(directory: Path) -> Path:
    """The rollouts (else records) file of the most recently written run in `directory`."""
    candidates = [
        path for path in directory.iterdir() if RunFiles.of(path) is not None and path.is_file() and path.stat().st_size
    ]
    if not candidates:
        raise DataError(
            f"{directory} holds no run: no rollouts or records file. Collect first (`pettingllms collect`)."
        )
    files = RunFiles.of(max(candidates, key=lambda path: path.stat().st_mtime))
    return files.rollouts if files.rollouts.is_file() else files.records


def runs_in(directory: Path) -> list[str]:
    """The names of the runs with a rollouts or records file in `directory`, sorted."""
    if not directory.is_dir():
        return []
    names = {files.run_name for path in directory.iterdir() if (files := RunFiles.of(path)) is not None}
    return sorted(names)


# ---------------------------------------------------------------- reading a run (the I/O edge)


@dataclass
class LoadedRun:
    """A run read from its files: the episodes, which of their turns the filters keep, and the summary."""

    path: Path
    files: RunFiles | None
    summary: RunSummary
    episodes: list[Episode] = field(default_factory=list)
    kept: list[set[int]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    """The run's `_config.json` (`identity` and `config`), when there is one."""


def load_run(path: Path) -> LoadedRun:
    """Read a run from its rollouts file (or from a records file: its run's rollouts when they are beside it)."""
    if not path.exists():
        raise DataError(f"No such file: {path}")
    files = RunFiles.of(path)
    is_ledger = files is not None and (path == files.rollouts or _has_episodes(files.rollouts))
    if is_ledger:
        config = read_run_config(files)
        episodes = read_ledger(files.rollouts, repair=False)
        if not episodes:
            raise DataError(f"{files.rollouts} holds no episodes.")
        record_filter = run_filter(config)
        kept = kept_turns(episodes, record_filter)
        summary = summarize_episodes(files.run_name, episodes, kept, record_filter.removed)
        summary.source = str(files.rollouts)
        summary.wall_time_s = _read_json(files.stats).get("wall_time_s")
        return LoadedRun(files.rollouts, files, summary, episodes, kept, config)
    from pettingllms.training.data import read_records

    summary = summarize_records(files.run_name if files else path.stem, read_records([str(path)]))
    summary.source = str(path)
    return LoadedRun(path, files, summary, config=read_run_config(files) if files else None)


def _has_episodes(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def run_filter(config: dict[str, Any] | None) -> RecordFilter:
    """The record filter a run was collected with, from its saved config (the defaults without one)."""
    return RecordFilter.from_settings((config or {}).get("config", {}).get("training", {}))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or not one."""
    return read_json_object(path) or {}


# ---------------------------------------------------------------- the command


def print_stats(targets: list[str], data_dir: str | None = None, as_json: bool = False, plot: bool = False) -> None:
    """`pettingllms stats RUN...`: tables (several runs side by side), or the stats-file JSON of each."""
    paths = [resolve_run(target, data_dir) for target in targets]  # every name checked before any output
    if as_json:
        for path in paths:
            stats = stats_for_file(path)
            if plot:
                stats["plots"] = {name: str(png) for name, png in write_run_plots(load_run(path)).items()}
            print(f"== {path}")
            print(json.dumps(stats, indent=2))
        return
    from pettingllms.tables import print_summaries

    runs = [load_run(path) for path in paths]
    print_summaries([run.summary for run in runs])
    if plot:
        for run in runs:
            written = write_run_plots(run)
            print(f"{len(written)} plots of {run.summary.run_name} written to {plots_folder(run)}")


def plots_folder(run: LoadedRun) -> Path:
    """Where the PNGs of a run go: `plots_<run>/` beside its files."""
    name = run.files.run_name if run.files else run.path.stem
    return run.path.parent / f"plots_{name}"


def write_run_plots(run: LoadedRun, training_dir: str | Path | None = None) -> dict[str, Path]:
    """The run's PNGs in `plots_folder(run)`, with the loss curve and evaluation when they are found."""
    from pettingllms.plots import write_plots
    from pettingllms.training_log import read_training_results

    results = read_training_results(run.files, run.config, training_dir)
    return write_plots(run.summary, plots_folder(run), results.curves, results.before, results.after)


# ---------------------------------------------------------------- the stats-file dict (`--json`)


def stats_for_file(path: Path, plot: bool = False) -> dict[str, Any]:
    """Stats of a `rollouts_<run>.jsonl` or a records file; optionally a PNG of the lengths."""
    if not path.exists():
        raise DataError(f"No such file: {path}")
    files = RunFiles.of(path)
    if files is not None and path.name == files.rollouts.name:
        stats = rollout_stats(files)
    else:
        stats = record_stats(path)
    lengths = stats["_lengths"]
    del stats["_lengths"]
    if plot:
        from pettingllms.plots import plot_lengths

        stats["plot"] = str(plot_lengths(lengths, [], "characters", path.with_suffix(".lengths.png")))
    return stats


def rollout_stats(files: RunFiles) -> dict[str, Any]:
    """The stats of a run recomputed from its rollouts file, filtered with the run's own settings."""
    episodes = read_ledger(files.rollouts, repair=False)
    if not episodes:
        raise DataError(f"{files.rollouts} holds no episodes.")
    record_filter = run_filter(read_run_config(files))
    stats = CollectionStats(episodes[0]["env_name"], files.run_name)
    for episode in episodes:
        stats.add(episode, record_filter.keep(episode))
    # Episodes ran concurrently, so their times do not add up to the run's: take the run's
    # own wall time from the stats file beside the rollouts, or say there is none.
    collected = _read_json(files.stats)
    result = stats.to_dict(collected.get("wall_time_s", 0.0), record_filter.removed)
    if "wall_time_s" not in collected:
        result["wall_time_s"] = result["episodes_per_s"] = None
    result["_lengths"] = stats.record_chars
    return result


def record_stats(path: Path) -> dict[str, Any]:
    from pettingllms.training.data import read_records

    records = read_records([str(path)])
    agents, policies, successes = Counter(), Counter(), Counter()
    lengths, episodes = [], set()
    for record in records:
        metadata = record.get("metadata") or {}
        agents[metadata.get("agent_name")] += 1
        policies[metadata.get("policy_name")] += 1
        successes[str(metadata.get("env_success"))] += 1
        episodes.add(metadata.get("episode_id"))
        lengths.append(
            sum(len(str(m.get("content", ""))) for m in record.get("messages", []))
            or len(str(record.get("prompt", ""))) + len(str(record.get("response", "")))
        )
    return {
        "file": str(path),
        "records": len(records),
        "episodes": len(episodes - {None}),
        "per_agent": dict(agents),
        "per_policy": dict(policies),
        "env_success": dict(successes),
        "record_chars": summarize_lengths(lengths),
        "_lengths": lengths,
    }
