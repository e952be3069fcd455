"""Pure data shaping for collection: the episode and record schemas, episode -> records, filters, stats.

No I/O here. An `Episode` is what the runner writes, one per line, to `rollouts_<run>.jsonl`;
a `Record` is one kept agent turn in TRL's conversational format. Both are described field by
field in `docs/data-format.md`. Because every record is derived from an episode, filtering again
never needs new rollouts: `pettingllms stats`, `pettingllms filter` (other settings) and a
resumed run rebuild records from the rollouts file with these same functions.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections import Counter
from collections.abc import Collection
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


COLLECTION_FILTER_KEYS = (
    "only_success",
    "collect_mode",
    "dedup",
    "near_dedup_threshold",
    "max_records_per_task",
    "drop_truncated",
    "drop_crashed_programs",
    "max_reply_chars",
    "max_invalid_actions",
)
"""The `training.*` settings that decide which turns collection keeps (the `RecordFilter` fields of the same
names); `RecordFilter.from_settings` reads them, a missing one is off."""
DROP_REASONS = (
    "error_episode",
    "not_trainable",
    "not_successful",
    "agent_not_selected",
    "reward_below_min",
    "too_many_invalid_actions",
    "truncated",
    "crashed_program",
    "reply_too_long",
    "duplicate",
    "near_duplicate",
    "max_records_per_task",
)
"""Why a turn was not kept, in the order they are checked: the first that applies is counted."""


@dataclass
class RecordFilter:
    """Decides which turns become records; remembers what it kept (dedup, caps) and why it dropped the rest.

    Dedup, near-dedup and the per-task cap keep the first records that arrive, and episodes
    finish in whatever order the concurrent workers end them: with any of them on, which of two
    equal or surplus records is kept may differ between two runs of the same config; how many
    are kept, and so the stats, do not. Every check reads the episode alone (no model, no I/O),
    so `pettingllms filter` can apply other settings to a saved run's rollouts.
    """

    only_success: bool = True
    collect_mode: str = "env"
    dedup: bool = False
    max_records_per_task: int | None = None
    near_dedup_threshold: float | None = None
    """Drop a reply whose word-3-gram Jaccard similarity to a kept reply of the same task and agent is at least this."""
    drop_truncated: bool = False
    """Drop replies cut by the token limit (`finish_reason == "length"`)."""
    drop_crashed_programs: bool = False
    """Drop turns whose own program crashed, timed out or was stopped (see `program_crashed`)."""
    max_reply_chars: int | None = None
    max_invalid_actions: int | None = None
    """Drop every turn of an episode with more invalid replies (`valid` false, all agents) than this."""
    agents: tuple[str, ...] = ()
    """Keep only these agents' turns (empty: all). Set by `pettingllms filter`, not by collection."""
    min_reward: float | None = None
    """Keep only turns whose reward is at least this. Set by `pettingllms filter`, not by collection."""
    removed: Counter = field(default_factory=Counter)
    _seen: set[str] = field(default_factory=set)
    _per_task: Counter = field(default_factory=Counter)
    _near: NearDuplicateIndex | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.agents = tuple(self.agents)
        if self.near_dedup_threshold is not None:
            self._near = NearDuplicateIndex(self.near_dedup_threshold)

    @classmethod
    def from_settings(cls, training: Any, **extra: Any) -> RecordFilter:
        """The filter of `training` settings: a `TrainingConfig`, or a saved run's `config.training` dict.

        Keys a run saved before they existed are off, so old runs filter as they were collected.
        """
        values = training if isinstance(training, dict) else vars(training)
        return cls(**{key: values[key] for key in COLLECTION_FILTER_KEYS if key in values}, **extra)

    def settings(self) -> dict[str, Any]:
        """The filter's settings (not its memory), JSON-ready."""
        values = {name: getattr(self, name) for name in COLLECTION_FILTER_KEYS}
        return {**values, "agents": list(self.agents), "min_reward": self.min_reward}

    def keep(self, episode: Episode) -> list[Record]:
        """The records to write for a finished episode, updating the filter's memory."""
        kept = []
        too_many_invalid = self._too_many_invalid(episode)
        for turn in episode["turns"]:
            reason = "too_many_invalid_actions" if too_many_invalid else None
            reason = self._early_reason(episode, turn) or reason or self._late_reason(episode, turn)
            if reason:
                self.removed[reason] += 1
                continue
            record = make_record(episode, turn)
            self._seen.add(record_key(record))
            self._per_task[episode["task_id"]] += 1
            if self._near is not None:
                self._near.add(near_duplicate_group(episode, turn), turn["response"])
            kept.append(record)
        return kept

    def _too_many_invalid(self, episode: Episode) -> bool:
        limit = self.max_invalid_actions
        return limit is not None and sum(not turn["valid"] for turn in episode["turns"]) > limit

    def _early_reason(self, episode: Episode, turn: Turn) -> str | None:
        """Reasons that come before the episode-wide invalid-action count."""
        if episode.get("error"):
            return "error_episode"
        if not turn["trainable"]:
            return "not_trainable"
        if self.only_success and not turn_is_successful(episode, turn, self.collect_mode):
            return "not_successful"
        if self.agents and turn["agent"] not in self.agents:
            return "agent_not_selected"
        if self.min_reward is not None and not turn["reward"] >= self.min_reward:
            return "reward_below_min"
        return None

    def _late_reason(self, episode: Episode, turn: Turn) -> str | None:
        if self.drop_truncated and turn.get("finish_reason") == "length":
            return "truncated"
        if self.drop_crashed_programs and program_crashed(turn.get("details") or {}):
            return "crashed_program"
        if self.max_reply_chars is not None and len(turn["response"]) > self.max_reply_chars:
            return "reply_too_long"
        if self.dedup and record_key(make_record(episode, turn)) in self._seen:
            return "duplicate"
        if self._near is not None and self._near.contains(near_duplicate_group(episode, turn), turn["response"]):
            return "near_duplicate"
        cap = self.max_records_per_task
        if cap is not None and self._per_task[episode["task_id"]] >= cap:
            return "max_records_per_task"
        return None


# ---------------------------------------------------------------- crashed programs

OWN_PROGRAM_RUNS = ("program",)
"""`details` keys holding a run of the turn's own program where any failure is a crash (math's tool agent)."""
TESTED_PROGRAM_RUNS = ("ground_truth", "reference_agreement")
"""`details` keys holding a run of the turn's program against trusted tests or a trusted reference (the code
env): a failed `assert` there is a wrong answer, not a crash; any other error is."""


def program_crashed(details: dict[str, Any]) -> bool:
    """Whether the program this turn wrote crashed, as the env's turn `details` record it.

    - planning envs (sokoban, plan_path, sudoku), tool agent: `details` is the run itself
      (`returncode`, `timed_out`, `stopped_for`); a non-zero exit, a time-out or a stop is a crash;
    - math env, tool agent: the run is `details["program"]`, judged the same way;
    - code env: the code generator's solution is run on the hidden tests (`ground_truth`), the
      test generator's tests on the reference (`reference_agreement`); a time-out, a stop, or an
      exit that is not a failed `assert` is a crash. The tests run on the other agent's latest
      work (`generated_tests`) are not looked at: a failure there may be the other agent's.
    Turns without a program run (a planner's plan, a reasoning reply) never crashed.
    """
    runs = [(details, False)] if "returncode" in details else []
    runs += [(details[key], False) for key in OWN_PROGRAM_RUNS if isinstance(details.get(key), dict)]
    runs += [(details[key], True) for key in TESTED_PROGRAM_RUNS if isinstance(details.get(key), dict)]
    return any(_run_crashed(run, tested) for run, tested in runs)


def _run_crashed(run: dict[str, Any], tested: bool) -> bool:
    if run.get("timed_out") or run.get("stopped_for"):
        return True
    returncode = run.get("returncode")
    if returncode in (0, None):
        return False
    if not tested:
        return True
    # A hidden test that fails raises AssertionError: the program ran, its answer was wrong.
    lines = str(run.get("stderr_tail") or "").strip().splitlines()
    return not (lines and lines[-1].split(":")[0].strip().endswith("AssertionError"))


# ---------------------------------------------------------------- near-duplicates


def shingles(text: str) -> frozenset[int]:
    """The word 3-grams of `text` (lowercased, split on any whitespace), as hashes; a shorter text is one shingle.

    Hashes rather than strings keep the sets small and the comparisons fast; two different
    3-grams of one group sharing a 64-bit hash is too unlikely to matter.
    """
    words = text.lower().split()
    if len(words) < 3:
        return frozenset([hash(tuple(words))])
    return frozenset(map(hash, zip(words, words[1:], words[2:])))


def jaccard(first: frozenset[int], second: Collection[int]) -> float:
    """|A & B| / |A | B| of two sets of shingles (`second` may be any collection without repeats)."""
    common = len(first.intersection(second))
    return common / (len(first) + len(second) - common)


def near_duplicate_group(episode: Episode, turn: Turn) -> tuple[Any, str]:
    """Replies are compared within one task and agent: (task_id, or the seed when the env names no task; agent)."""
    task = episode["task_id"] if episode["task_id"] is not None else f"seed {episode['seed']}"
    return task, turn["agent"]


class NearDuplicateIndex:
    """Kept replies per group, answering exactly: is a kept reply's Jaccard similarity to this one >= threshold?

    Comparing a reply with every kept one is quadratic. A prefix filter (as in set-similarity
    joins: Bayardo et al., "Scaling up all pairs similarity search", 2007) makes it close to
    linear: with every set's shingles sorted in one shared order, two sets of similarity >= t
    share a shingle among the first `|A| - floor(t |A|) + 1` shingles of each. Only the kept
    replies that share one of those, and whose sizes allow the threshold, are compared in full.
    The order decides only how many candidates are compared, never the answer; see `_Group`.
    """

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._groups: dict[Any, _Group] = {}
        self._last: tuple[str, frozenset[int]] | None = None

    def _shingles(self, text: str) -> frozenset[int]:
        # `contains` then `add` for the same reply: shingle it once.
        if self._last is None or self._last[0] != text:
            self._last = (text, shingles(text))
        return self._last[1]

    def contains(self, group: Any, text: str) -> bool:
        """Whether a kept reply of `group` is near-identical to `text`."""
        kept = self._groups.get(group)
        return kept is not None and kept.contains(self._shingles(text), self.threshold)

    def add(self, group: Any, text: str) -> None:
        """Remember `text` as a kept reply of `group`."""
        self._groups.setdefault(group, _Group()).add(self._shingles(text), self.threshold)


class _Group:
    """The kept shingle sets of one (task, agent), indexed by their prefixes.

    The shared order puts shingles that several kept replies hold (text every reply shares: a
    code template, an answer format) last, by how many hold them, so that they stay outside the
    prefixes and do not make every kept reply a candidate; the others come first, by value. The
    counts are taken from up to `SAMPLE` kept replies whenever the group doubles in size (from 32
    on), and the index is rebuilt in the new order: amortized, a constant cost per reply.
    Kept sets are stored as arrays of 8-byte hashes (a set of Python ints takes about 8 times more).
    """

    SAMPLE = 64

    def __init__(self) -> None:
        self.sets: list[array] = []
        self.index: dict[int, list[int]] = {}
        self.shared: dict[int, int] = {}
        """The order's counts: shingle -> sampled kept sets holding it, for those held by two or more."""
        self.next_rebuild = 32
        self._probed: tuple[frozenset[int], list[int]] | None = None

    def prefix(self, items: frozenset[int], threshold: float) -> list[int]:
        # floor, not the lemma's ceil: a longer prefix is as correct, and immune to float rounding.
        length = len(items) - math.floor(threshold * len(items)) + 1
        shared = self.shared
        rare = sorted(items.difference(shared))  # a dict argument: looked up, not iterated
        if len(rare) >= length:
            return rare[:length]
        common = sorted(items.difference(rare), key=lambda item: (shared[item], item))
        return (rare + common)[:length]

    def contains(self, candidate: frozenset[int], threshold: float) -> bool:
        prefix = self.prefix(candidate, threshold)
        self._probed = (candidate, prefix)  # `add` usually follows: sort once
        checked: set[int] = set()
        for item in prefix:
            for number in self.index.get(item, ()):
                if number in checked:
                    continue
                checked.add(number)
                other = self.sets[number]
                small, large = sorted((len(candidate), len(other)))  # J <= small / large
                if small / large >= threshold and jaccard(candidate, other) >= threshold:
                    return True
        return False

    def add(self, items: frozenset[int], threshold: float) -> None:
        self.sets.append(array("q", items))
        if len(self.sets) < self.next_rebuild:
            probed = self._probed
            prefix = probed[1] if probed is not None and probed[0] is items else self.prefix(items, threshold)
            self._index(len(self.sets) - 1, prefix)
            return
        self.next_rebuild *= 2
        counts: Counter = Counter()
        for kept in self.sets[:: len(self.sets) // self.SAMPLE or 1]:
            counts.update(kept)
        self.shared = {item: count for item, count in counts.items() if count > 1}
        self.index = {}
        for number, kept in enumerate(self.sets):
            self._index(number, self.prefix(frozenset(kept), threshold))

    def _index(self, number: int, prefix: list[int]) -> None:
        for item in prefix:
            self.index.setdefault(item, []).append(number)


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
