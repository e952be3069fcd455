"""Evaluation: play a policy on tasks it never trained on and report how often it succeeds.

    >>> result = evaluate(load_config(["env.name=sudoku", "policy.model_path=./sft_model"]))
    >>> result.summary["success_rate"], result.summary["success_interval_95"]

An evaluation is a collection run on the env's test split (disjoint seeds), greedy by default,
written to `eval.output_dir`: the episodes (`rollouts_<run>.jsonl`, so an evaluation resumes
like a collection and every transcript can be read) and the summary `eval_<run>.json`. The
numbers are pure functions of the episodes, below.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from pettingllms.config import AgentConfig, Config, PolicyConfig
from pettingllms.exceptions import ConfigError
from pettingllms.records import Episode
from pettingllms.runfiles import RunFiles, read_ledger, write_json_atomic


@dataclass
class EvalResult:
    files: RunFiles
    summary: dict[str, Any]
    stopped_by: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None


def evaluation_config(config: Config) -> Config:
    """The collection settings of an evaluation: `eval.*` decides the episodes, files and sampling."""
    settings = config.eval
    plan = copy.deepcopy(config)
    plan.env.split = settings.split
    training = plan.training
    training.sft_num_episodes = settings.num_episodes
    training.num_samples_per_task = settings.num_samples_per_task
    training.min_successes_per_task = training.max_samples_per_task = None  # a test plays every sample
    training.rollout_concurrency = settings.concurrency
    training.seed = settings.seed
    training.sft_data_dir = settings.output_dir
    training.run_name = settings.run_name
    # Every turn is written (records of failures too), so the records file holds the whole test.
    training.only_success, training.dedup, training.max_records_per_task = False, False, None
    if settings.max_tokens is not None:
        for policy in plan.policies_by_name().values():
            policy.max_tokens = settings.max_tokens
    if settings.greedy and settings.num_samples_per_task == 1:
        for policy in plan.policies_by_name().values():
            policy.temperature = 0.0
        for agent in plan.agents.values():
            agent.temperature = None
    return plan


def evaluate(config: Config) -> EvalResult:
    """Play the evaluation (or resume it), write `eval_<run>.json`, and return its summary."""
    from pettingllms.collect import collect
    from pettingllms.collect.episode import make_env

    plan = evaluation_config(config)
    if plan.env.split == "test" and not make_env(plan).has_test_split:
        raise ConfigError(
            f"env '{plan.env.name}' with env.dataset={plan.env.dataset} has no test split (a task file is one "
            "split): evaluate on a separate file of tasks, env.dataset=FILE eval.split=train."
        )
    result = collect(plan)
    episodes = read_ledger(result.files.rollouts, repair=False)
    summary = summarize_evaluation(episodes, plan.training.num_samples_per_task)
    summary.update(
        run_name=result.files.run_name,
        split=plan.env.split,
        wall_time_s=result.stats.get("wall_time_s"),
        policies=describe_policies(plan),
        rollouts=str(result.files.rollouts),
    )
    write_json_atomic(result.files.evaluation, summary)
    return EvalResult(result.files, summary, result.stopped_by)


EVALUATED_POLICY = "evaluated_model"


def with_model(
    config: Config, model_path: str, agents: list[str], run_name: str | None, policy_name: str = EVALUATED_POLICY
) -> Config:
    """`config` with `agents` played by the local model (or adapter) at `model_path`, the others as before;
    the model's turns carry `policy_name` in the files."""
    plan = copy.deepcopy(config)
    shared = plan.policy
    plan.policies[policy_name] = PolicyConfig(
        name=policy_name,
        backend="hf",
        model_path=model_path,
        max_tokens=shared.max_tokens,
        device=shared.device,
        dtype=shared.dtype,
    )
    for agent in agents:
        settings = plan.agents.setdefault(agent, AgentConfig())
        settings.policy = policy_name
    plan.eval.run_name = run_name
    return plan


def trained_agents(config: Config) -> list[str]:
    """The agents whose turns training learned from: trainable, and selected by training.sft_config.agents."""
    from pettingllms.envs import env_class

    selected = set(config.training.sft_config.agents)
    simulated = env_class(config.env.name).non_trainable_agents
    return [
        agent
        for agent in config_agents(config)
        if config.trains(agent, simulated) and (not selected or agent in selected)
    ]


def describe_policies(config: Config) -> dict[str, dict[str, Any]]:
    """Who played which agent, as the summary records it."""
    named = config.policies_by_name()
    agents = {}
    for agent in config_agents(config):
        policy = named[config.policy_of(agent)]
        agents[agent] = {"policy": config.policy_of(agent), "backend": policy.backend, "model": model_of(policy)}
    return agents


def config_agents(config: Config) -> tuple[str, ...]:
    from pettingllms.envs import env_class

    return env_class(config.env.name).possible_agents


def model_of(policy: PolicyConfig) -> str | None:
    if policy.backend == "expert":
        return "expert"
    return policy.model_path or policy.model or ("tiny built-in model" if policy.backend == "hf" else None)


# ---------------------------------------------------------------- the numbers (pure)


def summarize_evaluation(episodes: list[Episode], samples_per_task: int = 1) -> dict[str, Any]:
    """Success with its 95 % interval, per-agent success and invalid actions, turns, tokens, pass@k."""
    finished = [episode for episode in episodes if not episode.get("error")]
    successes = sum(bool(episode["success"]) for episode in finished)
    low, high = wilson_interval(successes, len(finished))
    turns = [len(episode["turns"]) for episode in finished]
    summary: dict[str, Any] = {
        "env_name": episodes[0]["env_name"] if episodes else None,
        "episodes": len(finished),
        "successes": successes,
        "success_rate": round(successes / len(finished), 4) if finished else 0.0,
        "success_interval_95": [round(low, 4), round(high, 4)],
        "error_episodes": len(episodes) - len(finished),
        "errors": dict(Counter(episode["error"]["kind"] for episode in episodes if episode.get("error"))),
        "turns_per_episode": round(sum(turns) / len(turns), 3) if turns else 0.0,
        "per_agent": per_agent_summary(finished),
        "usage": {
            "prompt_tokens": sum(t.get("prompt_tokens") or 0 for e in finished for t in e["turns"]),
            "completion_tokens": sum(t.get("completion_tokens") or 0 for e in finished for t in e["turns"]),
        },
    }
    if samples_per_task > 1:
        summary["pass_at_k"] = pass_at_k_by_task(finished, samples_per_task)
    return summary


def per_agent_summary(episodes: list[Episode]) -> dict[str, dict[str, Any]]:
    """Per agent: turns played, the share of invalid actions, and its own success where the env tells."""
    turns: Counter = Counter()
    invalid: Counter = Counter()
    own: dict[str, list[bool]] = defaultdict(list)
    for episode in episodes:
        for turn in episode["turns"]:
            turns[turn["agent"]] += 1
            invalid[turn["agent"]] += not turn["valid"]
        for agent, success in (episode.get("agent_success") or {}).items():
            if success is not None:
                own[agent].append(bool(success))
    return {
        agent: {
            "turns": turns[agent],
            "invalid_action_rate": round(invalid[agent] / turns[agent], 4) if turns[agent] else 0.0,
            "agent_success_rate": round(sum(own[agent]) / len(own[agent]), 4) if own[agent] else None,
        }
        for agent in sorted(turns)
    }


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95 % by default); (0, 1) for no trials.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 or n successes,
    which is where a small evaluation of an untrained model lands.
    """
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k from `samples` attempts of which `correct` succeeded
    (Chen et al., 2021): 1 - C(n - c, k) / C(n, k)."""
    if samples - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / number for number in range(samples - correct + 1, samples + 1))


def pass_at_k_by_task(episodes: list[Episode], samples_per_task: int) -> dict[str, float]:
    """pass@k for k = 1..samples_per_task, averaged over the tasks (episodes grouped by env_idx)."""
    by_task: dict[int, list[bool]] = defaultdict(list)
    for episode in episodes:
        by_task[episode["env_idx"]].append(bool(episode["success"]))
    result = {}
    for k in range(1, samples_per_task + 1):
        scores = [pass_at_k(len(outcomes), sum(outcomes), k) for outcomes in by_task.values() if len(outcomes) >= k]
        result[str(k)] = round(sum(scores) / len(scores), 4) if scores else 0.0
    return result
