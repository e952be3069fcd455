"""The environment registry: every pettingllms environment, registered with Gymnasium.

All `register` calls live here, so this file is the list. Each short name maps to a
versioned Gymnasium id; bump `-vN` when an environment's behaviour changes, so data made
with the old version stays explainable.

    >>> import pettingllms
    >>> env = pettingllms.make("sokoban", max_turns=3)
    >>> env = gymnasium.make("pettingllms/Sokoban-v0")   # the same environment
"""

from __future__ import annotations

import difflib
import importlib

import gymnasium

from pettingllms.envs.base import TurnBasedTextEnv, TurnResult
from pettingllms.exceptions import ConfigError, UnknownEnvError

ENVIRONMENTS: dict[str, tuple[str, str]] = {
    # short name: (gymnasium id, entry point)
    "sokoban": ("pettingllms/Sokoban-v0", "pettingllms.envs.sokoban:SokobanEnv"),
    "plan_path": ("pettingllms/PlanPath-v0", "pettingllms.envs.plan_path:PlanPathEnv"),
    "sudoku": ("pettingllms/Sudoku-v0", "pettingllms.envs.sudoku:SudokuEnv"),
    "code_env": ("pettingllms/Code-v0", "pettingllms.envs.code:CodeEnv"),
    "code_single_agent": ("pettingllms/CodeSingleAgent-v0", "pettingllms.envs.code:CodeSingleAgentEnv"),
    "math_env": ("pettingllms/Math-v0", "pettingllms.envs.math:MathEnv"),
    "math_single_agent": ("pettingllms/MathSingleAgent-v0", "pettingllms.envs.math:MathSingleAgentEnv"),
}

for _gym_id, _entry_point in ENVIRONMENTS.values():
    # The text API has no observation/action spaces for the passive checker to test, and
    # order is enforced by the base class itself.
    gymnasium.register(id=_gym_id, entry_point=_entry_point, disable_env_checker=True, order_enforce=False)


def resolve_name(name: str) -> str:
    """The short registry name for `name` (a short name or a Gymnasium id)."""
    if name in ENVIRONMENTS:
        return name
    for short, (gym_id, _) in ENVIRONMENTS.items():
        if name == gym_id:
            return short
    close = difflib.get_close_matches(name, list(ENVIRONMENTS), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownEnvError(f"Unknown env '{name}'.{hint} Registered: {', '.join(ENVIRONMENTS)}")


def env_class(name: str) -> type[TurnBasedTextEnv]:
    """The class behind a registered name, imported on demand."""
    module_name, class_name = ENVIRONMENTS[resolve_name(name)][1].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make(name: str, **kwargs) -> TurnBasedTextEnv:
    """Build a registered environment by short name or Gymnasium id."""
    short = resolve_name(name)
    try:
        return gymnasium.make(ENVIRONMENTS[short][0], **kwargs)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise ConfigError(f"env '{short}' does not take that argument ({error}).") from None


__all__ = ["ENVIRONMENTS", "TurnBasedTextEnv", "TurnResult", "env_class", "make", "resolve_name"]
