"""One episode: build the env, map its agents to policies, and play it to the end.

Model calls are awaited (so a batching backend sees the requests of all episodes in flight at
once) and environment steps run in threads (they may run model-written code in the sandbox).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from dataclasses import dataclass
from typing import Any

from pettingllms import envs
from pettingllms.collect.plan import EpisodeSpec
from pettingllms.config import Config
from pettingllms.exceptions import ConfigError, InfrastructureError, UserError
from pettingllms.policies import GenerationRequest, Policy, SamplingParams, build_policy, sampling_for
from pettingllms.records import Episode

RESERVED_ENV_KWARGS = ("max_turns", "dataset", "shuffle", "split")
"""Env arguments with a key of their own (env.max_turns...), refused under env.kwargs."""


@dataclass
class AgentSlot:
    """How one agent is played: by which policy, sampling how, recorded or not."""

    policy: Policy
    sampling: SamplingParams
    trainable: bool


def make_env(config: Config) -> envs.TurnBasedTextEnv:
    """The configured environment; a setting it does not take is a ConfigError."""
    name = envs.resolve_name(config.env.name)
    accepted = [p for p in inspect.signature(envs.env_class(name).__init__).parameters if p != "self"]
    for key in config.env.kwargs:
        if key not in accepted:
            raise ConfigError(f"env.kwargs.{key} is not an argument of env '{name}'; it takes: {', '.join(accepted)}.")
        if key in RESERVED_ENV_KWARGS:
            raise ConfigError(f"env.kwargs.{key}: set it as env.{key} instead.")
    kwargs: dict[str, Any] = dict(config.env.kwargs)
    if config.env.max_turns is not None:
        kwargs["max_turns"] = config.env.max_turns
    for key, value in (("dataset", config.env.dataset), ("shuffle", config.env.shuffle or None)):
        if value is not None and key not in accepted:
            raise ConfigError(f"env.{key}: env '{name}' generates its tasks and takes no {key}.")
        if value is not None:
            kwargs[key] = value
    if "split" in accepted:  # procedural envs get the split through their seeds (EpisodePlan)
        kwargs["split"] = config.env.split
    try:
        return envs.make(name, **kwargs)
    except ValueError as error:  # the env's own argument checks
        raise ConfigError(f"env '{name}': {error}") from None


def build_agent_slots(config: Config, env: envs.TurnBasedTextEnv) -> dict[str, AgentSlot]:
    """Map every agent of `env` to its policy and sampling settings."""
    unknown = [agent for agent in config.agents if agent not in env.possible_agents]
    if unknown:
        raise ConfigError(
            f"agents.{unknown[0]}: env '{config.env.name}' has no such agent; "
            f"its agents are: {', '.join(env.possible_agents)}."
        )
    named = config.policies_by_name()
    built: dict[str, Policy] = {}
    slots = {}
    for agent in env.possible_agents:
        settings = config.agents.get(agent)
        policy_name = config.policy_of(agent)
        if policy_name not in built:
            built[policy_name] = build_policy(policy_name, named[policy_name], seed=config.training.seed)
        if built[policy_name].needs_expert and not env.has_expert:
            raise ConfigError(f"env '{config.env.name}' has no expert; use policy.backend=hf or openai.")
        trainable = config.trains(agent, env.non_trainable_agents)
        slots[agent] = AgentSlot(built[policy_name], sampling_for(named[policy_name], settings), trainable)
    return slots


def new_episode(spec: EpisodeSpec, env_name: str) -> Episode:
    """The episode record before its first turn (see `records.Episode`)."""
    return {
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
        "wall_time_s": 0.0,
    }


async def run_episode(
    env: envs.TurnBasedTextEnv, spec: EpisodeSpec, slots: dict[str, AgentSlot], env_name: str
) -> Episode:
    """Play one episode to its end (or to an infrastructure error) and return its full transcript."""
    started = time.perf_counter()
    episode = new_episode(spec, env_name)
    stage = "env"  # where an unexpected exception came from
    try:
        obs, info = await asyncio.to_thread(env.reset, seed=spec.seed, options={"task_index": spec.task_index})
        episode["task_id"] = info["task_id"]
        while True:
            agent = info["agent"]
            slot = slots[agent]
            expert = env.expert_reply if slot.policy.needs_expert else None
            request = GenerationRequest(obs, slot.sampling, agent, spec.episode_id, expert)
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
    except InfrastructureError as error:  # a server, a timeout, the sandbox: not the model's doing
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
