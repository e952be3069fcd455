"""Pure data shaping for collection: the episode and record schemas, episode -> records, filters, stats.

No I/O here. An `Episode` is what the runner writes, one per line, to `rollouts_<run>.jsonl`;
a `Record` is one kept agent turn in TRL's conversational format. Both are described field by
field in `docs/data-format.md`. Because every record is derived from an episode, filtering again
never needs new rollouts: `pettingllms stats` and a resumed run rebuild records from the
rollouts file with these same functions.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pettingllms.exceptions import DataError


class Message(TypedDict):
    role: str
    content: str


class EpisodeError(TypedDict):
    kind: str
    """`http_5xx`, `timeout`, `sandbox_error`, `env_error`...: what stopped the episode."""
    message: str


class Turn(TypedDict):
    """One agent's reply and what the environment made of it."""

    turn_idx: int
    agent: str
    policy_name: str
    trainable: bool
    messages: list[Message]
    response: str
    prompt_text: str | None
    reward: float
    valid: bool
    parse_error: str | None
    details: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    generate_s: float
    step_s: float


class Episode(TypedDict):
    """One episode, kept or not: a line of `rollouts_<run>.jsonl`."""

    episode_id: str
    env_name: str
    env_idx: int
    rollout_idx: int
    seed: int
    task_id: str | None
    success: bool
    agent_success: dict[str, bool | None]
    terminated: bool
    truncated: bool
    error: EpisodeError | None
    turns: list[Turn]
    wall_time_s: float


class RecordMetadata(TypedDict):
    agent_name: str
    policy_name: str
    reward: float
    env_success: bool
    agent_success: bool | None
    env_name: str
    env_idx: int
    rollout_idx: int
    turn_idx: int
    episode_id: str
    task_id: str | None
    seed: int


class Record(TypedDict):
    """One kept agent turn: a line of `sft_data_<run>.jsonl`."""

    messages: list[Message]
    metadata: RecordMetadata


_EPISODE_TYPES = {
    "episode_id": str,
    "env_name": str,
    "env_idx": int,
    "rollout_idx": int,
    "seed": int,
    "success": bool,
    "agent_success": dict,
    "turns": list,
}
_TURN_TYPES = {
    "turn_idx": int,
    "agent": str,
    "policy_name": str,
    "trainable": bool,
    "messages": list,
    "response": str,
    "valid": bool,
}


def check_episode(episode: Any, where: str) -> Episode:
    """`episode` if it has every field the filters and stats read, else a DataError naming `where`."""
    if not isinstance(episode, dict) or not isinstance(episode.get("episode_id"), str):
        raise DataError(f"{where} is not an episode (no episode_id); is this a rollouts file?")
    _check_fields(episode, _EPISODE_TYPES, where, "episode")
    for number, turn in enumerate(episode["turns"]):
        if not isinstance(turn, dict):
            raise DataError(f"{where}: turn {number} of the episode is not an object; the file was damaged.")
        _check_fields(turn, _TURN_TYPES, where, f"turn {number}")
    error = episode.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("kind"), str)):
        raise DataError(f"{where}: the episode's 'error' has no 'kind'; the file was damaged.")
    return episode


def _check_fields(row: dict[str, Any], types: dict[str, type], where: str, what: str) -> None:
    for name, expected in types.items():
        value = row.get(name)
        # bool is an int to Python; a count or index must not be a bool, nor a flag a number.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            found = "missing" if name not in row else f"a {type(value).__name__}"
            raise DataError(
                f"{where}: the {what}'s '{name}' is {found}, expected a {expected.__name__}; the file was damaged."
            )


def turn_is_successful(episode: Episode, turn: Turn, collect_mode: str) -> bool:
    """Episode success (`collect_mode='env'`), or the acting agent's own success ('agent')."""
    if collect_mode == "agent":
        return bool(episode["agent_success"].get(turn["agent"]))
    return bool(episode["success"])


def make_record(episode: Episode, turn: Turn) -> Record:
    """One agent turn as a training record: the prompt the agent saw plus its reply."""
    messages = [*turn["messages"], {"role": "assistant", "content": turn["response"]}]
    metadata = {
        "agent_name": turn["agent"],
        "policy_name": turn["policy_name"],
        "reward": turn["reward"],
        "env_success": episode["success"],
        "agent_success": episode["agent_success"].get(turn["agent"]),
        "env_name": episode["env_name"],
        "env_idx": episode["env_idx"],
        "rollout_idx": episode["rollout_idx"],
        "turn_idx": turn["turn_idx"],
        "episode_id": episode["episode_id"],
        "task_id": episode["task_id"],
        "seed": episode["seed"],
    }
    return {"messages": messages, "metadata": metadata}


@dataclass
class RecordFilter:
    """Decides which turns become records; remembers what it kept (dedup, caps) and why it dropped the rest.

    Dedup and the per-task cap keep the first records that arrive, and episodes finish in
    whatever order the concurrent workers end them: with either on, which of two equal or
    surplus records is kept may differ between two runs of the same config; how many are
    kept, and so the stats, do not.
    """

    only_success: bool = True
    collect_mode: str = "env"
    dedup: bool = False
    max_records_per_task: int | None = None
    removed: Counter = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)
    _per_task: Counter = field(default_factory=Counter)

    def keep(self, episode: Episode) -> list[Record]:
        """The records to write for a finished episode, updating the filter's memory."""
        kept = []
        for turn in episode["turns"]:
            reason = self._drop_reason(episode, turn)
            if reason:
                self.removed[reason] += 1
                continue
            record = make_record(episode, turn)
            self._seen.add(record_key(record))
            self._per_task[episode["task_id"]] += 1
            kept.append(record)
        return kept

    def _drop_reason(self, episode: Episode, turn: Turn) -> str | None:
        if episode.get("error"):
            return "error_episode"
        if not turn["trainable"]:
            return "not_trainable"
        if self.only_success and not turn_is_successful(episode, turn, self.collect_mode):
            return "not_successful"
        if self.dedup and record_key(make_record(episode, turn)) in self._seen:
            return "duplicate"
        cap = self.max_records_per_task
        if cap is not None and self._per_task[episode["task_id"]] >= cap:
            return "max_records_per_task"
        return None


def record_key(record: Record) -> str:
    """Hash of (agent, prompt, response): two records with the same key teach the same thing."""
    payload = json.dumps([record["metadata"]["agent_name"], record["messages"]], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def summarize_lengths(values: list[int]) -> dict[str, float]:
    """min / mean / p50 / p95 / max of a list of lengths (zeros when empty)."""
    if not values:
        return {"min": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": pick(0.5),
        "p95": pick(0.95),
        "max": ordered[-1],
    }


@dataclass
class CollectionStats:
    """Counts of what really happened: episodes are episodes, records are agent turns."""

    env_name: str
    run_name: str
    episodes: int = 0
    successful: int = 0
    errors: Counter = field(default_factory=Counter)
    turns: int = 0
    invalid_actions: int = 0
    kept: int = 0
    per_agent: dict[str, Counter] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    record_chars: list[int] = field(default_factory=list)
    record_tokens: list[int] = field(default_factory=list)

    def add(self, episode: Episode, kept: list[Record], record_tokens: list[int] | None = None) -> None:
        """Count one finished episode and the records kept from it."""
        self.episodes += 1
        self.successful += bool(episode["success"]) and not episode.get("error")
        if episode.get("error"):
            self.errors[episode["error"]["kind"]] += 1
        for turn in episode["turns"]:
            self.turns += 1
            self.invalid_actions += not turn["valid"]
            self.prompt_tokens += turn.get("prompt_tokens") or 0
            self.completion_tokens += turn.get("completion_tokens") or 0
            self.per_agent.setdefault(turn["agent"], Counter())["collected"] += 1
        for record in kept:
            self.kept += 1
            self.per_agent.setdefault(record["metadata"]["agent_name"], Counter())["kept"] += 1
            self.record_chars.append(sum(len(m["content"]) for m in record["messages"]))
        self.record_tokens += record_tokens or []

    def to_dict(self, wall_time_s: float, removed: Counter, tokenizer_name: str | None = None) -> dict[str, Any]:
        """The stats file's content."""
        return {
            "env_name": self.env_name,
            "run_name": self.run_name,
            "total_episodes": self.episodes,
            "successful_episodes": self.successful,
            "failed_episodes": self.episodes - self.successful - sum(self.errors.values()),
            "error_episodes": sum(self.errors.values()),
            "success_rate": round(self.successful / self.episodes, 4) if self.episodes else 0.0,
            "total_records": self.turns,
            "kept_records": self.kept,
            "invalid_actions": self.invalid_actions,
            "per_agent": {
                agent: {"collected": c["collected"], "kept": c["kept"]} for agent, c in sorted(self.per_agent.items())
            },
            "removed": dict(sorted(removed.items())),
            "errors": dict(sorted(self.errors.items())),
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "wall_time_s": round(wall_time_s, 3),
            "episodes_per_s": round(self.episodes / wall_time_s, 3) if wall_time_s > 0 else 0.0,
            "kept_record_chars": summarize_lengths(self.record_chars),
            "kept_record_tokens": (
                {"tokenizer": tokenizer_name, **summarize_lengths(self.record_tokens)} if tokenizer_name else None
            ),
        }
