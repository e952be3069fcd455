"""The dataset card of a data folder: `README.md` with the Hub's YAML header, about every run in it.

`datasets.load_dataset(folder)` (what `trl sft --dataset_name folder` calls) reads the card's
`configs:`: the `default` config is every run's records (`sft_data_*.jsonl`), and each run with
kept records is a config of its own. Without a card, the loader would also read the rollouts,
stats and configs under `runs/` and fail on their other columns.

The card is written again from every run found in the folder after each collection and each
`pettingllms filter`, so runs written at the same time never drop each other. A README.md that
we did not write (it lacks `CARD_MARKER`) is the user's: it is never replaced.

    >>> write_card(Path("sft_data"))         # the card's path, or None with a warning when not written
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pettingllms.runfiles import RECORDS_GLOB, RunFiles, find_runs, read_json_object, write_text_atomic

CARD_NAME = "README.md"
CARD_MARKER = "<!-- written by pettingllms: regenerated after each run; remove this line to keep your edits -->"
TAGS = ["pettingllms", "sft", "agents"]
FILTER_KEYS = (
    "only_success", "collect_mode", "dedup", "near_dedup_threshold", "max_records_per_task", "drop_truncated",
    "drop_crashed_programs", "max_reply_chars", "max_invalid_actions", "min_reward", "min_successes_per_task",
    "max_samples_per_task", "agents",
)  # fmt: skip
"""The settings that decide which turns became records, shown when set (the first three always)."""
_CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
EMPTY_RUN = (
    "No record was kept, so its records file is empty; `load_dataset` refuses an empty file on its own "
    "(a bare `StopIteration` in datasets 5.2), so the run has no config here. The `default` config loads while another "
    "run has records: an empty file among others adds nothing."
)


# ---------------------------------------------------------------- writing (the I/O edge)


def write_card(directory: Path | str) -> Path | None:
    """Write `directory`'s card from the runs in it; None, with one warning line, when it is not written.

    Nothing collected depends on the card, so a failure here (a user's own README.md, a full
    disk) is a warning, and the old card stays whole.
    """
    path = Path(directory) / CARD_NAME
    try:
        if path.exists() and CARD_MARKER not in path.read_text(encoding="utf-8", errors="replace"):
            warn_not_written(path, "it is not one pettingllms wrote (no marker line); it is left as it is")
            return None
        write_text_atomic(path, render_card([describe_run(files) for files in find_runs(directory)]))
    except OSError as error:
        warn_not_written(path, f"{error.strerror or error}; the run's files are complete")
        return None
    return path


def warn_not_written(path: Path, why: str) -> None:
    print(f"warning: dataset card {path} not written: {why}.", file=sys.stderr)


@dataclass
class RunEntry:
    """What the card says about one run, read from its files."""

    run_name: str
    records: str
    """The records file's name, relative to the folder (as `data_files` takes it)."""
    has_records: bool
    config: dict[str, Any]
    """`config` of the run's `_config.json`: every setting ({} without the file)."""
    filters: dict[str, Any]
    """`filters` of a filtered run's `_config.json`."""
    filtered_from: str | None
    command: str
    stats: dict[str, Any] | None


def describe_run(files: RunFiles) -> RunEntry:
    saved = read_json_object(files.config) or {}
    source = saved.get("filtered_from")
    return RunEntry(
        run_name=files.run_name,
        records=files.records.name,
        has_records=files.records.is_file() and files.records.stat().st_size > 0,
        config=_object(saved.get("config")),
        filters=_object(saved.get("filters")),
        filtered_from=source.get("run") if isinstance(source, dict) else None,
        command=str(saved.get("command") or "unknown"),
        stats=read_json_object(files.stats),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- the card (pure: runs in, text out)


def render_card(runs: list[RunEntry]) -> str:
    """The card's text: the YAML header (configs, tags), the marker, then one section per run."""
    header = {"configs": hub_configs(runs), "tags": TAGS}
    body = [
        "# pettingllms SFT data",
        "",
        "Multi-agent episodes collected with pettingllms; each line of "
        f"`{RECORDS_GLOB}` is one kept agent turn in TRL's conversational format (`messages` + `metadata`). "
        "The episodes, stats and settings of each run are under `runs/`.",
        "",
        "```python",
        "from datasets import load_dataset",
        'every_run = load_dataset("path/to/this/folder")            # the default config: all runs',
        'one_run = load_dataset("path/to/this/folder", "RUN_CONFIG")  # a config below',
        "```",
        "",
        "`trl sft --dataset_name path/to/this/folder` trains on the default config.",
    ]
    if any(run.filtered_from for run in runs):
        body += ["", "A filtered run repeats records of the run it was filtered from: the default config "
                 "holds both, so pick a run's config to train on one of them."]  # fmt: skip
    names = config_names([run.run_name for run in runs])
    for run in runs:
        body += ["", *run_section(run, names[run.run_name])]
    text = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return f"---\n{text}---\n{CARD_MARKER}\n\n" + "\n".join(body) + "\n"


def hub_configs(runs: list[RunEntry]) -> list[dict[str, str]]:
    """The `configs:` of the YAML header: `default` (every records file), then one per run with records."""
    names = config_names([run.run_name for run in runs])
    configs = [{"config_name": "default", "data_files": RECORDS_GLOB}]
    configs += [{"config_name": names[run.run_name], "data_files": run.records} for run in runs if run.has_records]
    return configs


def config_names(run_names: list[str]) -> dict[str, str]:
    """{run name: its config name}: the run name when the Hub accepts it, else a sanitized form.

    A config name must never move to another run when runs come and go (a user's
    `load_dataset(folder, name)` would silently load other data): a valid run name is always its
    own config name, and a sanitized form that another run has too gets a suffix from the run
    name's hash, not from the order of the runs."""
    valid = {name for name in run_names if _CONFIG_NAME.fullmatch(name) and name != "default"}
    sanitized = {
        name: "run_" + re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") for name in run_names if name not in valid
    }
    shared = Counter(sanitized.values())
    names = {name: name for name in valid}
    for name, form in sanitized.items():
        clash = form in valid or shared[form] > 1
        names[name] = f"{form}_{hashlib.sha1(name.encode()).hexdigest()[:8]}" if clash else form
    return names


def run_section(run: RunEntry, config_name: str) -> list[str]:
    """One run's section: a table of its settings and counts."""
    config = run.config
    rows = [("records", f"`{run.records}`" + (f" (config `{config_name}`)" if run.has_records else ""))]
    if run.filtered_from:
        rows.append(("filtered from", f"run `{run.filtered_from}` (`pettingllms filter`)"))
    rows += [
        ("env", describe_env(_object(config.get("env")))),
        ("policies", describe_policies(config)),
        ("filters", describe_filters({**_object(config.get("training")), **run.filters})),
        *count_rows(run.stats),
        ("command", f"`{run.command}`"),
    ]
    lines = [f"## Run `{run.run_name}`", "", "| | |", "| --- | --- |"]
    lines += [f"| {label} | {cell(value)} |" for label, value in rows]
    if run.stats is not None and not run.has_records:
        lines += ["", EMPTY_RUN]
    return lines


def describe_env(env: dict[str, Any]) -> str:
    if not env:
        return "unknown (no `_config.json`)"
    parts = [f"split {env.get('split')}", f"max_turns {env.get('max_turns')}"]
    if env.get("dataset"):
        parts.append(f"dataset {env['dataset']}")
    if env.get("kwargs"):
        parts.append(f"kwargs {env['kwargs']}")
    return f"{env.get('name')} ({', '.join(parts)})"


def describe_policies(config: dict[str, Any]) -> str:
    """Each policy: backend, model, sampling; and which agents play it when agents are mapped."""
    shared = config.get("policy")
    policies = {shared.get("name"): shared} if isinstance(shared, dict) else {}
    policies.update(_object(config.get("policies")))
    if not policies:
        return "unknown"
    parts = []
    for name, policy in policies.items():
        if not isinstance(policy, dict):
            continue
        sampling = ", ".join(f"{key} {policy.get(key)}" for key in ("temperature", "top_p", "max_tokens"))
        parts.append(f"{name} (backend {policy.get('backend')}, model: {model_of(policy)}; {sampling})")
    for agent, settings in _object(config.get("agents")).items():
        if isinstance(settings, dict) and settings.get("policy"):
            parts.append(f"agent {agent} plays {settings['policy']}")
    return "; ".join(parts)


def model_of(policy: dict[str, Any]) -> str:
    if policy.get("backend") == "expert":
        return "the env's expert"
    default = "the tiny built-in model" if policy.get("backend") == "hf" else "unknown"
    return policy.get("model_path") or policy.get("model") or default


def describe_filters(training: dict[str, Any]) -> str:
    shown = [
        f"{key} {json.dumps(training[key])}"
        for key in FILTER_KEYS
        if key in training and (key in FILTER_KEYS[:3] or training[key] not in (None, False, [], {}))
    ]
    return ", ".join(shown) or "unknown"


def count_rows(stats: dict[str, Any] | None) -> list[tuple[str, str]]:
    if stats is None:
        return [("counts", "none yet (the run is going, or stopped before it saved its stats)")]
    removed = ", ".join(f"{reason} {count}" for reason, count in (stats.get("removed") or {}).items()) or "none"
    episodes = f"{stats.get('total_episodes')} ({stats.get('successful_episodes')} successful"
    rate = stats.get("success_rate")
    episodes += f", success rate {rate:.2f})" if isinstance(rate, int | float) else ")"
    return [
        ("episodes", episodes),
        ("records kept", f"{stats.get('kept_records')} of {stats.get('total_records')} agent turns"),
        ("removed", removed),
    ]


def cell(value: str) -> str:
    """A table cell: one line, with `|` escaped so it cannot split the row."""
    return " ".join(str(value).split()).replace("|", "\\|")
