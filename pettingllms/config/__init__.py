"""The configuration: what a run does (`schema`, `sft`) and how it is read from YAML + `key=value` (`load`).

>>> from pettingllms.config import load_config
>>> config = load_config(["env.name=sudoku", "policy=expert", "training.sft_num_episodes=50"])
"""

from pettingllms.config.load import CONFIG_DIR, all_keys, describe_keys, load_config, resolve_preset, to_dict
from pettingllms.config.schema import AgentConfig, Config, EnvConfig, PolicyConfig, TrainingConfig
from pettingllms.config.sft import SFTSettings

__all__ = [
    "CONFIG_DIR",
    "AgentConfig",
    "Config",
    "EnvConfig",
    "PolicyConfig",
    "SFTSettings",
    "TrainingConfig",
    "all_keys",
    "describe_keys",
    "load_config",
    "resolve_preset",
    "to_dict",
]
