"""The environment registry: every pettingllms environment, registered with Gymnasium.

The built-in environments are registered here, so this file is their list. Each short name
maps to a versioned Gymnasium id; bump `-vN` when an environment's behaviour changes, so
data made with the old version stays explainable.

    >>> import pettingllms
    >>> env = pettingllms.make("sokoban", max_turns=3)
    >>> env = gymnasium.make("pettingllms/Sokoban-v1")   # the same environment

Your own environments join with `register(name, entry_point)` (docs/custom-env.md), from a
module that `env.import=my_pkg.my_envs` imports (`import_env_modules`), or from an installed
package's `pettingllms.envs` entry point, loaded the first time the registry is asked for a
name it lacks or for its listing (`describe_registry`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import sys
import threading
from collections.abc import Callable
from typing import Any, TypedDict

import gymnasium

from pettingllms.envs.base import TurnBasedTextEnv, TurnResult
from pettingllms.exceptions import ConfigError, UnknownEnvError

ENVIRONMENTS: dict[str, tuple[str, str | Callable[..., TurnBasedTextEnv]]] = {}
"""Short name -> (Gymnasium id, entry point: "module:Class" or the class itself)."""
PLUGIN_GROUP = "pettingllms.envs"
"""The entry-point group of installed packages that bring environments."""
_BUILT_IN = set()
_plugins_loaded = False
_plugins_lock = threading.RLock()


class EnvDescription(TypedDict):
    """One row of `pettingllms envs`."""

    name: str
    gym_id: str
    agents: tuple[str, ...]
    task_source: str
    expert: bool | None
    max_turns: int | None
    note: str
    """Where the env comes from when not built in, an alias's meaning, or why it is unavailable."""


def register(
    name: str,
    entry_point: str | Callable[..., TurnBasedTextEnv],
    gym_id: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Add an environment under short `name` (and Gymnasium id `gym_id`, default `name`).

    `entry_point` is "module:Class" (imported when first made) or the class. Registering a
    name again with the same entry point does nothing; with another one it is a ConfigError.
    """
    gym_id = gym_id or name
    if name in ENVIRONMENTS:
        if ENVIRONMENTS[name] == (gym_id, entry_point):
            return
        raise ConfigError(
            f"env '{name}' is already registered (entry point {_entry_point_text(ENVIRONMENTS[name][1])}); "
            "register yours under another name."
        )
    if gym_id in gymnasium.registry:
        raise ConfigError(f"Gymnasium id '{gym_id}' is already taken; register '{name}' with another gym_id.")
    ENVIRONMENTS[name] = (gym_id, entry_point)
    # The text API has no observation/action spaces for the passive checker to test, and
    # order is enforced by the base class itself.
    gymnasium.register(
        id=gym_id, entry_point=entry_point, kwargs=kwargs or {}, disable_env_checker=True, order_enforce=False
    )


register("sokoban", "pettingllms.envs.sokoban:SokobanEnv", "pettingllms/Sokoban-v1")
register("plan_path", "pettingllms.envs.plan_path:PlanPathEnv", "pettingllms/PlanPath-v1")
register("sudoku", "pettingllms.envs.sudoku:SudokuEnv", "pettingllms/Sudoku-v1")
register("code_env", "pettingllms.envs.code:CodeEnv", "pettingllms/Code-v0")
register("code_single_agent", "pettingllms.envs.code:CodeSingleAgentEnv", "pettingllms/CodeSingleAgent-v0")
register("math_env", "pettingllms.envs.math:MathEnv", "pettingllms/Math-v0")
register("math_single_agent", "pettingllms.envs.math:MathSingleAgentEnv", "pettingllms/MathSingleAgent-v0")
register("search_env", "pettingllms.envs.search:SearchEnv", "pettingllms/Search-v0")
register("search_single_agent", "pettingllms.envs.search:SearchSingleAgentEnv", "pettingllms/SearchSingleAgent-v0")
register("consult_env", "pettingllms.envs.consult:ConsultEnv", "pettingllms/Consult-v0")
register("consult_single_agent", "pettingllms.envs.consult:ConsultSingleAgentEnv", "pettingllms/ConsultSingleAgent-v0")
_BUILT_IN.update(ENVIRONMENTS)


# -- your own environments ----------------------------------------------------------------


def import_env_modules(modules: list[str]) -> None:
    """Import each module (`env.import=my_pkg.my_envs`), whose import registers environments.

    A module that cannot be imported, or fails while importing, is a one-line ConfigError.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # any failure inside the user's module is a mistake in the input
            raise ConfigError(f"env.import: cannot import '{module}': {_one_line(error)}") from None


def load_plugins() -> None:
    """Load the `pettingllms.envs` entry points of installed packages, once.

    Each entry point is a module to import or a callable to call, either of which registers
    environments. A broken plugin costs one warning line on stderr, never the registry.
    """
    global _plugins_loaded
    with _plugins_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True  # first, so that a plugin consulting the registry does not recurse
        for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            try:
                loaded = entry.load()
                if callable(loaded):
                    loaded()
            except Exception as error:  # a plugin's bug must not break `pettingllms envs` or a run
                print(
                    f"warning: env plugin '{entry.name}' ({entry.value}) failed to load and is skipped: "
                    f"{_one_line(error)}",
                    file=sys.stderr,
                )


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _entry_point_text(entry_point: str | Callable[..., Any]) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{getattr(entry_point, '__module__', '?')}:{getattr(entry_point, '__qualname__', entry_point)}"


# -- looking environments up --------------------------------------------------------------


def resolve_name(name: str) -> str:
    """The short registry name for `name` (a short name or a Gymnasium id)."""
    short = _find(name)
    if short is None:
        load_plugins()  # only a name the registry lacks needs them: they cannot replace a registered one
        short = _find(name)
    if short is None:
        close = difflib.get_close_matches(name, list(ENVIRONMENTS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownEnvError(f"Unknown env '{name}'.{hint} Registered: {', '.join(ENVIRONMENTS)}")
    return short


def _find(name: str) -> str | None:
    if name in ENVIRONMENTS:
        return name
    return next((short for short, (gym_id, _) in ENVIRONMENTS.items() if gym_id == name), None)


def env_class(name: str) -> type[TurnBasedTextEnv]:
    """The class behind a registered name, imported on demand."""
    entry_point = ENVIRONMENTS[resolve_name(name)][1]
    if not isinstance(entry_point, str):
        return entry_point
    module_name, class_name = entry_point.split(":")
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


def describe_registry() -> list[EnvDescription]:
    """Every environment as `pettingllms envs` lists it: the registered ones (built in, then your own
    and plugins'), and the config's aliases."""
    from pettingllms.config.schema import STATEFUL_BENCHMARKS, STATEFUL_ENV

    load_plugins()
    rows = [_describe(name) for name in ENVIRONMENTS]
    benchmarks = "|".join(STATEFUL_BENCHMARKS)
    rows.append(
        EnvDescription(
            name=STATEFUL_ENV,
            gym_id="",
            agents=(),
            task_source="",
            expert=None,
            max_turns=None,
            note=f"alias: env.name={STATEFUL_ENV} env.benchmark={benchmarks} runs that env",
        )
    )
    return rows


def _describe(name: str) -> EnvDescription:
    gym_id, entry_point = ENVIRONMENTS[name]
    note = "" if name in _BUILT_IN else f"from {_entry_point_text(entry_point)}"
    try:
        cls = env_class(name)
    except Exception as error:  # a listing names a broken env instead of failing
        unavailable = f"unavailable: {_one_line(error)}"
        return EnvDescription(
            name=name, gym_id=gym_id, agents=(), task_source="", expert=None, max_turns=None, note=unavailable
        )
    return EnvDescription(
        name=name,
        gym_id=gym_id,
        agents=tuple(cls.possible_agents),
        task_source=cls.task_source,
        expert=bool(cls.has_expert),
        max_turns=cls.default_max_turns,
        note=note,
    )


__all__ = [
    "ENVIRONMENTS",
    "EnvDescription",
    "TurnBasedTextEnv",
    "TurnResult",
    "describe_registry",
    "env_class",
    "import_env_modules",
    "load_plugins",
    "make",
    "register",
    "resolve_name",
]
