"""Which episodes a run plays, and which settings a resumed run must share with its files.

Episode i of a run is task i // num_samples_per_task, sample i % num_samples_per_task; with
`training.num_shards=n`, shard k plays the episodes i with i % n == k, so n collectors together
play exactly the episodes of the unsharded run, each in files of its own. The
plan is computed on demand (a run of a million episodes is not a million objects), and the
same config always gives the same plan, so a resumed run knows exactly what is left.

Sampling until success (`training.min_successes_per_task`) numbers episodes the same way with
`max_samples_per_task` samples per task, and the plan is the most the run may play:
`schedule.py` decides which of a task's samples are played. Its shards split tasks, not
episodes (shard k plays the tasks t with t % n == k), because the samples of one task depend
on each other's outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pettingllms import envs
from pettingllms.config import Config, to_dict
from pettingllms.exceptions import ConfigError, DataError, ResumeMismatchError
from pettingllms.records import Episode, SampleQuota
from pettingllms.runfiles import RunFiles, read_run_config

SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_000}
"""Train and test tasks come from disjoint seed ranges: train seeds stay below the test offset."""


@dataclass(frozen=True)
class EpisodeSpec:
    """Which episode to run: its place in the run and its task."""

    index: int
    env_idx: int
    rollout_idx: int
    seed: int
    episode_id: str
    task_index: int
    """Dataset envs play task `task_index` mod N: `training.seed` shifts where the walk starts."""


class EpisodePlan:
    """Every episode of a run, in order, computed on demand."""

    def __init__(self, config: Config):
        training = config.training
        self.env_name = envs.resolve_name(config.env.name)
        self.split = config.env.split
        self.size = training.sft_num_episodes
        self.shard, self.shards = training.shard_index, training.num_shards
        self.quota: SampleQuota | None = None
        """Set when sampling until success: each task's samples are then played as `schedule.py` decides."""
        if training.min_successes_per_task is not None:
            self.quota = SampleQuota(training.min_successes_per_task, training.max_samples_per_task, self.size)
        self.samples = self.quota.max_samples if self.quota else training.num_samples_per_task
        self.first_task = training.seed
        if self.split == "train" and self.first_task + self.tasks > SPLIT_SEED_OFFSET["test"]:
            raise ConfigError(
                f"training.seed={self.first_task} plus {self.tasks:,} tasks reaches the test split's seeds "
                f"(from {SPLIT_SEED_OFFSET['test']:,}); collect fewer episodes or start from a lower seed."
            )

    @property
    def tasks(self) -> int:
        """Tasks in the whole run (every shard's)."""
        return -(-self.size // self.samples)

    def __len__(self) -> int:
        if self.quota is None:
            return len(range(self.shard, self.size, self.shards))
        whole_tasks, last_samples = divmod(self.size, self.samples)
        mine = len(range(self.shard, whole_tasks, self.shards)) * self.samples
        return mine + (last_samples if whole_tasks % self.shards == self.shard else 0)

    def __iter__(self) -> Iterator[EpisodeSpec]:
        """This shard's episodes: every `num_shards`-th one (or every `num_shards`-th task's, sampling
        until success), so the shards together play the whole plan."""
        if self.quota is None:
            return (self.spec(index) for index in range(self.shard, self.size, self.shards))
        quota = self.quota
        return (spec for task in self.my_tasks() for spec in self.task_specs(task, range(quota.samples_of(task))))

    def my_tasks(self) -> range:
        """The tasks whose samples this shard plays, sampling until success."""
        return range(self.shard, self.tasks, self.shards)

    def task_specs(self, task: int, samples: Iterable[int]) -> list[EpisodeSpec]:
        """The episodes of task number `task` (its `env_idx`) that play `samples`."""
        return [self.spec(task * self.samples + sample) for sample in samples]

    def spec(self, index: int) -> EpisodeSpec:
        env_idx, rollout_idx = divmod(index, self.samples)
        seed = SPLIT_SEED_OFFSET[self.split] + self.first_task + env_idx
        episode_id = f"{self.env_name}-{self.split}-{seed}-{rollout_idx}"
        return EpisodeSpec(index, env_idx, rollout_idx, seed, episode_id, self.first_task + env_idx)

    def contains(self, episode: Episode) -> bool:
        """Whether a finished episode (from a ledger) is one of this plan's."""
        index = episode["env_idx"] * self.samples + episode["rollout_idx"]
        in_range = 0 <= episode["rollout_idx"] < self.samples and 0 <= index < self.size
        mine = (episode["env_idx"] if self.quota else index) % self.shards == self.shard
        return in_range and mine and self.spec(index).episode_id == episode["episode_id"]


GUARDED_KEYS = (
    "env",
    "training.seed",
    "training.num_samples_per_task",
    "training.min_successes_per_task",
    "training.max_samples_per_task",
    "training.only_success",
    "training.collect_mode",
    "training.dedup",
    "training.max_records_per_task",
    "training.near_dedup_threshold",
    "training.drop_truncated",
    "training.drop_crashed_programs",
    "training.max_reply_chars",
    "training.max_invalid_actions",
    "training.min_reward",
    "reward.unit",
    "reward.rubric",
    "reward.rubric_file",
    "reward.weights",
    "agents",
)
"""Settings a resumed run must share with the files it continues."""
POLICY_IDENTITY = (
    "backend",
    "model_path",
    "model",
    "error_rate",
    "mode",
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "enable_thinking",
)
"""The policy settings that change what is written; URLs, timeouts and concurrency may change.
Runs saved before a key joined this list are compared on the keys they have."""


def run_identity(config: Config) -> dict[str, Any]:
    """The guarded settings of a run, as saved beside its data."""
    plain = to_dict(config)
    identity = {}
    for key in GUARDED_KEYS:
        value: Any = plain
        for part in key.split("."):
            value = value[part]
        identity[key] = value
    identity["env"]["name"] = envs.resolve_name(config.env.name)
    identity["agents"] = {agent: settings["trainable"] for agent, settings in identity["agents"].items()}
    # Who writes the replies: a resumed run must not mix in another model or expert setting.
    policies = [(plain["policy"]["name"], plain["policy"]), *plain["policies"].items()]
    identity["policies"] = {name: {key: policy[key] for key in POLICY_IDENTITY} for name, policy in policies}
    judge = plain["reward"]["judge"]
    identity["reward.judge"] = None if judge is None else {key: judge[key] for key in POLICY_IDENTITY}
    return identity


def check_resume(files: RunFiles, config: Config) -> None:
    """Refuse to continue a run whose files were made with other guarded settings."""
    if not files.config.exists():
        return
    saved = (read_run_config(files) or {}).get("identity")
    if not isinstance(saved, dict):
        raise DataError(
            f"{files.config} is damaged, so run '{files.run_name}' cannot be checked for resuming; "
            "use another training.run_name."
        )
    # A key added after the run was saved counts as its default there (the run did not filter on it).
    defaults = json.loads(json.dumps(run_identity(Config())))
    saved = {**{key: value for key, value in defaults.items() if key not in ("env", "policies")}, **saved}
    current = comparable_identity(json.loads(json.dumps(run_identity(config))), saved)
    saved = comparable_identity(saved, saved)
    differences = [
        f"{key}: files have {saved.get(key)!r}, now {current[key]!r}"
        for key in current
        if saved.get(key) != current[key]
    ]
    if differences:
        raise ResumeMismatchError(
            f"Cannot resume run '{files.run_name}' with different settings ("
            + "; ".join(differences)
            + "). Use another training.run_name."
        )


def comparable_identity(identity: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """`identity` in the form two runs are compared in: trainable agents are the default and
    not listed, and the env and each policy keep only the keys the saved run recorded (settings
    added later, such as `env.imports`, do not make older runs unresumable)."""
    identity = dict(identity)
    recorded_env = saved.get("env") if isinstance(saved.get("env"), dict) else identity.get("env") or {}
    identity["env"] = {key: value for key, value in (identity.get("env") or {}).items() if key in recorded_env}
    agents = identity.get("agents") or {}
    identity["agents"] = {agent: False for agent, trainable in agents.items() if trainable is False}
    recorded = saved.get("policies") or {}
    identity["policies"] = {
        name: {key: value for key, value in policy.items() if key in recorded.get(name, policy)}
        for name, policy in (identity.get("policies") or {}).items()
    }
    return identity
