"""Runs written by hand for the stats, plots and report tests: exact numbers, no collection, instant.

A run here is the files `collect` would leave (rollouts, stats, config), holding episodes built
from a few parameters. The tests that check the numbers against a real `collect` build their own.
"""

from __future__ import annotations

import json
from pathlib import Path

from pettingllms.runfiles import RunFiles

NASTY = "</script><script>alert('x')</script><!-- <b>&amp; \"quoted\" \u00e9 \U0001f600"
"""Text a model could write that would break a page that does not escape it."""


def make_turn(agent: str, turn_idx: int, reward: float = 0.0, valid: bool = True, response: str = "Actions: [1]"):
    return {
        "turn_idx": turn_idx,
        "agent": agent,
        "policy_name": "expert",
        "trainable": True,
        "messages": [
            {"role": "system", "content": f"You are the {agent} agent."},
            {"role": "user", "content": f"Solve task, turn {turn_idx}."},
        ],
        "response": response,
        "prompt_text": None,
        "reward": reward,
        "valid": valid,
        "parse_error": None if valid else "no 'Actions:' line",
        "details": {"returncode": 0, "stdout": "Actions: [1]\n", "stderr": ""} if agent == "tool" else {},
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "finish_reason": None,
        "generate_s": 0.0,
        "step_s": 0.0,
    }


def make_episode(env_idx: int, rollout_idx: int, success: bool, rounds: int = 1, error: str | None = None, **turn):
    """A tool/planner episode of `rounds` rounds (two turns each); the last planner turn earns the reward."""
    turns = []
    for number in range(2 * rounds):
        agent = "tool" if number % 2 == 0 else "planner"
        last = number == 2 * rounds - 1
        turns.append(make_turn(agent, number, reward=1.0 if success and last else 0.0, **turn))
    return {
        "episode_id": f"toy-train-{env_idx}-{rollout_idx}",
        "env_name": "toy",
        "env_idx": env_idx,
        "rollout_idx": rollout_idx,
        "seed": env_idx,
        "task_id": f"toy-{env_idx}",
        "success": success,
        "agent_success": {"tool": None, "planner": None},
        "terminated": success,
        "truncated": not success,
        "error": {"kind": error, "message": "server said 503"} if error else None,
        "turns": turns,
        "wall_time_s": 0.5,
    }


def standard_episodes() -> list[dict]:
    """3 tasks x 2 samples: task 0 always solved, task 1 once (in 2 rounds), task 2 never; one error."""
    return [
        make_episode(0, 0, True),
        make_episode(0, 1, True),
        make_episode(1, 0, False, rounds=3),
        make_episode(1, 1, True, rounds=2),
        make_episode(2, 0, False, rounds=3, valid=False),
        make_episode(2, 1, False, error="http_5xx"),
    ]


def write_run(directory: Path, run: str, episodes: list[dict], training: dict | None = None) -> RunFiles:
    """The files of run `run` in `directory`: rollouts, config (with `training` settings), stats."""
    files = RunFiles(directory, run)
    files.prepare()
    files.rollouts.write_text("".join(json.dumps(episode) + "\n" for episode in episodes))
    settings = {"only_success": True, "collect_mode": "env", "num_samples_per_task": 2, **(training or {})}
    config = {"identity": {"env": {"name": "toy"}, "note": "<b>bold</b>"}, "config": {"training": settings}}
    files.config.write_text(json.dumps(config))
    files.stats.write_text(json.dumps({"wall_time_s": 3.5}))
    return files
