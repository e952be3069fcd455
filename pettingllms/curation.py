"""`pettingllms filter`: a new records file from a saved run's rollouts, with other filter settings, no model call.

    >>> result = filter_run("big", ["near_dedup_threshold=0.9", "drop_truncated=true"], output="big_clean")

Every record derives from an episode in the run's ledger (`rollouts_<run>.jsonl`), so filtering
again needs no rollouts: the run's own settings (from its `_config.json`; the defaults without
one) are the starting point, the `key=value` filters given replace some of them, and
`records.RecordFilter` keeps the turns exactly as collection would. The new run `<output>` gets
the files collection writes beside the source run (records, stats, `_config.json` saying where it
came from and with which settings), but no rollouts of its own: it is data, not a run to resume.
With the run's own settings the records file is byte for byte the one `collect` wrote, because
the ledger holds the episodes in the order they finished, the order collection filtered them in.
"""

from __future__ import annotations

import copy
import difflib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pettingllms.exceptions import ConfigError, DataError
from pettingllms.jsonl import write_jsonl_atomic
from pettingllms.records import COLLECTION_FILTER_KEYS, CollectionStats, Episode, Record, RecordFilter
from pettingllms.runfiles import (
    RunFiles,
    check_run_name,
    read_json_object,
    read_ledger,
    read_run_config,
    write_json_atomic,
)

SELECTION_KEYS = ("agents", "min_reward")
"""Filters only `pettingllms filter` takes (collection keeps every agent and reward)."""
FILTER_KEYS = (*COLLECTION_FILTER_KEYS, *SELECTION_KEYS)
FILTER_HELP = (
    "filters replacing the run's own, as key=value (a 'training.' prefix is accepted): "
    + ", ".join(FILTER_KEYS)
    + "; e.g. only_success=false min_reward=0.5 agents=[tool] near_dedup_threshold=0.9 drop_truncated=true"
)


@dataclass
class FilterResult:
    """What `filter_run` wrote: the new run's files and stats, and the filter it applied."""

    source: RunFiles
    files: RunFiles
    stats: dict[str, Any]
    settings: dict[str, Any]


# ---------------------------------------------------------------- settings (pure)


def parse_filters(items: Iterable[str]) -> dict[str, Any]:
    """`key=value` filters as {key: value}, each key checked against `FILTER_KEYS`."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        name = key.removeprefix("training.")
        if not sep or not name:
            raise ConfigError(f"Filter '{item}' is not key=value (e.g. near_dedup_threshold=0.9).")
        if name not in FILTER_KEYS:
            close = difflib.get_close_matches(name, FILTER_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown filter '{key}'.{hint} Filters: {', '.join(FILTER_KEYS)}.")
        values[name] = _parse_value(item, text)
    return values


def _parse_value(item: str, text: str) -> Any:
    """`text` read as config overrides are (YAML: 0.9, 1e-3, true, null, [a, b]; anything else is text)."""
    import yaml
    from omegaconf import Container, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = OmegaConf.from_dotlist([f"value={text}"]).value
    except (OmegaConfBaseException, yaml.YAMLError):
        raise ConfigError(f"Filter '{item}': '{text}' is not a value (a number, true/false, null or a list).") from None
    return OmegaConf.to_container(value) if isinstance(value, Container) else value


def build_filter(saved_training: dict[str, Any] | None, filters: dict[str, Any]) -> RecordFilter:
    """The filter of a run's saved `config.training`, with `filters` replacing some keys; checked as config is."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from pettingllms.config.schema import TrainingConfig

    saved = {key: value for key, value in (saved_training or {}).items() if key in COLLECTION_FILTER_KEYS}
    given = {key: value for key, value in filters.items() if key in COLLECTION_FILTER_KEYS}
    try:
        training = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainingConfig), saved, given))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "a filter"
        text = str(error).strip().splitlines()[0]
        raise ConfigError(f"{key}: {text}") from None
    training.check("training")
    return RecordFilter.from_settings(training, **_selection(filters))


def _selection(filters: dict[str, Any]) -> dict[str, Any]:
    selection: dict[str, Any] = {}
    agents = filters.get("agents")
    if isinstance(agents, str):  # agents=tool,planner
        agents = [name.strip() for name in agents.split(",") if name.strip()]
    if agents is not None:
        if not (isinstance(agents, list) and all(isinstance(name, str) for name in agents)):
            raise ConfigError(f"agents={agents!r} is invalid; expected agent names, e.g. agents=[tool,planner].")
        selection["agents"] = tuple(agents)
    reward = filters.get("min_reward")
    if reward is not None:
        if isinstance(reward, bool) or not isinstance(reward, int | float):
            raise ConfigError(f"min_reward={reward!r} is invalid; expected a number (the turn's reward), or null.")
        selection["min_reward"] = float(reward)
    return selection


def filter_episodes(
    episodes: Iterable[Episode], record_filter: RecordFilter, env_name: str, run_name: str
) -> tuple[list[Record], CollectionStats]:
    """The records `record_filter` keeps from `episodes`, in order, and the counts collection would write."""
    stats = CollectionStats(env_name, run_name)
    records: list[Record] = []
    for episode in episodes:
        kept = record_filter.keep(episode)
        stats.add(episode, kept)
        records += kept
    return records, stats


def filtered_config(saved: dict[str, Any] | None, source: RunFiles, output: str, settings: dict[str, Any]):
    """The new run's `_config.json`: where it came from, the filter, and the source's settings with the filter's."""
    content: dict[str, Any] = {
        "filtered_from": {"run": source.run_name, "rollouts": str(source.rollouts)},
        "filters": settings,
    }
    saved = copy.deepcopy(saved) if isinstance(saved, dict) else {}
    if isinstance(saved.get("identity"), dict):
        content["identity"] = saved["identity"]
        content["identity"].update({f"training.{key}": settings[key] for key in COLLECTION_FILTER_KEYS})
    config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    training = config.setdefault("training", {})
    if isinstance(training, dict):
        training.update({key: settings[key] for key in COLLECTION_FILTER_KEYS}, run_name=output)
    content["config"] = config
    return content


# ---------------------------------------------------------------- the command (the I/O)


def filter_run(run: str, filters: list[str], output: str, data_dir: str | None = None) -> FilterResult:
    """`pettingllms filter RUN [key=value...] --output NAME`: write NAME's records, stats and `_config.json`."""
    source = _source_run(run, data_dir)
    check_run_name(output, "--output")
    if output == source.run_name:
        raise DataError(f"--output {output} is the run being filtered; give the new records another name.")
    files = RunFiles(source.directory, output)
    for path in (files.records, files.stats, files.config, files.rollouts):
        if path.exists():
            raise DataError(f"{path} already exists; choose another --output name, or move that file away.")
    saved = read_run_config(source)
    if saved is None:
        print(f"warning: {source.config} is missing or unreadable; filtering from the defaults.", file=sys.stderr)
    config = (saved or {}).get("config")
    record_filter = build_filter(config.get("training") if isinstance(config, dict) else None, parse_filters(filters))
    episodes = read_ledger(source.rollouts, repair=False)
    if not episodes:
        raise DataError(f"{source.rollouts} holds no episodes.")
    records, stats = filter_episodes(episodes, record_filter, episodes[0]["env_name"], output)
    wall_time = (read_json_object(source.stats) or {}).get("wall_time_s") or 0.0
    summary = stats.to_dict(wall_time, record_filter.removed)
    settings = record_filter.settings()
    try:
        write_jsonl_atomic(files.records, records)
        write_json_atomic(files.stats, summary)
        write_json_atomic(files.config, filtered_config(saved, source, output, settings))
    except OSError as error:
        raise DataError(f"Cannot write the filtered records in {files.directory}: {error.strerror or error}.") from None
    return FilterResult(source, files, summary, settings)


def _source_run(run: str, data_dir: str | None) -> RunFiles:
    from pettingllms.stats import resolve_run

    path = resolve_run(run, data_dir)
    source = RunFiles.of(path)
    if source is None:
        raise DataError(f"{path} is not a run's rollouts or records file (rollouts_<run>.jsonl, sft_data_<run>.jsonl).")
    if not source.rollouts.is_file():
        raise DataError(
            f"filter reads a run's episodes, and {source.rollouts} does not exist (a records file alone cannot be "
            "filtered again)."
        )
    return source


def describe_result(result: FilterResult) -> list[str]:
    """The lines `pettingllms filter` prints."""
    stats = result.stats
    removed = ", ".join(f"{reason} {count}" for reason, count in stats["removed"].items()) or "none"
    defaults = RecordFilter().settings()
    changed = [f"{key}={value!r}" for key, value in result.settings.items() if value != defaults[key]]
    return [
        f"Filtered run '{result.source.run_name}' ({stats['total_episodes']} episodes) into '{result.files.run_name}': "
        f"{stats['kept_records']} of {stats['total_records']} turns kept (removed: {removed}).",
        f"  filters  {' '.join(changed) or 'the defaults'}",
        f"  records  {result.files.records}",
        f"  stats    {result.files.stats}",
        f"  config   {result.files.config}",
    ]
