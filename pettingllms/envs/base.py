"""The base class of every pettingllms environment: turn-based, several agents, text in and out.

Gymnasium gives the API (`reset(seed=...)`, `step(action)`, `np_random`, the registry);
PettingZoo's AEC model gives the turn-taking names (`possible_agents`, `agent_selection`).
One `step` is one agent's reply. Agents act in `possible_agents` order; a *round* is one
reply from each of them, and `max_turns` bounds the rounds.

A subclass writes the task and its rules in five methods:

    _reset_task(options)           build the task from `self.np_random` (or options["task_index"]);
                                   `self.seed` holds the reset's seed
    _prompt(agent)                 the chat messages `agent` sees now
    _apply_reply(agent, text)      parse the reply, change the state, return a `TurnResult`
    _episode_success()             decided once, when the episode ends
    _expert_reply(agent, wrong)    the text the right agent would write (or a wrong one)

`step` never raises on model text: a reply that cannot be parsed is an invalid action, and
the `TurnResult` says so (`valid=False`, `parse_error`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium

Message = dict[str, str]


@dataclass
class TurnResult:
    """What one agent's reply did, as decided by the environment."""

    reward: float = 0.0
    valid: bool = True
    """The reply could be parsed into an action."""
    parse_error: str | None = None
    """Why the reply could not be parsed (when `valid` is False)."""
    done: bool = False
    """The task is decided now (the episode terminates before its turn budget)."""
    agent_success: bool | None = None
    """The acting agent's own success on this turn, where the environment can tell."""
    details: dict[str, Any] = field(default_factory=dict)
    """Anything worth keeping in the rollout log (program output, test results...)."""


class TurnBasedTextEnv(gymnasium.Env):
    """Base class; see the module docstring for what a subclass writes."""

    metadata = {"render_modes": ["ansi"]}
    possible_agents: tuple[str, ...] = ()
    default_max_turns: int = 3
    task_source: str = "procedural"
    """Where tasks come from, as `pettingllms envs` shows it."""
    has_expert: bool = True
    non_trainable_agents: tuple[str, ...] = ()
    """Agents the env simulates (a patient, a user): their turns are not training records unless
    `agents.<agent>.trainable=true` says otherwise."""

    @property
    def has_test_split(self) -> bool:
        """Whether `split="test"` gives tasks that training never sees (procedural envs: disjoint seeds)."""
        return True

    def __init__(self, max_turns: int | None = None, render_mode: str | None = None):
        if max_turns is None:
            max_turns = self.default_max_turns
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.max_turns = max_turns
        self.render_mode = render_mode
        self.agents: list[str] = []
        self.agent_selection: str = self.possible_agents[0]
        self.task_id: str = ""
        self.seed: int | None = None
        """The seed of the current episode's `reset` (None when reset drew its own)."""
        self.round_idx = 0
        self.turn_idx = 0
        self.success: bool | None = None
        self.agent_success: dict[str, bool | None] = {}
        self._done = True

    # -- the Gymnasium API -------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.seed = seed
        self.agents = list(self.possible_agents)
        self.agent_selection = self.agents[0]
        self.round_idx = 0
        self.turn_idx = 0
        self.success = None
        self.agent_success = {agent: None for agent in self.agents}
        self._done = False
        self._reset_task(dict(options or {}))
        return self.observe(self.agent_selection), self._info(TurnResult())

    def step(self, action: str):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        agent = self.agent_selection
        text = action if isinstance(action, str) else str(action)
        result = self._apply_reply(agent, text)
        if result.agent_success is not None:
            self.agent_success[agent] = result.agent_success
        self.turn_idx += 1
        position = self.agents.index(agent) + 1
        if position == len(self.agents):
            self.round_idx += 1
        self.agent_selection = self.agents[position % len(self.agents)]

        terminated = result.done
        truncated = not terminated and position == len(self.agents) and self.round_idx >= self.max_turns
        if terminated or truncated:
            self._done = True
            self.success = bool(self._episode_success())
            self.agents = []
        obs = [] if self._done else self.observe(self.agent_selection)
        return obs, float(result.reward), terminated, truncated, self._info(result)

    def observe(self, agent: str) -> list[Message]:
        """The chat messages `agent` would see now."""
        return self._prompt(agent)

    def expert_reply(self, wrong: bool = False) -> str:
        """The text the acting agent should write now; `wrong=True` gives a plausible wrong one."""
        if not self.has_expert:
            raise NotImplementedError(f"{type(self).__name__} has no expert")
        return self._expert_reply(self.agent_selection, wrong)

    def render(self) -> str:
        return repr(self)

    def _info(self, result: TurnResult) -> dict[str, Any]:
        return {
            "agent": None if self._done else self.agent_selection,
            "task_id": self.task_id,
            "turn_idx": self.turn_idx,
            "round_idx": self.round_idx,
            "valid": result.valid,
            "parse_error": result.parse_error,
            "details": result.details,
            "success": self.success,
            "agent_success": dict(self.agent_success),
        }

    # -- what a subclass writes --------------------------------------------------------

    def _reset_task(self, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def _prompt(self, agent: str) -> list[Message]:
        raise NotImplementedError

    def _apply_reply(self, agent: str, text: str) -> TurnResult:
        raise NotImplementedError

    def _episode_success(self) -> bool:
        raise NotImplementedError

    def _expert_reply(self, agent: str, wrong: bool) -> str:
        raise NotImplementedError
