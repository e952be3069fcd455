"""The rollout runner: many episodes in flight, each written to disk the moment it ends.

`collect(config)` plans the run's episodes (episode i is task i // num_samples_per_task,
sample i % num_samples_per_task), skips the ones a previous run with the same name already
finished, and runs the rest on `rollout_concurrency` workers. Each worker owns one
environment; model calls are awaited (so a batching backend sees the requests of all
workers at once) and environment steps run in threads (they may run model-written code).

The rollouts file is the run's ledger: an episode counts as done once its line is there.
Records are written before that line, so after a crash a resume rebuilds the records file
from the ledger, and nothing is lost or duplicated.
"""

from __future__ import annotations

import asyncio
import fcntl
import inspect
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pettingllms import envs
from pettingllms.config import Config, to_dict
from pettingllms.exceptions import ConfigError, DataError, PolicyError, ResumeMismatchError, UserError
from pettingllms.policies import GenerationRequest, Policy, SamplingParams, build_policy, sampling_for
from pettingllms.policies.expert import ExpertPolicy
from pettingllms.records import CollectionStats, Episode, RecordFilter

SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_000}
"""Train and test tasks come from disjoint seed ranges."""
FSYNC_EVERY = 16
STATS_EVERY_S = 5.0


@dataclass
class EpisodeSpec:
    """Which episode to run: its place in the run and its task."""

    index: int
    env_idx: int
    rollout_idx: int
    seed: int
    episode_id: str
    task_index: int
    """Dataset envs play task `task_index` mod N: `training.seed` shifts where the walk starts."""


@dataclass
class AgentSlot:
    """How one agent is played: by which policy, sampling how, recorded or not."""

    policy: Policy
    sampling: SamplingParams
    trainable: bool


@dataclass
class RunFiles:
    """The files of one collection run, named after it."""

    directory: Path
    run_name: str

    @property
    def records(self) -> Path:
        return self.directory / f"sft_data_{self.run_name}.jsonl"

    @property
    def stats(self) -> Path:
        return self.directory / f"sft_data_{self.run_name}_stats.json"

    @property
    def rollouts(self) -> Path:
        return self.directory / f"rollouts_{self.run_name}.jsonl"

    @property
    def config(self) -> Path:
        return self.directory / f"sft_data_{self.run_name}_config.json"


@dataclass
class CollectResult:
    files: RunFiles
    stats: dict[str, Any]
    stopped_by: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped the run early, if one did."""

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None


def plan_episodes(config: Config) -> list[EpisodeSpec]:
    """Every episode of the run, in order; the same config always gives the same plan."""
    name = envs.resolve_name(config.env.name)
    samples = config.training.num_samples_per_task
    base = SPLIT_SEED_OFFSET[config.env.split] + config.training.seed
    specs = []
    for index in range(config.training.sft_num_episodes):
        env_idx, rollout_idx = divmod(index, samples)
        seed = base + env_idx
        episode_id = f"{name}-{config.env.split}-{seed}-{rollout_idx}"
        specs.append(EpisodeSpec(index, env_idx, rollout_idx, seed, episode_id, config.training.seed + env_idx))
    return specs


def make_env(config: Config) -> envs.TurnBasedTextEnv:
    """The configured environment; a setting it does not take is a ConfigError."""
    name = envs.resolve_name(config.env.name)
    accepted = [p for p in inspect.signature(envs.env_class(name).__init__).parameters if p != "self"]
    unknown = [key for key in config.env.kwargs if key not in accepted]
    if unknown:
        raise ConfigError(
            f"env.kwargs.{unknown[0]} is not an argument of env '{name}'; it takes: {', '.join(accepted)}."
        )
    reserved = [key for key in config.env.kwargs if key in ("max_turns", "dataset", "shuffle", "split")]
    if reserved:
        raise ConfigError(f"env.kwargs.{reserved[0]}: set it as env.{reserved[0]} instead.")
    kwargs: dict[str, Any] = dict(config.env.kwargs)
    if config.env.max_turns is not None:
        kwargs["max_turns"] = config.env.max_turns
    for key, value in (("dataset", config.env.dataset), ("shuffle", config.env.shuffle or None)):
        if value is not None and key not in accepted:
            raise ConfigError(f"env.{key}: env '{name}' generates its tasks and takes no {key}.")
        if value is not None:
            kwargs[key] = value
    if "split" in accepted:  # procedural envs get the split through their seeds (plan_episodes)
        kwargs["split"] = config.env.split
    try:
        return envs.make(name, **kwargs)
    except ValueError as error:  # the env's own argument checks
        raise ConfigError(f"env '{name}': {error}") from None


def build_agent_slots(config: Config, possible_agents: tuple[str, ...]) -> dict[str, AgentSlot]:
    """Map every agent of the env to its policy and sampling settings."""
    unknown = [agent for agent in config.agents if agent not in possible_agents]
    if unknown:
        raise ConfigError(
            f"agents.{unknown[0]}: env '{config.env.name}' has no such agent; "
            f"its agents are: {', '.join(possible_agents)}."
        )
    named = config.policies_by_name()
    built: dict[str, Policy] = {}
    slots = {}
    for agent in possible_agents:
        settings = config.agents.get(agent)
        policy_name = config.policy_of(agent)
        if policy_name not in built:
            built[policy_name] = build_policy(policy_name, named[policy_name], seed=config.training.seed)
        slots[agent] = AgentSlot(
            built[policy_name], sampling_for(named[policy_name], settings), settings.trainable if settings else True
        )
    return slots


async def run_episode(
    env: envs.TurnBasedTextEnv, spec: EpisodeSpec, slots: dict[str, AgentSlot], env_name: str
) -> Episode:
    """Play one episode to its end (or to a policy error) and return its full transcript."""
    started = time.perf_counter()
    episode: Episode = {
        "episode_id": spec.episode_id,
        "env_name": env_name,
        "env_idx": spec.env_idx,
        "rollout_idx": spec.rollout_idx,
        "seed": spec.seed,
        "task_id": None,
        "success": False,
        "agent_success": {},
        "terminated": False,
        "truncated": False,
        "error": None,
        "turns": [],
    }
    stage = "env"  # where an unexpected exception came from
    try:
        obs, info = await asyncio.to_thread(env.reset, seed=spec.seed, options={"task_index": spec.task_index})
        episode["task_id"] = info["task_id"]
        while True:
            agent = info["agent"]
            slot = slots[agent]
            request = GenerationRequest(obs, slot.sampling, agent, spec.episode_id, env)
            generate_start = time.perf_counter()
            stage = "policy"
            generation = await slot.policy.generate(request)
            stage = "env"
            step_start = time.perf_counter()
            next_obs, reward, terminated, truncated, info = await asyncio.to_thread(env.step, generation.text)
            episode["turns"].append(
                {
                    "turn_idx": info["turn_idx"] - 1,
                    "agent": agent,
                    "policy_name": slot.policy.name,
                    "trainable": slot.trainable,
                    "messages": obs,
                    "response": generation.text,
                    "prompt_text": generation.prompt_text,
                    "reward": reward,
                    "valid": info["valid"],
                    "parse_error": info["parse_error"],
                    "details": info["details"],
                    "prompt_tokens": generation.prompt_tokens,
                    "completion_tokens": generation.completion_tokens,
                    "finish_reason": generation.finish_reason,
                    "generate_s": round(step_start - generate_start, 4),
                    "step_s": round(time.perf_counter() - step_start, 4),
                }
            )
            obs = next_obs
            if terminated or truncated:
                episode.update(
                    success=bool(info["success"]),
                    agent_success=info["agent_success"],
                    terminated=terminated,
                    truncated=truncated,
                )
                break
    except PolicyError as error:
        episode["error"] = {"kind": error.kind, "message": str(error)}
    except UserError:
        raise  # a setup mistake (a model that cannot load...): stop the run with its one-line message
    except Exception as error:  # a bug in an env or a backend must cost one episode, not the whole run
        episode["error"] = {"kind": f"{stage}_error", "message": f"{type(error).__name__}: {error}"}
        where = "the environment" if stage == "env" else "the policy"
        print(
            f"warning: episode {spec.episode_id} failed inside {where}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
    episode["wall_time_s"] = round(time.perf_counter() - started, 4)
    return episode


def default_run_name(directory: Path) -> str:
    """The start time, made unique in `directory` by creating the run's ledger on the spot,
    so two collections started in the same second cannot share a run."""
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    name, suffix = stamp, 1
    while True:
        try:
            os.close(os.open(RunFiles(directory, name).rollouts, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return name
        except FileExistsError:
            suffix += 1
            name = f"{stamp}_{suffix}"


def lock_run(files: RunFiles):
    """Hold the run's ledger locked for as long as the returned file stays open."""
    handle = open(files.rollouts, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"Run '{files.run_name}' in {files.directory} is being collected by another process; "
            "wait for it or use another training.run_name."
        ) from None
    return handle


GUARDED_KEYS = (
    "env",
    "training.seed",
    "training.num_samples_per_task",
    "training.only_success",
    "training.collect_mode",
    "training.dedup",
    "training.max_records_per_task",
    "agents",
)
"""Settings a resumed run must share with the files it continues."""
POLICY_IDENTITY = ("backend", "model_path", "model", "error_rate", "mode")
"""The policy settings that change what is written; URLs, timeouts and concurrency may change."""


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
    identity["policies"] = {
        name: {key: policy[key] for key in POLICY_IDENTITY}
        for name, policy in [(plain["policy"]["name"], plain["policy"]), *plain["policies"].items()]
    }
    return identity


def check_resume(files: RunFiles, config: Config) -> None:
    """Refuse to continue a run whose files were made with other guarded settings."""
    if not files.config.exists():
        return
    try:
        saved = json.loads(files.config.read_text())["identity"]
    except (ValueError, KeyError, TypeError):
        raise DataError(
            f"{files.config} is damaged, so run '{files.run_name}' cannot be checked for resuming; "
            "use another training.run_name."
        ) from None
    current = json.loads(json.dumps(run_identity(config)))
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


def read_ledger(path: Path, repair: bool = True) -> list[Episode]:
    """The episodes a previous run finished.

    A kill can only leave a last line without its newline (a torn write): it is cut off
    with a warning and its episode runs again. A broken line before it means the file was
    damaged some other way, and that is an error, not something to guess about.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")
    episodes = {}
    for number, line in enumerate(complete, start=1):
        if line.strip():
            episode = _parse_ledger_line(line, f"{path}:{number}")
            episodes[episode["episode_id"]] = episode
    if tail:
        print(
            f"warning: {path}:{len(complete) + 1} is a torn line (the run was killed mid-write); "
            "dropping it, its episode runs again.",
            file=sys.stderr,
        )
    if tail and repair:
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(tail))
    return list(episodes.values())


def _parse_ledger_line(line: bytes, where: str) -> Episode:
    try:
        episode = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, huge integers, absurd nesting
        raise DataError(f"{where} is not valid JSON; the file was damaged.") from None
    if not isinstance(episode, dict) or not isinstance(episode.get("episode_id"), str):
        raise DataError(f"{where} is not an episode (no episode_id); is this a rollouts file?")
    return episode


class Collector:
    """One collection run: files, filter, stats and the workers that fill them."""

    def __init__(self, config: Config):
        self.config = config
        self.env_name = envs.resolve_name(config.env.name)
        # The env and the policies first: a mistake in their settings is reported before any file is written.
        self.probe = make_env(config)
        self.slots = build_agent_slots(config, self.probe.possible_agents)
        if any(isinstance(slot.policy, ExpertPolicy) for slot in self.slots.values()) and not self.probe.has_expert:
            raise ConfigError(f"env '{self.env_name}' has no expert; use policy.backend=hf or openai.")
        directory = Path(config.training.sft_data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            run_name = config.training.run_name or default_run_name(directory)
            self.files = RunFiles(directory, run_name)
            self._lock = lock_run(self.files)
        except OSError as error:
            raise DataError(
                f"Cannot write collection files in training.sft_data_dir={directory}: {error.strerror or error}."
            ) from None
        training = config.training
        self.filter = RecordFilter(
            training.only_success, training.collect_mode, training.dedup, training.max_records_per_task
        )
        self.stats = CollectionStats(self.env_name, run_name)
        self.token_counter = TokenCounter(config)
        self.started = time.perf_counter()
        self.previous_wall_time = 0.0

    def prepare(self) -> list[EpisodeSpec]:
        """Resume what is on disk and return the episodes still to run."""
        done = read_ledger(self.files.rollouts)
        if done:  # a run that finished no episode may restart with other settings
            check_resume(self.files, self.config)
        self.token_counter.load()
        if done:
            print(f"Resuming run '{self.files.run_name}': {len(done)} episodes already collected.", file=sys.stderr)
        plan = plan_episodes(self.config)
        planned_ids = {spec.episode_id for spec in plan}
        if len(done) > len(plan) or any(episode["episode_id"] not in planned_ids for episode in done):
            raise ConfigError(
                f"Run '{self.files.run_name}' already has {len(done)} episodes, more than (or other "
                f"than) training.sft_num_episodes={len(plan)} plans; ask for at least {len(done)} "
                "or use another training.run_name."
            )
        self._rebuild_records(done)
        self._save_config()
        finished = {episode["episode_id"] for episode in done}
        return [spec for spec in plan if spec.episode_id not in finished]

    def _rebuild_records(self, done: list[Episode]) -> None:
        """Write the records file anew from the ledger, so a crash leaves no orphan or twin."""
        if previous := self._read_previous_stats():
            self.previous_wall_time = previous.get("wall_time_s", 0.0)
        temporary = self.files.records.with_suffix(".jsonl.tmp")
        with open(temporary, "w") as handle:
            for episode in done:
                kept = self.filter.keep(episode)
                for record in kept:
                    handle.write(json.dumps(record) + "\n")
                self.stats.add(episode, kept, self.token_counter.count(kept))
        os.replace(temporary, self.files.records)

    def _read_previous_stats(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.files.stats.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _save_config(self) -> None:
        content = {"identity": run_identity(self.config), "config": to_dict(self.config)}
        write_json_atomic(self.files.config, content)

    def close(self) -> None:
        """Release the run's lock."""
        self._lock.close()

    def write_stats(self) -> dict[str, Any]:
        wall_time = self.previous_wall_time + time.perf_counter() - self.started
        stats = self.stats.to_dict(wall_time, self.filter.removed, self.token_counter.name)
        write_json_atomic(self.files.stats, stats)
        return stats

    async def run(self, todo: list[EpisodeSpec]) -> None:
        """Run `todo` on bounded workers, writing each episode as it ends."""
        slots = self.slots
        if not todo:
            return
        queue = iter(todo)
        progress = Progress(self.stats.episodes + len(todo), initial=self.stats.episodes)
        with open(self.files.records, "a") as records, open(self.files.rollouts, "a") as ledger:
            writer = EpisodeWriter(self, records, ledger, progress)
            workers = min(self.config.training.rollout_concurrency, len(todo))
            environments = [self.probe] + [make_env(self.config) for _ in range(workers - 1)]
            tasks = [asyncio.ensure_future(self._work(env, queue, slots, writer)) for env in environments]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:  # one worker failing (or a stop) ends them all
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                writer.sync()
                progress.close()
                for policy in {id(slot.policy): slot.policy for slot in slots.values()}.values():
                    await policy.close()

    async def _work(self, env, queue, slots, writer) -> None:
        for spec in queue:
            episode = await run_episode(env, spec, slots, self.env_name)
            writer.write(episode)


class EpisodeWriter:
    """Appends a finished episode: its records first, then its ledger line (the commit)."""

    def __init__(self, collector: Collector, records, ledger, progress: Progress):
        self.collector, self.records, self.ledger, self.progress = collector, records, ledger, progress
        self.unsynced = 0
        self.last_stats = time.perf_counter()

    def write(self, episode: Episode) -> None:
        kept = self.collector.filter.keep(episode)
        self.records.writelines(json.dumps(record) + "\n" for record in kept)
        self.records.flush()
        self.ledger.write(json.dumps(episode) + "\n")
        self.ledger.flush()
        self.collector.stats.add(episode, kept, self.collector.token_counter.count(kept))
        self.unsynced += 1
        if self.unsynced >= FSYNC_EVERY:
            self.sync()
        if time.perf_counter() - self.last_stats > STATS_EVERY_S:
            self.collector.write_stats()
            self.last_stats = time.perf_counter()
        self.progress.update(self.collector.stats)

    def sync(self) -> None:
        for handle in (self.records, self.ledger):
            handle.flush()
            os.fsync(handle.fileno())
        self.unsynced = 0


class Progress:
    """A progress bar on stderr (tqdm), with the success rate and records kept so far."""

    def __init__(self, total: int, initial: int):
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="episodes",
            unit="ep",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=os.environ.get("PETTINGLLMS_PROGRESS", "1") == "0",
        )

    def update(self, stats: CollectionStats) -> None:
        rate = stats.successful / stats.episodes if stats.episodes else 0.0
        self.bar.set_postfix(success=f"{rate:.2f}", kept=stats.kept, errors=sum(stats.errors.values()), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class TokenCounter:
    """Counts the tokens of kept records with the tokenizer that will train on them."""

    def __init__(self, config: Config):
        self.config = config
        self.name: str | None = None
        self._tokenizer = None
        self._failed = False

    def count(self, records: list[dict[str, Any]]) -> list[int]:
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

    def load(self):
        """Load the tokenizer now (slow: imports transformers), before the event loop needs it."""
        if self._tokenizer is not None or self._failed:
            return self._tokenizer
        try:
            from transformers import AutoTokenizer

            path = training_model_path(self.config)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self.name = str(path)
        except Exception as error:  # stats lose one field; collection must go on
            print(f"warning: token counts unavailable ({error})", file=sys.stderr)
            self._failed = True
        return self._tokenizer


def training_model_path(config: Config) -> str:
    """The model the data will train: the configured one, else the collecting model, else the tiny one."""
    if config.training.sft_config.model_name_or_path:
        return config.training.sft_config.model_name_or_path
    if config.policy.backend in ("hf", "openai") and config.policy.model_path:
        return config.policy.model_path
    from pettingllms.tiny_model import tiny_model_path

    return str(tiny_model_path())


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON so that a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as handle:
        json.dump(content, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def collect(config: Config) -> CollectResult:
    """Run a collection (or resume one) and return where its files are, with its stats.

    SIGINT/SIGTERM stop it cleanly: episodes in flight are abandoned, everything finished is
    on disk, and the same command resumes.
    """
    collector = Collector(config)
    try:
        todo = collector.prepare()
        stats: dict[str, Any] = {}
        stopped_by = run_until_signal(
            collector.run(todo),
            threads=config.training.rollout_concurrency + 4,
            finish=lambda: stats.update(collector.write_stats()),
        )
    finally:
        collector.close()
    return CollectResult(collector.files, stats, stopped_by)


def run_until_signal(coroutine, threads: int, finish: Callable[[], None]) -> int | None:
    """Run `coroutine` to its end, then `finish()`; return the signal that cancelled it, if one did.

    The first signal cancels it; later ones are ignored until `finish` is done, while the
    episodes' threads (model code in the sandbox, a generate call) wind down, so a second
    Ctrl-C cannot tear the stop itself. Our own loop rather than `asyncio.run`, whose
    handler would turn that second Ctrl-C into a KeyboardInterrupt.
    """
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=threads))
    task = loop.create_task(coroutine)
    stopping = []

    def stop(signum, frame):
        if stopping or task.done():
            return  # already stopping, or nothing left to stop
        stopping.append(signum)
        print("\nStopping: abandoning the episodes in flight...", file=sys.stderr)
        loop.call_soon_threadsafe(task.cancel)

    previous = _install_handlers(stop)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        try:
            finish()
        finally:
            _restore_handlers(previous)
    return stopping[0] if stopping else None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_handlers(handler) -> dict[int, Any]:
    """Point SIGINT and SIGTERM at `handler`; return the handlers they had."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may handle signals; a caller elsewhere keeps its own
    return {number: signal.signal(number, handler) for number in STOP_SIGNALS}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)


__all__ = ["CollectResult", "RunFiles", "collect", "plan_episodes", "make_env", "read_ledger"]
