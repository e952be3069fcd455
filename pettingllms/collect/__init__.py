"""Collection: run many episodes at once, keep the successful turns, write each episode as it ends.

    >>> from pettingllms.collect import collect
    >>> result = collect(load_config(["env.name=sokoban", "policy=expert"]))
    >>> result.files.records                      # sft_data_<run>.jsonl

`plan` decides which episodes a run plays (and what a resume must share), `episode` plays one,
`collector` owns a run's files and workers, `signals` stops it cleanly; `pettingllms.dataset_card`
writes the folder's README.md when a run ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pettingllms.collect.collector import TRANSIENT_ERROR_KINDS, Collector
from pettingllms.collect.episode import AgentSlot, build_agent_slots, make_env, run_episode
from pettingllms.collect.plan import EpisodePlan, EpisodeSpec
from pettingllms.collect.signals import run_until_signal
from pettingllms.config import Config
from pettingllms.dataset_card import write_card
from pettingllms.runfiles import RunFiles


@dataclass
class CollectResult:
    files: RunFiles
    stats: dict[str, Any]
    stopped_by: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped the run early, if one did."""
    retried: int = 0
    """Episodes of an earlier attempt that ended in an infrastructure error and were played again."""
    card: Path | None = None
    """The folder's dataset card (README.md), or None when it was not written (a warning said why)."""

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None


def collect(config: Config) -> CollectResult:
    """Run a collection (or resume one) and return where its files are, with its stats.

    SIGINT/SIGTERM stop it cleanly: episodes in flight are abandoned, everything finished is
    on disk, and the same command resumes. Either way the folder's dataset card is written again.
    """
    collector = Collector(config)
    try:
        todo = collector.prepare()
    except BaseException:
        collector.close(discard_if_empty=True)
        raise
    try:
        stats: dict[str, Any] = {}
        stopped_by = run_until_signal(
            collector.run(todo),
            threads=config.training.rollout_concurrency + 4,
            finish=lambda: stats.update(collector.write_stats()),
        )
    finally:
        collector.close()
    card = write_card(collector.files.directory)
    return CollectResult(collector.files, stats, stopped_by, collector.retried, card)


__all__ = [
    "TRANSIENT_ERROR_KINDS",
    "AgentSlot",
    "CollectResult",
    "Collector",
    "EpisodePlan",
    "EpisodeSpec",
    "build_agent_slots",
    "collect",
    "make_env",
    "run_episode",
]
