"""`pettingllms stats`: recompute the numbers of collected files, without new rollouts.

A rollouts file is filtered again with the settings saved beside it (or the defaults), so
its stats match what `collect` wrote; a records file is summarized as it is.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pettingllms.exceptions import DataError
from pettingllms.records import CollectionStats, RecordFilter, summarize_lengths
from pettingllms.runfiles import RunFiles, read_ledger, read_run_config


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
        stats["plot"] = str(plot_lengths(lengths, path.with_suffix(".lengths.png")))
    return stats


def rollout_stats(files: RunFiles) -> dict[str, Any]:
    """The stats of a run recomputed from its rollouts file, filtered with the run's own settings."""
    episodes = read_ledger(files.rollouts, repair=False)
    if not episodes:
        raise DataError(f"{files.rollouts} holds no episodes.")
    training = (read_run_config(files) or {}).get("config", {}).get("training", {})
    record_filter = RecordFilter(
        training.get("only_success", True),
        training.get("collect_mode", "env"),
        training.get("dedup", False),
        training.get("max_records_per_task"),
    )
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


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or not one."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


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


def plot_lengths(lengths: list[int], output: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("--plot needs matplotlib: pip install matplotlib") from None
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(lengths, bins=30)
    axis.set_xlabel("characters per kept record")
    axis.set_ylabel("records")
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)
    return output
