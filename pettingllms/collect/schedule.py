"""Sampling until success: play each task in waves until it has k successes or n attempts.

With `training.min_successes_per_task=k` and `training.max_samples_per_task=n`, a task's first
wave is its samples [0, k). After a wave, with s successes among the p samples played so far,
the next wave is the next min(k - s, n - p) samples; the task is done when s >= k or p == n.
A wave is as many samples as could still bring the task to k, so its samples run at once and
the task never plays a sample it could not have needed: it ends with at most k successes.

Which samples are played depends only on their outcomes, never on timing: the same config plays
the same episodes at any concurrency (the expert and seeded policies play an episode the same
way every time), and a resumed run first completes the wave a kill cut, then goes on as the
uninterrupted run would have.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable, Mapping

from pettingllms.collect.plan import EpisodePlan, EpisodeSpec
from pettingllms.records import Episode, episode_succeeded


def next_samples(outcomes: Mapping[int, bool], min_successes: int, max_samples: int) -> list[int]:
    """The samples of a task still to play in its current wave; [] once the task is done.

    `outcomes` maps each played sample to whether it succeeded. The waves are replayed from
    sample 0, so a sample missing from an earlier wave (cut by a kill, or an episode to retry)
    is played before any later wave.
    """
    start = successes = 0
    while successes < min_successes and start < max_samples:
        wave = range(start, start + min(min_successes - successes, max_samples - start))
        missing = [sample for sample in wave if sample not in outcomes]
        if missing:
            return missing
        successes += sum(outcomes[sample] for sample in wave)
        start = wave.stop
    return []


class UntilSuccessSchedule:
    """Hands the episodes of a run that samples until success to concurrent workers, wave by wave.

    Workers take episodes with `next_episode` and report each outcome with `record`. Tasks are
    opened in order as workers ask; a task's next wave goes ahead of tasks not opened yet, so
    few tasks are open at once. A worker waits while the only episodes left depend on episodes
    still being played, and gets None once every task is done.
    """

    def __init__(self, plan: EpisodePlan, finished: Iterable[Episode]):
        assert plan.quota is not None, "a plan that samples until success"
        self.plan, self.quota = plan, plan.quota
        self._unopened = iter(plan.my_tasks())
        self._ready: deque[EpisodeSpec] = deque()
        self._waiting: Counter[int] = Counter()
        """Task -> episodes of its current wave handed out or ready, and not recorded yet."""
        self._changed = asyncio.Event()
        self.outcomes: dict[int, dict[int, bool]] = {}
        """Task -> {sample: success} of the tasks played in an earlier attempt, or opened and not done."""
        for episode in finished:
            self.outcomes.setdefault(episode["env_idx"], {})[episode["rollout_idx"]] = episode_succeeded(episode)
        self.most_left = len(plan) - sum(
            len(outcomes) if self._wave(task) else self.quota.samples_of(task)
            for task, outcomes in self.outcomes.items()
        )
        """The most episodes still to play: every sample not played of every task not done."""

    def _wave(self, task: int) -> list[EpisodeSpec]:
        quota = self.quota
        samples = next_samples(self.outcomes.get(task, {}), quota.min_successes, quota.samples_of(task))
        return self.plan.task_specs(task, samples)

    async def next_episode(self) -> EpisodeSpec | None:
        """The next episode to play, or None when there is none left to play."""
        while not self._ready:
            if self._open_next_task():
                continue
            if not self._waiting:
                return None
            await self._changed.wait()
        return self._ready.popleft()

    def _open_next_task(self) -> bool:
        for task in self._unopened:
            wave = self._wave(task)
            if wave:
                self._ready.extend(wave)
                self._waiting[task] += len(wave)
                return True
            self.outcomes.pop(task, None)  # done in an earlier attempt
        return False

    def record(self, spec: EpisodeSpec, succeeded: bool) -> None:
        """Note how an episode ended (once it is written); at the end of its wave, queue the task's next one."""
        task = spec.env_idx
        self.outcomes.setdefault(task, {})[spec.rollout_idx] = succeeded
        self._waiting[task] -= 1
        if not self._waiting[task]:
            del self._waiting[task]
            wave = self._wave(task)
            if wave:
                self._ready.extendleft(reversed(wave))
                self._waiting[task] += len(wave)
            else:
                del self.outcomes[task]
        # Wake every waiting worker: a new wave, or the end of the run.
        self._changed.set()
        self._changed = asyncio.Event()
