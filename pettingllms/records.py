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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pettingllms.exceptions import DataError
from pettingllms.near_duplicates import NearDuplicateIndex


class Message(TypedDict):
    role: str
    content: str


class EpisodeError(TypedDict):
    kind: str
    """`http_5xx`, `timeout`, `sandbox_error`, `env_error`...: what stopped the episode."""
    message: str


class Judgement(TypedDict):
    """A judge's verdict on a turn (`reward.judge`): the turn's `judge` field, absent when not judged."""

    score: float | None
    """In [0, 1]; None when the judge's reply had no readable score or its server failed (see `error`)."""
    text: str
    error: EpisodeError | None
    unit: str
    """'turn' (a call for this turn) or 'episode' (one call scored every judged turn of the episode)."""


class Turn(TypedDict):
    """One agent's reply and what the environment made of it; a judged turn also has `judge` (a
    `Judgement`) and `combined_reward` (see `pettingllms.judge`)."""

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


def turn_reward(turn: Turn) -> float | None:
    """The reward `min_reward` compares: a judged turn's combined reward (None when the judge gave no
    score that counts), else the env's reward."""
    return turn["combined_reward"] if "combined_reward" in turn else turn["reward"]


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
    if "judge" in turn:
        metadata["judge_score"] = turn["judge"]["score"]
        metadata["combined_reward"] = turn.get("combined_reward")
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
    "min_reward",
)
"""The `training.*` settings that decide which turns collection keeps (the `RecordFilter` fields of the same
names); `RecordFilter.from_settings` reads them, a missing one is off."""
DROP_REASONS = (
    "error_episode",
    "not_trainable",
    "not_successful",
    "agent_not_selected",
    "judge_error",
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
    """Keep only turns whose reward (`turn_reward`: the combined reward of a judged turn) is at least this."""
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
        return {**values, "agents": list(self.agents)}

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
        if self.min_reward is not None:
            reward = turn_reward(turn)
            if reward is None:
                return "judge_error"
            if not reward >= self.min_reward:
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


def near_duplicate_group(episode: Episode, turn: Turn) -> tuple[Any, str]:
    """Replies are compared within one task and agent: (task_id, or the seed when the env names no task; agent)."""
    task = episode["task_id"] if episode["task_id"] is not None else f"seed {episode['seed']}"
    return task, turn["agent"]


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


def episode_succeeded(episode: Episode) -> bool:
    """The episode's own success (whatever `collect_mode` keeps); an episode that ended in an error did not succeed."""
    return bool(episode["success"]) and not episode.get("error")


def task_yield(samples: Iterable[tuple[int, int]]) -> tuple[int, int, int]:
    """How many tasks all, some and none of their samples solved, from each task's (played, succeeded)."""
    tasks = list(samples)
    return (
        sum(succeeded == played for played, succeeded in tasks),
        sum(0 < succeeded < played for played, succeeded in tasks),
        sum(succeeded == 0 for _, succeeded in tasks),
    )


@dataclass(frozen=True)
class SampleQuota:
    """Sampling until success (`training.min_successes_per_task`, `training.max_samples_per_task`).

    A run of at most `episodes` episodes has ceil(episodes / max_samples) tasks; task t owns
    episodes t * max_samples onwards, so the last task may own fewer than `max_samples`.
    """

    min_successes: int
    max_samples: int
    episodes: int

    def samples_of(self, task: int) -> int:
        """How many samples task number `task` (its `env_idx`) may play."""
        return max(0, min(self.max_samples, self.episodes - task * self.max_samples))


@dataclass
class JudgeStats:
    """What the judge did, counted from the episodes' judged turns; a call scores a turn, or a whole episode."""

    calls: int = 0
    judged_turns: int = 0
    scores: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def add(self, episode: Episode) -> None:
        judgements = [turn["judge"] for turn in episode["turns"] if "judge" in turn]
        per_episode = [judgement for judgement in judgements if judgement["unit"] == "episode"]
        calls = [judgement for judgement in judgements if judgement["unit"] != "episode"] + per_episode[:1]
        self.calls += len(calls)
        self.judged_turns += len(judgements)
        for judgement in calls:
            if judgement["score"] is None:
                self.errors[judgement["error"]["kind"]] += 1
            else:
                self.scores.append(judgement["score"])

    def to_dict(self) -> dict[str, Any]:
        mean = round(sum(self.scores) / len(self.scores), 4) if self.scores else None
        return {
            "calls": self.calls,
            "judged_turns": self.judged_turns,
            "scored": len(self.scores),
            "errors": dict(sorted(self.errors.items())),
            "mean_score": mean,
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
    reply_tokens: int | None = 0
    """Tokens of every reply generated, kept or not; None once an episode's could not be counted."""
    task_samples: dict[int, list[int]] = field(default_factory=dict)
    """Task (`env_idx`) -> [samples played, samples that succeeded]."""
    quota: SampleQuota | None = None
    """Set when the run samples until success, so that the stats say how each task ended."""
    judge: JudgeStats = field(default_factory=lambda: JudgeStats())

    def add(
        self,
        episode: Episode,
        kept: list[Record],
        record_tokens: list[int] | None = None,
        reply_tokens: int | None = None,
    ) -> None:
        """Count one finished episode and the records kept from it; `reply_tokens` (the tokens of all
        its replies) is None where no count is at hand, which leaves the run's tokens spent unknown."""
        self.episodes += 1
        self.judge.add(episode)
        succeeded = episode_succeeded(episode)
        self.successful += succeeded
        samples = self.task_samples.setdefault(episode["env_idx"], [0, 0])
        samples[0] += 1
        samples[1] += succeeded
        if reply_tokens is None or self.reply_tokens is None:
            self.reply_tokens = None
        else:
            self.reply_tokens += reply_tokens
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
        judged = {"judge": self.judge.to_dict()} if self.judge.calls else {}
        wall_time_s = round(wall_time_s, 3)  # the rate from the written time: `filter` recomputes it from there
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
            **judged,
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "wall_time_s": wall_time_s,
            "episodes_per_s": round(self.episodes / wall_time_s, 3) if wall_time_s > 0 else 0.0,
            "kept_record_chars": summarize_lengths(self.record_chars),
            "kept_record_tokens": (
                {"tokenizer": tokenizer_name, **summarize_lengths(self.record_tokens)} if tokenizer_name else None
            ),
            "tokens_spent_per_kept_record": (
                round(self.reply_tokens / self.kept, 1) if self.reply_tokens is not None and self.kept else None
            ),
            "per_task": self.per_task(),
        }

    def per_task(self) -> dict[str, Any]:
        """The tasks' yield: how many of their played samples succeeded and, sampling until success, how each ended."""
        counts = list(self.task_samples.items())
        quota = self.quota
        solved_by_all, solved_by_some, solved_by_none = task_yield(samples for _, samples in counts)
        summary: dict[str, Any] = {
            "tasks": len(counts),
            "solved_by_all": solved_by_all,
            "solved_by_some": solved_by_some,
            "solved_by_none": solved_by_none,
            "min_successes": quota.min_successes if quota else None,
            "max_samples": quota.max_samples if quota else None,
            "reached_min_successes": None,
            "hit_max_samples": None,
        }
        if quota:
            ends = [
                (succeeded >= quota.min_successes, played >= quota.samples_of(task))
                for task, (played, succeeded) in counts
            ]
            summary["reached_min_successes"] = sum(reached for reached, _ in ends)
            summary["hit_max_samples"] = sum(every_sample and not reached for reached, every_sample in ends)
        return summary
