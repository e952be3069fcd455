"""`pettingllms stats`: the numbers of collected runs, recomputed from their files, without new rollouts.

A RUN argument is a run name (looked up in `training.sft_data_dir`; the name of a run collected
in shards stands for all its shards, counted as one run), a rollouts or records file, or a
folder (its newest run). A rollouts file is filtered again with the settings saved beside it
(or the defaults), so its numbers match what `collect` wrote; a records file stands for its run
when the run's rollouts are beside it, and is summarized as it is otherwise.

`print_stats` prints tables (`pettingllms.tables`), or with `as_json` the stats-file dict of
`stats_for_file` that scripts read; `plot` also writes PNGs (`pettingllms.plots`).
"""

from __future__ import annotations

import difflib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pettingllms.exceptions import DataError
from pettingllms.records import CollectionStats, Episode, RecordFilter, summarize_lengths
from pettingllms.run_summary import RunSummary, kept_turns, summarize_episodes, summarize_records
from pettingllms.runfiles import RunFiles, find_runs, find_shards, read_json_object, read_ledger, read_run_config


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
        shards, _ = find_shards(directory, target)
        if shards:
            raise DataError(
                f"Run '{target}' was collected in shards ({', '.join(files.run_name for files in shards)}); "
                f"`pettingllms stats {target}` counts them as one run, this command takes one shard's name."
            )
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
        path
        for files in find_runs(directory)
        for path in (files.rollouts, files.records)
        if path.is_file() and path.stat().st_size
    ]
    if not candidates:
        raise DataError(
            f"{directory} holds no run: no rollouts or records file. Collect first (`pettingllms collect`)."
        )
    files = RunFiles.of(max(candidates, key=lambda path: path.stat().st_mtime))
    return files.rollouts if files.rollouts.is_file() else files.records


def runs_in(directory: Path) -> list[str]:
    """The names of the runs with a rollouts or records file in `directory`, sorted."""
    return [files.run_name for files in find_runs(directory)] if directory.is_dir() else []


def resolve_shards(target: str, data_dir: str | Path | None = None) -> list[RunFiles]:
    """The shards of run `target` when it is the name of a run collected in shards (none of its own files);
    a missing shard is a warning that names it."""
    directory = Path(data_dir or default_data_dir())
    files = RunFiles(directory, target)
    if Path(target).exists() or "/" in target or files.rollouts.is_file() or files.records.is_file():
        return []
    shards, missing = find_shards(directory, target)
    if shards and missing:
        print(
            f"warning: run '{target}' has no shard {', '.join(missing)} in {directory}; "
            f"counting the {len(shards)} shards found.",
            file=sys.stderr,
        )
    return shards


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


def load_shards(run_name: str, shards: list[RunFiles]) -> LoadedRun:
    """The shards of a run read as one run: their episodes together, each shard filtered with its own settings."""
    runs = [load_run(files.rollouts if files.rollouts.is_file() else files.records) for files in shards]
    base = RunFiles(shards[0].directory, run_name)
    if any(run.summary.records_only for run in runs):
        from pettingllms.training.data import read_records

        summary = summarize_records(run_name, read_records([str(files.records) for files in shards]))
        summary.source = ", ".join(str(files.records) for files in shards)
        return LoadedRun(base.records, base, summary, config=runs[0].config)
    episodes = [episode for run in runs for episode in run.episodes]
    kept = [turns for run in runs for turns in run.kept]
    removed = sum((Counter(run.summary.removed) for run in runs), Counter())
    summary = summarize_episodes(run_name, episodes, kept, removed)
    summary.source = ", ".join(str(run.path) for run in runs)
    summary.wall_time_s = slowest([run.summary.wall_time_s for run in runs])
    return LoadedRun(base.rollouts, base, summary, episodes, kept, runs[0].config)


def slowest(wall_times: list[float | None]) -> float | None:
    """A sharded run's wall time: its shards run side by side, so the longest one (None if one is unknown)."""
    return None if None in wall_times else max(wall_times, default=None)


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
    runs = [resolve_target(target, data_dir) for target in targets]  # every name checked before any output
    if as_json:
        for name, path, shards in runs:
            stats = rollout_stats(shards, name) if shards else stats_for_file(path)
            if shards:
                del stats["_lengths"]
                stats["merged_shards"] = [files.run_name for files in shards]
            if plot:
                loaded = load_shards(name, shards) if shards else load_run(path)
                stats["plots"] = {plot: str(png) for plot, png in write_run_plots(loaded).items()}
            print(f"== {path or name}")
            print(json.dumps(stats, indent=2))
        return
    from pettingllms.tables import print_summaries

    for name, _, shards in runs:
        if shards:
            print(f"Run '{name}': {len(shards)} shards counted as one run ({', '.join(f.run_name for f in shards)}).")
    loaded_runs = [load_shards(name, shards) if shards else load_run(path) for name, path, shards in runs]
    print_summaries([run.summary for run in loaded_runs])
    if plot:
        for run in loaded_runs:
            written = write_run_plots(run)
            print(f"{len(written)} plots of {run.summary.run_name} written to {plots_folder(run)}")


def resolve_target(target: str, data_dir: str | None) -> tuple[str, Path | None, list[RunFiles]]:
    """(name, file, shards): a RUN argument as one file, or as the shards of a run collected in shards."""
    shards = resolve_shards(target, data_dir)
    return (target, None, shards) if shards else (target, resolve_run(target, data_dir), [])


def plots_folder(run: LoadedRun) -> Path:
    """Where the PNGs of a run go: `plots_<run>/` beside its rollouts (in `runs/`, away from the records)."""
    if run.files is None:
        return run.path.parent / f"plots_{run.path.stem}"
    return run.files.folder / f"plots_{run.files.run_name}"


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
        stats = rollout_stats([files], files.run_name)
    else:
        stats = record_stats(path)
    lengths = stats["_lengths"]
    del stats["_lengths"]
    if plot:
        from pettingllms.plots import plot_lengths

        stats["plot"] = str(plot_lengths(lengths, [], "characters", path.with_suffix(".lengths.png")))
    return stats


def rollout_stats(shards: list[RunFiles], run_name: str) -> dict[str, Any]:
    """The stats of a run recomputed from its rollouts file (or its shards' files, as one run), each
    filtered with its own saved settings, as collection did."""
    stats, removed, wall_times = None, Counter(), []
    for files in shards:
        episodes = read_ledger(files.rollouts, repair=False)
        if not episodes:
            raise DataError(f"{files.rollouts} holds no episodes.")
        record_filter = run_filter(read_run_config(files))
        stats = stats or CollectionStats(episodes[0]["env_name"], run_name)
        for episode in episodes:
            stats.add(episode, record_filter.keep(episode))
        removed.update(record_filter.removed)
        # Episodes ran concurrently, so their times do not add up to the run's: take the run's
        # own wall time from the stats file beside the rollouts, or say there is none.
        wall_times.append(_read_json(files.stats).get("wall_time_s"))
    wall_time = slowest(wall_times)
    result = stats.to_dict(wall_time or 0.0, removed)
    if wall_time is None:
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
