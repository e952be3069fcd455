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

Judged rewards (`pettingllms.judge`): `reward.weights.*` overrides mix the saved judge scores
anew, still without a model call. `--rejudge` scores the episodes again with the run's judge or
the one `reward.judge.*` names, and then the new run also gets its own rollouts file holding the
new verdicts; the source run is never modified.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pettingllms.config.schema import RewardConfig

SELECTION_KEYS = ("agents",)
"""Filters only `pettingllms filter` takes (collection keeps every agent)."""
FILTER_KEYS = (*COLLECTION_FILTER_KEYS, *SELECTION_KEYS)
REWARD_PREFIX = "reward."
FILTER_HELP = (
    "filters replacing the run's own, as key=value (a 'training.' prefix is accepted): "
    + ", ".join(FILTER_KEYS)
    + "; e.g. only_success=false min_reward=0.5 agents=[tool] near_dedup_threshold=0.9 drop_truncated=true; "
    "and reward.weights.rule=W reward.weights.judge=W (with --rejudge, any reward.* key)"
)


@dataclass
class FilterResult:
    """What `filter_run` wrote: the new run's files and stats, and the filter it applied."""

    source: RunFiles
    files: RunFiles
    stats: dict[str, Any]
    settings: dict[str, Any]
    rejudged: bool = False


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
    reward = given.get("min_reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int | float)):
        raise ConfigError(
            f"min_reward={reward!r} is invalid; expected a number (the turn's reward, combined when judged), or null."
        )
    try:
        training = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainingConfig), saved, given))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "a filter"
        text = str(error).strip().splitlines()[0]
        raise ConfigError(f"{key}: {text}") from None
    training.check("training")
    return RecordFilter.from_settings(training, **_selection(filters))


def split_reward_overrides(items: Iterable[str]) -> tuple[list[str], list[str]]:
    """(filters, `reward.*` overrides) of the command line's key=value items."""
    items = list(items)
    reward = [item for item in items if item.startswith(REWARD_PREFIX)]
    return [item for item in items if not item.startswith(REWARD_PREFIX)], reward


def build_reward(saved_reward: dict[str, Any] | None, overrides: list[str], rejudge: bool) -> RewardConfig:
    """The run's saved `reward` settings with `overrides` (reward.key=value) on top, checked as config is.

    Without `rejudge` only the weights may change: other keys describe a judge, and no judge is asked.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from pettingllms.config.load import check_keys, parse_dotted
    from pettingllms.config.schema import Config, RewardConfig

    layer = parse_dotted(overrides)
    check_keys(OmegaConf.to_container(layer), Config)
    if not rejudge:
        for item in overrides:
            if not item.startswith(f"{REWARD_PREFIX}weights"):
                raise ConfigError(
                    f"'{item}' describes the judge, and none is asked without --rejudge; add --rejudge to score the "
                    "episodes again, or give only reward.weights.* to mix the saved scores anew."
                )
    saved = saved_reward if isinstance(saved_reward, dict) else {}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RewardConfig), saved, layer.get("reward") or {})
        reward = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "reward"
        raise ConfigError(f"reward.{key}: {str(error).strip().splitlines()[0]}") from None
    reward.check("reward")
    if rejudge and reward.judge is None:
        raise ConfigError(
            "--rejudge needs a judge and the run had none: give reward.judge.base_url=URL reward.judge.model=NAME "
            "(or reward.judge.backend=hf)."
        )
    return reward


def score_episodes(reward: RewardConfig, episodes: list[Episode], record_filter: RecordFilter) -> None:
    """Judge `episodes` again, in place, with `reward.judge`: the turns `record_filter` could keep."""
    from pettingllms.console import Progress
    from pettingllms.judge import judge_all, start_judge

    selection = {"only_success": record_filter.only_success, "collect_mode": record_filter.collect_mode}
    judge = start_judge(reward, episodes[0]["env_name"], **selection)
    progress = Progress(len(episodes), "judging", unit="ep")

    async def run() -> None:
        try:
            await judge_all(judge, episodes, progress)
        finally:
            await judge.close()

    try:
        asyncio.run(run())
    finally:
        progress.close()


def _selection(filters: dict[str, Any]) -> dict[str, Any]:
    selection: dict[str, Any] = {}
    agents = filters.get("agents")
    if isinstance(agents, str):  # agents=tool,planner
        agents = [name.strip() for name in agents.split(",") if name.strip()]
    if agents is not None:
        if not (isinstance(agents, list) and all(isinstance(name, str) for name in agents)):
            raise ConfigError(f"agents={agents!r} is invalid; expected agent names, e.g. agents=[tool,planner].")
        selection["agents"] = tuple(agents)
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


def filtered_config(
    saved: dict[str, Any] | None,
    source: RunFiles,
    output: str,
    settings: dict[str, Any],
    reward: dict[str, Any] | None = None,
    rejudged: bool = False,
):
    """The new run's `_config.json`: where it came from, the filter, and the source's settings with the filter's
    (and the `reward` settings it scored or weighed with, when given)."""
    content: dict[str, Any] = {
        "filtered_from": {"run": source.run_name, "rollouts": str(source.rollouts), "rejudged": rejudged},
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
    if reward is not None:
        config["reward"] = reward
    content["config"] = config
    return content


# ---------------------------------------------------------------- the command (the I/O)


def filter_run(
    run: str, filters: list[str], output: str, data_dir: str | None = None, rejudge: bool = False
) -> FilterResult:
    """`pettingllms filter RUN [key=value...] --output NAME [--rejudge]`: write NAME's records, stats and
    `_config.json` (and, rejudged, its rollouts with the new verdicts)."""
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
    config = config if isinstance(config, dict) else {}
    filters, reward_overrides = split_reward_overrides(filters)
    record_filter = build_filter(config.get("training"), parse_filters(filters))
    reward = build_reward(config.get("reward"), reward_overrides, rejudge)
    episodes = read_ledger(source.rollouts, repair=False)
    if not episodes:
        raise DataError(f"{source.rollouts} holds no episodes.")
    if rejudge:
        score_episodes(reward, episodes, record_filter)
    elif reward.judge is not None:
        from pettingllms.judge import reweigh_episode

        episodes = [reweigh_episode(episode, reward.weights) for episode in episodes]
    records, stats = filter_episodes(episodes, record_filter, episodes[0]["env_name"], output)
    wall_time = (read_json_object(source.stats) or {}).get("wall_time_s") or 0.0
    summary = stats.to_dict(wall_time, record_filter.removed)
    settings = record_filter.settings()
    reward_settings = _plain(reward) if reward.judge is not None or reward_overrides else None
    try:
        files.prepare()
        if rejudge:  # first: the scores paid for are saved even if a later write fails
            write_jsonl_atomic(files.rollouts, episodes)
        write_jsonl_atomic(files.records, records)
        write_json_atomic(files.stats, summary)
        write_json_atomic(files.config, filtered_config(saved, source, output, settings, reward_settings, rejudge))
    except OSError as error:
        raise DataError(f"Cannot write the filtered records in {files.directory}: {error.strerror or error}.") from None
    return FilterResult(source, files, summary, settings, rejudge)


def _plain(reward: RewardConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(reward), resolve=True)


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
    lines = [
        f"Filtered run '{result.source.run_name}' ({stats['total_episodes']} episodes) into '{result.files.run_name}': "
        f"{stats['kept_records']} of {stats['total_records']} turns kept (removed: {removed}).",
        f"  filters  {' '.join(changed) or 'the defaults'}",
    ]
    judge = stats.get("judge")
    if judge:
        errors = ", ".join(f"{kind} {count}" for kind, count in judge["errors"].items()) or "none"
        mean = "none" if judge["mean_score"] is None else f"{judge['mean_score']:.3f}"
        verb = "rejudged" if result.rejudged else "judged"
        lines.append(
            f"  judge    {verb}: {judge['calls']} calls, {judge['scored']} scored (mean {mean}), errors: {errors}"
        )
    lines += [
        f"  records  {result.files.records}",
        f"  stats    {result.files.stats}",
        f"  config   {result.files.config}",
    ]
    if result.rejudged:
        lines.append(f"  rollouts {result.files.rollouts}")
    return lines
