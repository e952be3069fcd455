"""Records -> training samples: reading, selection, thinking removal, prompt/completion pairs.

Everything here is a pure function except the two explicit readers (`expand_paths`,
`read_records`), so `train` and `stats` can share it and tests need no model.

A *record* is one kept agent turn, as collection writes it (see docs/data-format.md):

    {"messages": [..., {"role": "assistant", "content": "..."}], "metadata": {...}}

`read_records` also accepts plain rows `{"prompt": ..., "response": ...}` (or `completion`
instead of `response`), rows whose columns have other names (`Columns`, from the
`training.sft_config.*_key` settings: RAGEN's `input`/`output`, Alpaca's `instruction`/`output`),
JSONL, Parquet and JSON-array files, and turns them all into the same shape, so the rest of the
stage sees one format. A top-level `reward` or `success` (AgentRL-style rows) stands in for
`metadata.reward` / `metadata.env_success` when the metadata lacks them.
A *sample* is what TRL's `SFTTrainer` gets: a conversational prompt-completion pair,

    {"prompt": [messages before the reply], "completion": [{"role": "assistant", ...}]}

Only the last assistant message of a record is trained on. Earlier assistant messages in a
record are context: the agent's own earlier turns are records of their own (training on
them again would count them twice), and other agents' turns are not this agent's to learn.
"""

from __future__ import annotations

import glob
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pettingllms.config.sft import KEY, SFTSettings
from pettingllms.exceptions import DataError
from pettingllms.jsonl import read_jsonl

ACCEPTED_FORMATS = (
    "'messages' (a list of {role, content}, the last one from the assistant) with optional 'metadata', "
    "or 'prompt' with 'response' or 'completion' (other column names: set training.sft_config.messages_key, "
    "or prompt_key and response_key)"
)
ROLES = ("system", "user", "assistant", "tool")
"""The roles chat templates know; any other is a typo that a template would render silently."""
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


# ---------------------------------------------------------------- reading (the only I/O)


def expand_paths(patterns: list[str]) -> list[Path]:
    """The data files named by `patterns` (paths or globs), in order, each once."""
    files: list[Path] = []
    for pattern in patterns:
        if _GLOB_CHARACTERS.search(pattern):
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
            if not matches:
                raise DataError(f"No data file matches '{pattern}'.")
        elif Path(pattern).is_dir():
            raise DataError(f"'{pattern}' is a folder; pass data files or a glob such as '{pattern}/sft_data_*.jsonl'.")
        elif not Path(pattern).is_file():
            raise DataError(f"Data file not found: '{pattern}'.")
        else:
            matches = [Path(pattern)]
        files.extend(path for path in matches if path not in files)
    return files


@dataclass(frozen=True)
class Columns:
    """Which columns of a row hold the conversation and the reward (None: the usual names, see `normalize_record`)."""

    messages: str | None = None
    prompt: str | None = None
    response: str | None = None
    reward: str | None = None

    @classmethod
    def of(cls, settings: SFTSettings | None) -> Columns:
        if settings is None:
            return cls()
        return cls(settings.messages_key, settings.prompt_key, settings.response_key, settings.reward_key)


def read_records(paths: list[str], settings: SFTSettings | None = None) -> list[dict[str, Any]]:
    """Every record in the JSONL / JSON / Parquet files named by `paths` (paths or globs).

    Each returned record has `messages`, `metadata` and `source` ("file:line", for messages
    that point back at the data). `settings` gives the column names (`messages_key`,
    `prompt_key`, `response_key`, `reward_key`); without it the usual names are read.
    """
    columns = Columns.of(settings)
    records = []
    for path in expand_paths(paths):
        rows = read_rows(path)
        if not rows:
            raise DataError(f"Data file '{path}' is empty: it holds no records.")
        records.extend(normalize_record(row, where, columns) for row, where in rows)
    return in_episode_order(records)


EPISODE_ORDER_KEYS = ("env_name", "env_idx", "rollout_idx", "turn_idx")


def in_episode_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collected records sorted by task, sample and turn; other data as it was read.

    Collection writes episodes in the order they finish, which changes with concurrency and
    machine load. Training shuffles with a fixed seed, so a fixed input order makes the same
    records train the same model, however they were collected (or sharded).
    """

    def key(record: dict[str, Any]) -> tuple[Any, ...] | None:
        values = tuple(record["metadata"].get(name) for name in EPISODE_ORDER_KEYS)
        typed = isinstance(values[0], str) and all(type(value) is int for value in values[1:])
        return values if typed else None

    keys = [key(record) for record in records]
    if None in keys:
        return records
    return [record for _, record in sorted(zip(keys, records, strict=True), key=lambda pair: pair[0])]


def read_rows(path: Path) -> list[tuple[Any, str]]:
    """(row, where) for each row of `path`: `.parquet` is Parquet, `.json` a JSON array (or JSONL), others JSONL."""
    if path.suffix == ".parquet":
        return _read_parquet_rows(path)
    if path.suffix == ".json":
        return _read_json_rows(path)
    return _read_jsonl_rows(path)


def _read_jsonl_rows(path: Path) -> list[tuple[Any, str]]:
    return list(read_jsonl(path))


def _read_json_rows(path: Path) -> list[tuple[Any, str]]:
    """A `.json` file: an array of rows (numbered from 1 as "file item N"), else JSONL under another name."""
    data = path.read_bytes()
    if not data.lstrip().startswith(b"["):
        return _read_jsonl_rows(path)
    try:
        rows = json.loads(data)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; the file was damaged.") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno}).") from None
    except (ValueError, RecursionError) as error:  # huge integers, absurd nesting
        raise DataError(f"{path}: unreadable JSON ({type(error).__name__}).") from None
    return [(row, f"{path} item {number}") for number, row in enumerate(rows, start=1)]


def _read_parquet_rows(path: Path) -> list[tuple[Any, str]]:
    import pyarrow
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except pyarrow.ArrowException as error:
        raise DataError(f"{path}: not a readable Parquet file ({error}).") from None
    # Parquet rows are numbered from 1, like JSONL lines, so messages read the same.
    return [(row, f"{path}:{number}") for number, row in enumerate(table.to_pylist(), start=1)]


# ---------------------------------------------------------------- records


def normalize_record(row: Any, where: str, columns: Columns = Columns()) -> dict[str, Any]:
    """One raw row as a record `{"messages", "metadata", "source"}`; `where` is "file:line".

    Without column names the row is `messages`, or `prompt` with `response` or `completion`.
    With `columns.messages` the conversation is that column; with `columns.prompt` and/or
    `columns.response` it is that pair (the other one keeps its usual name). A named column the
    row lacks is an error that lists the row's columns.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: not a training record (found {type(row).__name__}); expected {ACCEPTED_FORMATS}.")
    if columns.messages:
        messages = _column(row, columns.messages, "messages_key", where)
    elif columns.prompt or columns.response:
        prompt = _column(row, columns.prompt, "prompt_key", where) if columns.prompt else row.get("prompt")
        reply = _column(row, columns.response, "response_key", where) if columns.response else _reply_of(row)
        if prompt is None or reply is None:
            missing = "prompt_key" if prompt is None else "response_key"
            raise DataError(
                f"{where}: no {missing.removesuffix('_key')} column (found {sorted(row)}); "
                f"set {KEY}.{missing} to the column that holds it."
            )
        messages = _as_messages(prompt, "user", where) + _as_messages(reply, "assistant", where)
    elif row.get("messages") is not None:
        messages = row["messages"]
    elif row.get("prompt") is not None and _reply_of(row) is not None:
        messages = _as_messages(row["prompt"], "user", where) + _as_messages(_reply_of(row), "assistant", where)
    else:
        raise DataError(f"{where}: not a training record (found {sorted(row)}); expected {ACCEPTED_FORMATS}.")
    _check_messages(messages, where)
    # Only role and content are kept: `datasets` gives every message the union of all keys
    # (None where absent), and templates that test `message.tool_calls is defined` break on that.
    messages = [{"role": message["role"], "content": message["content"]} for message in messages]
    metadata = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    if columns.reward:
        metadata["reward"] = _column(row, columns.reward, "reward_key", where)
    elif "reward" not in metadata and row.get("reward") is not None:
        metadata["reward"] = row["reward"]
    if "env_success" not in metadata and isinstance(row.get("success"), bool):
        metadata["env_success"] = row["success"]
    return {"messages": messages, "metadata": metadata, "source": where}


def _column(row: dict[str, Any], name: str, setting: str, where: str) -> Any:
    """`row[name]`, or a DataError naming the setting that asked for it and the columns the row has."""
    if row.get(name) is None:
        found = "is null" if name in row else "is not a column"
        raise DataError(f"{where}: {KEY}.{setting}={name!r} {found} here; the row's columns: {', '.join(sorted(row))}.")
    return row[name]


def _reply_of(row: dict[str, Any]) -> Any:
    return row["response"] if row.get("response") is not None else row.get("completion")


def _as_messages(value: Any, role: str, where: str) -> list[dict[str, Any]]:
    # A plain string becomes one chat message, so the model's chat template frames it.
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise DataError(f"{where}: the {role} text must be a string or a list of messages, not {type(value).__name__}.")


def _check_messages(messages: Any, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}.")
    for number, message in enumerate(messages, start=1):
        if not (isinstance(message, dict) and all(isinstance(message.get(key), str) for key in ("role", "content"))):
            raise DataError(f"{where}: every message needs a string 'role' and 'content', got {message!r:.80}.")
        if message["role"] not in ROLES:
            raise DataError(
                f"{where}: message {number} has role {message['role']!r:.40}; expected one of {', '.join(ROLES)}."
            )
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's reply, got role '{messages[-1]['role']}'.")
    # The reply is trained as the answer to a prompt; with none, TRL fails deep inside (IndexError).
    if all(message["role"] == "assistant" for message in messages[:-1]):
        raise DataError(f"{where}: the reply has no prompt; put at least one system, user or tool message before it.")


# ---------------------------------------------------------------- selection


@dataclass
class SelectionReport:
    """How many records each metadata filter removed, in the order they ran."""

    total: int
    removed: dict[str, int] = field(default_factory=dict)
    selected: int = 0

    def describe(self) -> str:
        filters = "; ".join(f"{name} removed {count}" for name, count in self.removed.items())
        return f"{self.selected} of {self.total} records selected" + (f" ({filters})" if filters else "")


def record_filters(settings: SFTSettings) -> list[tuple[str, Callable[[dict[str, Any]], bool]]]:
    """The active metadata filters as (description, keep-record predicate), in the order they run."""
    agents, policies = list(settings.agents), list(settings.policies)
    filters = []
    if agents:
        filters.append((f"agents={agents}", lambda r: r["metadata"].get("agent_name") in agents))
    if policies:
        filters.append((f"policies={policies}", lambda r: r["metadata"].get("policy_name") in policies))
    if settings.env_success is not None:
        wanted = settings.env_success
        filters.append((f"env_success={wanted}", lambda r: r["metadata"].get("env_success") == wanted))
    if settings.min_reward is not None:
        threshold = settings.min_reward
        filters.append((f"min_reward={threshold}", lambda r: _reward(r) >= threshold))
    return filters


def _reward(record: dict[str, Any]) -> float:
    """The record's combined reward when a judge scored it (`metadata.combined_reward`), else `metadata.reward`."""
    metadata = record["metadata"]
    reward = metadata.get("combined_reward")
    reward = reward if isinstance(reward, int | float) else metadata.get("reward")
    return float(reward) if isinstance(reward, int | float) else float("-inf")


def select_records(
    records: list[dict[str, Any]], settings: SFTSettings
) -> tuple[list[dict[str, Any]], SelectionReport]:
    """The records that pass every metadata filter of `settings`, and what each filter removed."""
    report = SelectionReport(total=len(records))
    selected = records
    for name, keep in record_filters(settings):
        kept = [record for record in selected if keep(record)]
        report.removed[name] = len(selected) - len(kept)
        selected = kept
    report.selected = len(selected)
    if not selected:
        raise DataError(f"No records left to train on: {report.describe()}.")
    return selected, report


def group_by_policy(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records keyed by `metadata.policy_name`, for one adapter per policy."""
    missing = [record["source"] for record in records if not record["metadata"].get("policy_name")]
    if missing:
        raise DataError(
            f"per_policy needs 'metadata.policy_name' in every record; {len(missing)} have none (first: {missing[0]})."
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["metadata"]["policy_name"], []).append(record)
    return groups


# ---------------------------------------------------------------- samples

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_ELEMENT = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def strip_thinking(text: str) -> str:
    """`text` without its `<think>...</think>` blocks, as the reply a user would see.

    Two unbalanced cases, both seen in real model output:
    - a `</think>` with no opening tag: templates such as DeepSeek-R1's open the block in the
      generation prompt, so the reply starts inside it; everything up to `</think>` goes.
    - a `<think>` that never closes: the reply ran out inside its thought; from `<think>` to
      the end goes (often leaving nothing, and such a sample is then dropped).
    Leading whitespace left behind by a removed block is removed too.
    """
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.lstrip()


def unwrap_answer(text: str) -> str:
    """`text` with each `<answer>...</answer>` element replaced by its (stripped) text; the rest as written."""
    return _ANSWER_ELEMENT.sub(lambda match: match[1].strip(), text)


def answer_only(text: str) -> str:
    """The reply as `thinking="strip"` trains it: no `<think>` blocks, the `<answer>` element unwrapped.

    `<think>plan</think><answer>Up</answer>` becomes `Up`, the answer a user would be shown.
    """
    return unwrap_answer(strip_thinking(text))


def to_prompt_completion(record: dict[str, Any], thinking: str = "keep") -> dict[str, list[dict[str, str]]]:
    """A record as TRL's conversational prompt-completion sample; the reply is the last message.

    With `thinking="strip"` the reply is `answer_only` (the prompt is left as is: it is
    context, and the model saw it that way).
    """
    *prompt, reply = record["messages"]
    content = answer_only(reply["content"]) if thinking == "strip" else reply["content"]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": content}]}


def build_samples(
    records: list[dict[str, Any]],
    thinking: str,
    max_length: int,
    count_tokens: Callable[[dict[str, Any]], int],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Training samples from `records`, and how many were dropped for which reason.

    `count_tokens(sample)` gives a sample's length with the chat template applied. A sample
    longer than `max_length` is dropped whole, never truncated: a cut reply would teach the
    model to stop mid-answer.
    """
    samples, dropped = [], {"empty_reply": 0, "too_long": 0}
    for record in records:
        sample = to_prompt_completion(record, thinking)
        if not sample["completion"][0]["content"].strip():
            dropped["empty_reply"] += 1
        elif count_tokens(sample) > max_length:
            dropped["too_long"] += 1
        else:
            samples.append(sample)
    return samples, dropped


def split_eval(samples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, eval): a seeded random `fraction` of `samples` held out, at least one sample on each side."""
    if fraction <= 0:
        return samples, []
    if not 0 < fraction < 1 or len(samples) < 2:
        raise DataError(
            f"eval_split={fraction} needs a fraction between 0 and 1 and at least 2 samples, got {len(samples)}."
        )
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    count = min(len(samples) - 1, max(1, round(fraction * len(samples))))
    held_out = set(order[:count])
    train = [sample for index, sample in enumerate(samples) if index not in held_out]
    return train, [sample for index, sample in enumerate(samples) if index in held_out]
