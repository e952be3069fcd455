"""What happened in a run, in numbers ready for a table: per agent, per turn, per task, rewards, lengths.

Pure functions, no I/O (`pettingllms.stats` reads the files): episodes in, a `RunSummary` out.
The counts agree with the stats file (`records.CollectionStats`): an episode is successful when
it succeeded without an error, a turn is kept when the run's `RecordFilter` keeps it.

    >>> kept = kept_turns(episodes, record_filter)
    >>> summary = summarize_episodes("big", episodes, kept, record_filter.removed)
    >>> summary.per_agent[0].success_rate
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pettingllms.records import Episode, RecordFilter, Turn, episode_succeeded, task_yield


@dataclass
class Spread:
    """min / mean / median / 95th percentile / max of some values (all zero when there are none)."""

    count: int = 0
    min: float = 0.0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    max: float = 0.0


def spread(values: list[float]) -> Spread:
    if not values:
        return Spread()
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731  (as summarize_lengths)
    mean = round(sum(ordered) / len(ordered), 4)
    return Spread(len(ordered), ordered[0], mean, pick(0.5), pick(0.95), ordered[-1])


def rate(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nothing to divide (a table shows '-', not 0%)."""
    return round(part / whole, 4) if whole else None


@dataclass
class AgentRow:
    """One agent: its turns, how many were kept, how many were invalid, and how often it succeeded."""

    agent: str
    turns: int = 0
    kept: int = 0
    invalid: int = 0
    episodes: int = 0
    """Episodes in which the agent acted at least once."""
    successes: int = 0
    """Of those, the ones it succeeded in: its own `agent_success`, else the episode's success."""

    @property
    def invalid_rate(self) -> float | None:
        return rate(self.invalid, self.turns)

    @property
    def success_rate(self) -> float | None:
        return rate(self.successes, self.episodes)


@dataclass
class TurnRow:
    """One turn index across the run: how many episodes reached it, and how those ended."""

    turn_idx: int
    episodes: int = 0
    successes: int = 0
    """Episodes that reached this turn and succeeded."""
    invalid: int = 0
    kept: int = 0
    agents: dict[str, int] = field(default_factory=dict)
    """Who acted at this index, with how many turns (one agent in a strict turn order)."""

    @property
    def success_rate(self) -> float | None:
        return rate(self.successes, self.episodes)

    @property
    def invalid_rate(self) -> float | None:
        return rate(self.invalid, self.episodes)


@dataclass
class TaskOutcomes:
    """Tasks grouped by how many of their samples succeeded, as rejection sampling sees them.

    With one sample per task, `all_succeeded` is the successes and `none_succeeded` the failures;
    with `num_samples_per_task` > 1, `some_succeeded` counts the tasks the policy solves sometimes.
    """

    tasks: int = 0
    max_samples: int = 0
    all_succeeded: int = 0
    some_succeeded: int = 0
    none_succeeded: int = 0


@dataclass
class RunSummary:
    """The numbers of one run (or of one records file, when `records_only`)."""

    run_name: str
    env_name: str | None
    source: str
    records_only: bool = False
    """Summarized from a records file alone: only kept records are known, nothing about episodes."""
    episodes: int = 0
    successful: int = 0
    error_episodes: int = 0
    turns: int = 0
    kept_records: int = 0
    invalid_actions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time_s: float | None = None
    per_agent: list[AgentRow] = field(default_factory=list)
    per_turn: list[TurnRow] = field(default_factory=list)
    tasks: TaskOutcomes = field(default_factory=TaskOutcomes)
    removed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    episode_rewards: list[float] = field(default_factory=list, repr=False)
    """Each episode's return: the sum of its turns' rewards."""
    turn_rewards: list[float] = field(default_factory=list, repr=False)
    length_unit: str = "characters"
    """'tokens' when every turn recorded its token counts (model policies), else 'characters'."""
    kept_lengths: list[int] = field(default_factory=list, repr=False)
    dropped_lengths: list[int] = field(default_factory=list, repr=False)

    @property
    def failed(self) -> int:
        return self.episodes - self.successful - self.error_episodes

    @property
    def success_rate(self) -> float | None:
        return rate(self.successful, self.episodes)

    @property
    def invalid_rate(self) -> float | None:
        return rate(self.invalid_actions, self.turns)


def kept_turns(episodes: list[Episode], record_filter: RecordFilter) -> list[set[int]]:
    """For each episode, in order, the `turn_idx` of the turns the filter keeps.

    The filter remembers what it kept (dedup, per-task caps), so pass the episodes in the
    order of the rollouts file, as collection did.
    """
    return [{record["metadata"]["turn_idx"] for record in record_filter.keep(episode)} for episode in episodes]


def turn_length(turn: Turn, unit: str) -> int:
    """The size of the record a turn makes: prompt + reply, in tokens or characters."""
    if unit == "tokens":
        return (turn.get("prompt_tokens") or 0) + (turn.get("completion_tokens") or 0)
    return sum(len(message["content"]) for message in turn["messages"]) + len(turn["response"])


def summarize_episodes(
    run_name: str, episodes: list[Episode], kept: list[set[int]], removed: Counter | dict[str, int]
) -> RunSummary:
    """The summary of a run's episodes; `kept` from `kept_turns`, `removed` the filter's drop counts."""
    every_turn = [turn for episode in episodes for turn in episode["turns"]]
    unit = "tokens" if every_turn and all(turn_length(turn, "tokens") > 0 for turn in every_turn) else "characters"
    summary = RunSummary(run_name, episodes[0]["env_name"] if episodes else None, "", length_unit=unit)
    agents: dict[str, AgentRow] = {}
    turns: dict[int, TurnRow] = {}
    for episode, kept_here in zip(episodes, kept):
        _count_episode(summary, episode, kept_here, agents, turns)
    summary.per_agent = [agents[name] for name in sorted(agents)]
    summary.per_turn = [turns[index] for index in sorted(turns)]
    summary.tasks = task_outcomes(episodes)
    summary.removed = dict(sorted(removed.items()))
    summary.errors = dict(sorted(summary.errors.items()))
    return summary


def _count_episode(
    summary: RunSummary, episode: Episode, kept: set[int], agents: dict[str, AgentRow], turns: dict[int, TurnRow]
) -> None:
    succeeded = episode_succeeded(episode)
    summary.episodes += 1
    summary.successful += succeeded
    if episode.get("error"):
        summary.error_episodes += 1
        summary.errors[episode["error"]["kind"]] = summary.errors.get(episode["error"]["kind"], 0) + 1
    summary.episode_rewards.append(round(sum(turn.get("reward") or 0.0 for turn in episode["turns"]), 6))
    for turn in episode["turns"]:
        is_kept = turn["turn_idx"] in kept
        agent = agents.setdefault(turn["agent"], AgentRow(turn["agent"]))
        agent.turns += 1
        agent.kept += is_kept
        agent.invalid += not turn["valid"]
        row = turns.setdefault(turn["turn_idx"], TurnRow(turn["turn_idx"]))
        row.episodes += 1
        row.successes += succeeded
        row.invalid += not turn["valid"]
        row.kept += is_kept
        row.agents[turn["agent"]] = row.agents.get(turn["agent"], 0) + 1
        summary.turns += 1
        summary.kept_records += is_kept
        summary.invalid_actions += not turn["valid"]
        summary.prompt_tokens += turn.get("prompt_tokens") or 0
        summary.completion_tokens += turn.get("completion_tokens") or 0
        summary.turn_rewards.append(turn.get("reward") or 0.0)
        lengths = summary.kept_lengths if is_kept else summary.dropped_lengths
        lengths.append(turn_length(turn, summary.length_unit))
    for name in {turn["agent"] for turn in episode["turns"]}:
        own = episode["agent_success"].get(name)
        agents[name].episodes += 1
        agents[name].successes += (succeeded if own is None else bool(own)) and not episode.get("error")


def task_outcomes(episodes: list[Episode]) -> TaskOutcomes:
    """Group the episodes by task (`env_idx`: all samples of a task share it) and count the outcomes."""
    by_task: dict[int, list[bool]] = defaultdict(list)
    for episode in episodes:
        by_task[episode["env_idx"]].append(episode_succeeded(episode))
    played = [(len(successes), sum(successes)) for successes in by_task.values()]
    return TaskOutcomes(len(by_task), max((n for n, _ in played), default=0), *task_yield(played))


def summarize_records(run_name: str, records: list[dict[str, Any]]) -> RunSummary:
    """What a records file alone can tell: kept records per agent and their lengths (in characters)."""
    first = (records[0].get("metadata") or {}) if records else {}
    summary = RunSummary(run_name, first.get("env_name"), "", records_only=True)
    agents: dict[str, AgentRow] = {}
    episodes = set()
    for record in records:
        metadata = record.get("metadata") or {}
        name = str(metadata.get("agent_name"))
        agents.setdefault(name, AgentRow(name)).kept += 1
        episodes.add(metadata.get("episode_id"))
        summary.kept_lengths.append(sum(len(str(message.get("content", ""))) for message in record["messages"]))
    summary.kept_records = len(records)
    summary.episodes = len(episodes - {None})
    summary.per_agent = [agents[name] for name in sorted(agents)]
    return summary
