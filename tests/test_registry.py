"""Every registered environment passes the checker, the moment it is registered."""

import gymnasium
import pytest

import pettingllms
from pettingllms.envs import ENVIRONMENTS, TurnBasedTextEnv, TurnResult, env_class
from pettingllms.envs.checker import (
    NEVER_VALID_REPLIES,
    check_api,
    check_env,
    check_invalid_replies,
    check_turn_budget,
)
from pettingllms.exceptions import ConfigError, UnknownEnvError

SANDBOXED_ENVS = {"sokoban", "plan_path", "sudoku", "code_env", "code_single_agent", "math_env"}
"""Envs whose agents write programs: their checker runs the expert's programs and the hostile ones
(one loops until its time limit) in the sandbox, 10-30 s each on 2 cores, so it is a slow test.
The garbage check below still covers them in the fast suite; a new env runs in both until listed."""


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SANDBOXED_ENVS else name for name in ENVIRONMENTS]
)
def test_every_registered_env_passes_the_checker(name):
    check_env(name, expert_seeds=range(5))


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_every_registered_env_refuses_garbage_and_keeps_its_turn_budget(name):
    """The checker's parts that run no program, so the fast suite still checks every env."""
    env = pettingllms.make(name)
    check_api(env)
    check_invalid_replies(env, NEVER_VALID_REPLIES)
    check_turn_budget(env)


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_make_by_short_name_and_by_gymnasium_id_gives_the_same_env(name):
    gym_id = ENVIRONMENTS[name][0]
    by_name, by_id = pettingllms.make(name), gymnasium.make(gym_id)
    assert type(by_name) is type(by_id) is env_class(name)
    assert isinstance(by_name, TurnBasedTextEnv)
    assert by_name.reset(seed=4)[0] == by_id.reset(seed=4)[0]


def test_unknown_env_lists_the_registered_ones():
    with pytest.raises(UnknownEnvError, match=r"Unknown env 'sokobn'. Did you mean 'sokoban'\? Registered: sokoban,"):
        pettingllms.make("sokobn")


def test_unknown_constructor_argument_is_a_config_error():
    with pytest.raises(ConfigError, match="does not take that argument"):
        pettingllms.make("sokoban", no_such_argument=1)


def test_max_turns_is_validated():
    with pytest.raises(ValueError, match="max_turns must be a positive integer"):
        pettingllms.make("sokoban", max_turns=0)


class AcceptsAnythingEnv(TurnBasedTextEnv):
    """An env whose parser takes any text as an action: what the checker is there to catch."""

    possible_agents = ("solver",)
    has_expert = False

    def _reset_task(self, options):
        self.task_id = "anything"

    def _prompt(self, agent):
        return [{"role": "user", "content": "Say anything."}]

    def _apply_reply(self, agent, text):
        return TurnResult(details={"reply": text[:20]})

    def _episode_success(self):
        return False


def test_checker_fails_an_env_that_accepts_garbage():
    with pytest.raises(AssertionError, match=r"solver accepted '': garbage must be an invalid action"):
        check_invalid_replies(AcceptsAnythingEnv())


class RefusesWithoutReasonEnv(AcceptsAnythingEnv):
    def _apply_reply(self, agent, text):
        return TurnResult(valid=False, parse_error="" if not text.strip() else "not an answer")


def test_checker_fails_an_env_that_refuses_without_saying_why():
    with pytest.raises(AssertionError, match=r"solver refused '' without saying why \(''\)"):
        check_invalid_replies(RefusesWithoutReasonEnv())
