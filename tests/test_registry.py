"""Every registered environment passes the checker, the moment it is registered."""

import gymnasium
import pytest

import pettingllms
from pettingllms.envs import ENVIRONMENTS, TurnBasedTextEnv, env_class
from pettingllms.envs.checker import check_env
from pettingllms.exceptions import ConfigError, UnknownEnvError


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_every_registered_env_passes_the_checker(name):
    check_env(name, expert_seeds=range(5))


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
