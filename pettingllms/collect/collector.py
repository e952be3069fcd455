"""One collection run: its files, its filter and stats, and the workers that fill them.

The rollouts file is the run's ledger: an episode counts as done once its line is there.
Records are written before that line, so after a crash a resume rebuilds the records file from
the ledger, and nothing is lost or duplicated. `docs/data-format.md` describes the files.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pettingllms.collect.episode import AgentSlot, build_agent_slots, make_env, run_episode
from pettingllms.collect.plan import EpisodePlan, EpisodeSpec, check_resume, run_identity
from pettingllms.collect.schedule import UntilSuccessSchedule
from pettingllms.config import Config, to_dict
from pettingllms.console import Progress, info
from pettingllms.exceptions import ConfigError, DataError
from pettingllms.jsonl import JsonlAppender, read_jsonl, split_torn_tail, write_jsonl_atomic
from pettingllms.judge import start_judge
from pettingllms.records import CollectionStats, Episode, Record, RecordFilter, episode_succeeded
from pettingllms.runfiles import (
    RunFiles,
    default_run_name,
    lock_run,
    read_json_object,
    read_ledger,
    read_run_config,
    shard_run_name,
    write_json_atomic,
)

STATS_EVERY_S = 5.0
FSYNC_EVERY = 16
"""Episodes between two fsyncs of the records and the ledger (records first, so a power cut
leaves at most this many episodes' records ahead of the ledger, and never a ledger line ahead)."""
TRANSIENT_ERROR_KINDS = frozenset(
    {"http_429", "http_5xx", "timeout", "connection", "bad_response", "sandbox_error", "generate_error", "closed"}
)
"""Episode errors that say nothing about the model (a server, the network, the sandbox): a resumed
run plays those episodes again (`training.retry_infra_errors`)."""


def write_failure(path: Path, error: OSError) -> DataError:
    """One line for a failed write: which file, why, and that nothing finished is lost."""
    return DataError(
        f"Cannot write {path}: {error.strerror or error}. Episodes finished before are saved; "
        "free space (or fix the folder) and run the same command to resume."
    )


class Collector:
    """One collection run: files, filter, stats and the workers that fill them."""

    def __init__(self, config: Config):
        self.config = config
        self.plan = EpisodePlan(config)
        self.env_name = self.plan.env_name
        # The env and the policies first: a mistake in their settings is reported before any file is written.
        self.probe = make_env(config)
        self.slots = build_agent_slots(config, self.probe)
        training = config.training
        self.judge = start_judge(
            config.reward,
            self.env_name,
            only_success=training.only_success,
            collect_mode=training.collect_mode,
            seed=training.seed,
        )
        directory = Path(training.sft_data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if training.run_name:
                run_name = shard_run_name(training.run_name, training.shard_index, training.num_shards)
            else:
                run_name = default_run_name(directory)
            self.files = RunFiles(directory, run_name)
            self.new_run = not self.files.rollouts.exists() or self.files.rollouts.stat().st_size == 0
            self._lock = lock_run(self.files)
        except OSError as error:
            raise DataError(
                f"Cannot write collection files in training.sft_data_dir={directory}: {error.strerror or error}."
            ) from None
        self.filter = RecordFilter.from_settings(config.training)
        self.stats = CollectionStats(self.env_name, run_name, quota=self.plan.quota)
        self.token_counter = TokenCounter(config)
        self.started = time.perf_counter()
        self.previous_wall_time = 0.0
        self.retried = 0

    def prepare(self) -> Iterator[EpisodeSpec] | UntilSuccessSchedule:
        """Resume what is on disk; return the episodes still to run (lazily, in plan order), or
        the schedule that hands them out when the run samples until success."""
        ledger = read_ledger(self.files.rollouts)
        check_records_accounted(self.files, {episode["episode_id"] for episode in ledger})
        if ledger:  # a run that finished no episode may restart with other settings
            check_resume(self.files, self.config)
        done = [episode for episode in ledger if not self._plays_again(episode)]
        self.retried = len(ledger) - len(done)
        self.token_counter.load()
        if ledger:
            again = f"; {self.retried} that ended in an infrastructure error run again" if self.retried else ""
            print(
                f"Resuming run '{self.files.run_name}': {len(done)} episodes already collected{again}.", file=sys.stderr
            )
        if len(ledger) > len(self.plan) or not all(self.plan.contains(episode) for episode in ledger):
            raise ConfigError(
                f"Run '{self.files.run_name}' already has {len(ledger)} episodes, more than (or other than) "
                f"training.sft_num_episodes={len(self.plan)} plans; ask for at least {len(ledger)} "
                "or use another training.run_name."
            )
        self._rebuild_records(done)
        self._save_config()
        if self.plan.quota:
            schedule = UntilSuccessSchedule(self.plan, done)
            self.remaining = schedule.most_left
            return schedule
        finished = {episode["episode_id"] for episode in done}
        self.remaining = len(self.plan) - len(finished)
        return (spec for spec in self.plan if spec.episode_id not in finished)

    def _plays_again(self, episode: Episode) -> bool:
        error = episode.get("error")
        return bool(error) and self.config.training.retry_infra_errors and error["kind"] in TRANSIENT_ERROR_KINDS

    def _rebuild_records(self, done: list[Episode]) -> None:
        """Write the records file anew from the ledger, so a crash leaves no orphan or twin."""
        previous = self._read_previous_stats()
        self.previous_wall_time = previous.get("wall_time_s", 0.0) if previous else 0.0

        def records() -> Iterator[Record]:
            for episode in done:
                kept = self.filter.keep(episode)
                self.count(episode, kept)
                yield from kept

        try:
            write_jsonl_atomic(self.files.records, records())
        except OSError as error:
            raise write_failure(self.files.records, error) from None

    def _read_previous_stats(self) -> dict[str, Any] | None:
        return read_json_object(self.files.stats)

    def count(self, episode: Episode, kept: list[Record]) -> None:
        """Add a finished episode to the stats, with the tokens of its kept records and of all its replies."""
        counter = self.token_counter
        self.stats.add(episode, kept, counter.count(kept), counter.count_replies(episode))

    def _save_config(self) -> None:
        content = {
            "identity": run_identity(self.config),
            "config": to_dict(self.config),
            "command": command_line(sys.argv),
        }
        try:
            write_json_atomic(self.files.config, content)
        except OSError as error:
            raise write_failure(self.files.config, error) from None

    def close(self, discard_if_empty: bool = False) -> None:
        """Release the run's lock; `discard_if_empty` removes the ledger of a new run that wrote nothing
        (a refused start must not leave an empty run behind)."""
        self._lock.close()
        rollouts = self.files.rollouts
        if discard_if_empty and self.new_run and rollouts.exists() and rollouts.stat().st_size == 0:
            rollouts.unlink()

    def write_stats(self) -> dict[str, Any]:
        wall_time = self.previous_wall_time + time.perf_counter() - self.started
        stats = self.stats.to_dict(wall_time, self.filter.removed, self.token_counter.name)
        try:
            write_json_atomic(self.files.stats, stats)
        except OSError as error:
            raise write_failure(self.files.stats, error) from None
        return stats

    async def run(self, todo: Iterable[EpisodeSpec] | UntilSuccessSchedule) -> None:
        """Run `todo` on bounded workers, writing each episode as it ends."""
        if self.remaining:
            await self._run_workers(todo)
        quota = self.plan.quota
        if quota:  # the progress total was an upper bound: say where the run ended
            tasks = self.stats.per_task()
            info(
                f"Sampling until {quota.min_successes} successes per task (at most {quota.max_samples} samples): "
                f"{self.stats.episodes} of at most {len(self.plan)} episodes played; of {tasks['tasks']} tasks, "
                f"{tasks['reached_min_successes']} reached {quota.min_successes} successes and "
                f"{tasks['hit_max_samples']} used all their samples."
            )

    async def _run_workers(self, todo: Iterable[EpisodeSpec] | UntilSuccessSchedule) -> None:
        # Sampling until success, workers ask the schedule; otherwise they share one iterator of the plan.
        if isinstance(todo, UntilSuccessSchedule):
            work, queue = self._work_until_success, todo
        else:
            work, queue = self._work, iter(todo)
        progress = CollectionProgress(self.stats.episodes + self.remaining, initial=self.stats.episodes)
        try:
            writer = EpisodeWriter(self, progress)
        except OSError as error:
            raise write_failure(self.files.directory, error) from None
        workers = min(self.config.training.rollout_concurrency, self.remaining)
        environments = [self.probe] + [make_env(self.config) for _ in range(workers - 1)]
        tasks = [asyncio.ensure_future(work(env, queue, writer)) for env in environments]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # one worker failing (or a stop) ends them all
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            progress.close()
            for policy in {id(slot.policy): slot.policy for slot in self.slots.values()}.values():
                await policy.close()
            if self.judge is not None:
                await self.judge.close()

    async def _play(self, env, spec: EpisodeSpec, slots: dict[str, AgentSlot]) -> Episode:
        """One episode, judged when `reward.judge` is set (the verdicts go into its ledger line)."""
        episode = await run_episode(env, spec, slots, self.env_name)
        return episode if self.judge is None else await self.judge(episode)

    async def _work(self, env, queue: Iterator[EpisodeSpec], writer: EpisodeWriter) -> None:
        slots: dict[str, AgentSlot] = self.slots
        for spec in queue:
            episode = await self._play(env, spec, slots)
            writer.write(episode)

    async def _work_until_success(self, env, schedule: UntilSuccessSchedule, writer: EpisodeWriter) -> None:
        while (spec := await schedule.next_episode()) is not None:
            episode = await self._play(env, spec, self.slots)
            writer.write(episode)
            schedule.record(spec, episode_succeeded(episode))


def command_line(argv: list[str]) -> str:
    """The command that started this process, shell-quoted, as a user would type it again."""
    program = Path(argv[0]) if argv else Path()
    if program.name == "pettingllms" or (program.name == "__main__.py" and program.parent.name == "pettingllms"):
        return shlex.join(["pettingllms", *argv[1:]])
    return shlex.join(argv)


def check_records_accounted(files: RunFiles, ledger_ids: set[str]) -> None:
    """Refuse to touch a records file that the run's ledger cannot account for.

    Resuming rewrites the records file from the ledger. Our own writes can leave records ahead
    of the ledger only at the end of the file (a kill or a power cut between the two writes:
    at most the episodes of one fsync window) and only after the run's config was saved.
    Anything else (a records file copied without its rollouts file, another tool's file under
    our name) would be lost by that rewrite.
    """
    if not files.records.exists() or files.records.stat().st_size == 0:
        return
    if "filtered_from" in (read_run_config(files) or {}):
        raise DataError(
            f"{files.records} was written by `pettingllms filter`, not collected: run '{files.run_name}' has no "
            "rollouts to resume. Collect into another training.run_name."
        )
    complete, _ = split_torn_tail(files.records.read_bytes())
    try:
        episode_ids = [
            (row.get("metadata") or {}).get("episode_id") if isinstance(row, dict) else None
            for row, _ in read_jsonl(files.records, data=complete)
        ]
    except DataError:
        episode_ids = [None]
    first_unknown = next((i for i, episode_id in enumerate(episode_ids) if episode_id not in ledger_ids), None)
    if first_unknown is None:
        return
    tail = episode_ids[first_unknown:]
    ours = (
        files.config.exists()
        and None not in tail
        and not ledger_ids.intersection(tail)
        and len(set(tail)) <= FSYNC_EVERY
    )
    if not ours:
        raise DataError(
            f"{files.records} holds records that {files.rollouts.name} does not account for (copied without "
            f"its rollouts file?); collecting run '{files.run_name}' would rewrite it. Move the file elsewhere "
            "or use another training.run_name."
        )


class EpisodeWriter:
    """Appends a finished episode: its records first, then its ledger line (the commit)."""

    def __init__(self, collector: Collector, progress: CollectionProgress):
        self.collector, self.progress = collector, progress
        files = collector.files
        # Synced together by `write`, records first: never a ledger line on disk without its records.
        self.records = JsonlAppender(files.records, sync_every=0)
        self.ledger = JsonlAppender(files.rollouts, sync_every=0)
        self.unsynced = 0
        self.last_stats = time.perf_counter()

    def write(self, episode: Episode) -> None:
        collector = self.collector
        kept = collector.filter.keep(episode)
        self.unsynced += 1
        sync = self.unsynced >= FSYNC_EVERY
        for appender, rows in ((self.records, kept), (self.ledger, [episode])):
            try:
                appender.write_all(rows)
                if sync:
                    appender.sync()
            except OSError as error:
                raise write_failure(appender.path, error) from None
        if sync:
            self.unsynced = 0
        collector.count(episode, kept)
        if time.perf_counter() - self.last_stats > STATS_EVERY_S:
            collector.write_stats()
            self.last_stats = time.perf_counter()
        self.progress.episode_done(collector.stats)

    def close(self) -> None:
        for appender in (self.records, self.ledger):
            try:
                appender.sync()
                appender.close()
            except OSError:
                pass  # a full disk: the write that failed has already said so, and a resume repairs the tail


class CollectionProgress(Progress):
    """The episodes display, with the success rate and records kept so far."""

    def __init__(self, total: int, initial: int):
        super().__init__(total, "episodes", initial=initial, unit="ep")

    def episode_done(self, stats: CollectionStats) -> None:
        rate = stats.successful / stats.episodes if stats.episodes else 0.0
        self.update(1, success=f"{rate:.2f}", kept=stats.kept, errors=sum(stats.errors.values()))


class TokenCounter:
    """Counts the tokens of kept records with the tokenizer that will train on them."""

    def __init__(self, config: Config):
        self.config = config
        self.name: str | None = None
        self._tokenizer = None
        self._failed = False

    def count(self, records: list[Record]) -> list[int]:
        tokenizer = self.load()
        if tokenizer is None:
            return []
        try:
            return [
                len(tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=False))
                for record in records
            ]
        except Exception as error:  # e.g. a template that refuses a system message: stats lose one field
            print(f"warning: token counts unavailable ({type(error).__name__}: {error})", file=sys.stderr)
            self._failed, self._tokenizer, self.name = True, None, None
            return []

    def count_replies(self, episode: Episode) -> int | None:
        """Tokens of all the episode's replies: the backend's count where it reported one, else the
        tokenizer's (each reply tokenized once); None when a reply has neither."""
        total = 0
        for turn in episode["turns"]:
            reported = turn.get("completion_tokens")
            if reported:
                total += reported
                continue
            tokenizer = self.load()
            if tokenizer is None:
                return None
            total += len(tokenizer.encode(turn["response"], add_special_tokens=False))
        return total

    def load(self):
        """Load the tokenizer now (slow: imports transformers), before the event loop needs it."""
        if self._tokenizer is not None or self._failed:
            return self._tokenizer
        try:
            from pettingllms.models import load_tokenizer, model_for_training

            path = model_for_training(self.config)
            self._tokenizer = load_tokenizer(path)
            self.name = str(path)
        except Exception as error:  # stats lose one field; collection must go on
            print(f"warning: token counts unavailable ({error})", file=sys.stderr)
            self._failed = True
        return self._tokenizer
