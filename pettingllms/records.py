"""Pure data shaping for collection: episode -> training records, the filters, the stats.

No I/O here. An *episode* is the JSON-ready dict the runner writes to `rollouts_<run>.jsonl`;
a *record* is one kept agent turn in TRL's conversational format (DESIGN.md). Because every
record is derived from an episode, filtering again never needs new rollouts:
`pettingllms stats` and a resumed run rebuild records from the rollouts file with these
same functions.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Episode = dict[str, Any]
Record = dict[str, Any]


def turn_is_successful(episode: Episode, turn: dict[str, Any], collect_mode: str) -> bool:
    """Episode success (`collect_mode='env'`), or the acting agent's own success ('agent')."""
    if collect_mode == "agent":
        return bool(episode["agent_success"].get(turn["agent"]))
    return bool(episode["success"])


def make_record(episode: Episode, turn: dict[str, Any]) -> Record:
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

    def _drop_reason(self, episode: Episode, turn: dict[str, Any]) -> str | None:
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
