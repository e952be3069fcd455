"""The configuration: dataclasses with a help string per field, loaded from YAML + `key=value`.

Layers, later ones win:

1. the defaults below;
2. `configs/env/<env.name>.yaml`, the chosen environment's defaults;
3. a preset, `config=path/to/file.yaml` (quick-test uses `configs/quick_test.yaml`);
4. the groups chosen on the command line: `policy=<name>` (`configs/policy/<name>.yaml`)
   and `env=<name>`, so they win over a preset;
5. dotted overrides, `training.sft_num_episodes=50 env.max_turns=2`.

An unknown key is a `ConfigError` that names the key and the nearest valid ones.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pettingllms.exceptions import ConfigError
from pettingllms.training.config import SFTSettings


def _config_dir() -> Path:
    """configs/ of the repository (an editable install), else the copy installed with the package."""
    package = Path(__file__).resolve().parent
    repository = package.parent / "configs"
    return repository if repository.is_dir() else package / "configs"


CONFIG_DIR = _config_dir()
GROUPS = ("env", "policy")
"""Names that select a YAML file when given without a dot: `policy=expert`, `env=sokoban`."""


def _help(text: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class EnvConfig:
    name: str = _help("Registered environment (see `pettingllms envs`).", "sokoban")
    max_turns: int | None = _help("Rounds per episode (each agent replies once a round); None = the env's default.")
    dataset: str | None = _help(
        "Task source for dataset envs: 'humaneval', 'generated', or a local JSONL/Parquet path."
    )
    shuffle: bool = _help("Walk the dataset in a seeded random order instead of file order.", False)
    split: str = _help("'train' or 'test': the two use seed ranges that never overlap.", "train")
    kwargs: dict[str, Any] = _help("Other constructor arguments of the env, e.g. env.kwargs.num_boxes=2.", factory=dict)


@dataclass
class PolicyConfig:
    name: str = _help("The policy_name written into records.", "shared_model")
    backend: str = _help("'hf' (local transformers model), 'openai' (OpenAI-compatible server) or 'expert'.", "hf")
    model_path: str | None = _help(
        "hf: model folder or cached Hub id (None = the tiny built-in model). "
        "openai completions mode: the tokenizer to render the chat template."
    )
    error_rate: float = _help("expert: share of episodes the expert plays wrong, so runs contain failures.", 0.0)
    device: str = _help("hf: 'auto', 'cpu', 'cuda', 'cuda:1'...", "auto")
    dtype: str = _help("hf: 'auto', 'float32', 'bfloat16', 'float16'.", "auto")
    max_batch_size: int = _help("hf: most requests batched into one generate call.", 16)
    base_url: str | None = _help("openai: server URL, e.g. http://127.0.0.1:8000/v1.")
    base_urls: list[str] = _help("openai: several server URLs; requests are spread across them.", factory=list)
    model: str | None = _help("openai: the model name the server knows.")
    api_key_env: str | None = _help(
        "openai: the environment variable holding the API key (never written to "
        "files); None sends no key, as local servers expect."
    )
    mode: str = _help("openai: 'chat' (server applies the template) or 'completions' (applied here).", "chat")
    max_concurrency: int = _help("openai: most requests in flight at once.", 32)
    balance: str = _help(
        "openai: how requests spread over base_urls: 'least_in_flight' or 'round_robin'.", "least_in_flight"
    )
    extra_body: dict[str, Any] = _help(
        "openai: more fields for every request body (server-specific options).", factory=dict
    )
    timeout_s: float = _help("openai: read timeout of one request, seconds.", 120.0)
    connect_timeout_s: float = _help("openai: connect timeout, seconds.", 10.0)
    max_retries: int = _help("openai: retries on 429/5xx/timeouts/connection errors, with backoff.", 4)
    enable_thinking: bool | None = _help("Reasoning switch passed as chat_template_kwargs.enable_thinking.")
    temperature: float = _help("Sampling temperature (0 = greedy).", 1.0)
    top_p: float = _help("Nucleus sampling.", 1.0)
    max_tokens: int = _help("Most new tokens per reply.", 256)
    stop: list[str] = _help("Extra stop strings.", factory=list)


@dataclass
class AgentConfig:
    policy: str | None = _help("Name of the policy (in `policies`) that plays this agent; None = the shared `policy`.")
    trainable: bool = _help("False: the agent takes part but its turns are never written as training records.", True)
    temperature: float | None = _help("Overrides the policy's temperature for this agent.")
    top_p: float | None = _help("Overrides the policy's top_p for this agent.")
    max_tokens: int | None = _help("Overrides the policy's max_tokens for this agent.")
    stop: list[str] | None = _help("Overrides the policy's stop strings for this agent.")


@dataclass
class TrainingConfig:
    sft_num_episodes: int = _help("Episodes to collect (in total, counting a resumed run's earlier ones).", 100)
    only_success: bool = _help("Keep only turns of successful episodes (or agents, with collect_mode=agent).", True)
    collect_mode: str = _help("'env': success is the episode's; 'agent': each agent's own success.", "env")
    run_sft_training: bool = _help("In `run`: train after collecting.", True)
    sft_data_dir: str = _help("Where data files go.", "./sft_data")
    run_name: str | None = _help("Name of the collection run (default: start time); the same name resumes it.")
    num_samples_per_task: int = _help("Rollouts per task (episode i is task i // n, sample i % n).", 1)
    rollout_concurrency: int = _help("Most episodes in flight at once.", 16)
    seed: int = _help("First task seed; task k uses seed + k (plus the split's offset).", 0)
    dedup: bool = _help("Drop a record whose (agent, prompt, response) was already kept.", False)
    max_records_per_task: int | None = _help("Keep at most this many records per task.")
    train_data_path: Any = _help("train: data files or globs (a string or a list); default: newest sft_data_*.jsonl.")
    sft_config: SFTSettings = _help("Training settings.", factory=SFTSettings)


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    policies: dict[str, PolicyConfig] = _help("Extra named policies for role-specialized agents.", factory=dict)
    agents: dict[str, AgentConfig] = _help("Per-agent settings: policy, trainable, sampling.", factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the config from the layers in the module docstring; raise ConfigError on mistakes."""
    preset, groups, dotted = _split_overrides(overrides)
    layers = [OmegaConf.structured(Config)]
    preset_layer = _read_yaml(Path(preset)) if preset else OmegaConf.create()
    env_name = groups.get("env") or _dotted_value(dotted, "env.name") or OmegaConf.select(preset_layer, "env.name")
    env_name = env_name or Config().env.name
    env_file = CONFIG_DIR / "env" / f"{env_name}.yaml"
    if env_file.exists():
        layers.append(_read_yaml(env_file))
    layers.append(preset_layer)
    if "policy" in groups:
        layers.append(_read_yaml(_group_file("policy", groups["policy"])))
    layers += [OmegaConf.create({"env": {"name": env_name}}), _parse_dotted(dotted)]
    for layer in layers[1:]:
        check_keys(OmegaConf.to_container(layer), Config)
    try:
        merged = OmegaConf.merge(*layers)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        raise ConfigError(f"{key}: {_first_line(error)}" if key else _first_line(error)) from None
    validate(config)
    return config


def _split_overrides(overrides) -> tuple[str | None, dict[str, str], list[str]]:
    preset, groups, dotted = None, {}, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Override '{item}' is not key=value (e.g. training.sft_num_episodes=50).")
        if key == "config":
            preset = value
        elif key in GROUPS:
            groups[key] = value
        else:
            dotted.append(item)
    return preset, groups, dotted


def _dotted_value(dotted: list[str], key: str) -> str | None:
    values = [item.partition("=")[2] for item in dotted if item.partition("=")[0] == key]
    return values[-1] if values else None


def _parse_dotted(dotted: list[str]):
    """The overrides as one layer. Values are read as YAML (numbers, booleans, lists), except
    for text settings, which keep the characters typed: `training.run_name=20261121_101500`
    must not turn into the number 20261121101500."""
    layer = OmegaConf.create()
    for item in dotted:
        key, _, text = item.partition("=")
        try:
            value = text if _is_text_key(key) and text not in ("null", "~") else OmegaConf.from_dotlist([f"v={text}"]).v
            OmegaConf.update(layer, key, value, force_add=True)
        except OmegaConfBaseException as error:
            raise ConfigError(f"Invalid override '{item}': {_first_line(error)}") from None
    return layer


def _is_text_key(key: str) -> bool:
    """Whether the schema types `key` as text (str or str | None)."""
    declared = _declared_type(key)
    return declared is str or (
        get_origin(declared) in (Union, UnionType) and set(get_args(declared)) == {str, type(None)}
    )


def _declared_type(key: str) -> Any:
    """The type the schema declares for dotted `key` (None when it does not know the key)."""
    declared: Any = Config
    for part in key.split("."):
        if is_dataclass(declared):
            declared = get_type_hints(declared).get(part)
        elif get_origin(declared) is dict:
            declared = get_args(declared)[1]  # `part` names an entry, e.g. agents.<name>
        else:
            return None
    return declared


def _group_file(group: str, name: str) -> Path:
    available = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    if name not in available:  # only names from the folder: `policy=../x` must not reach other files
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown {group} '{name}'.{hint} Available: {', '.join(available)}")
    return CONFIG_DIR / group / f"{name}.yaml"


def _read_yaml(path: Path):
    if not path.exists():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        content = OmegaConf.load(path)
    except Exception as error:  # YAML syntax errors come in several types
        raise ConfigError(f"Cannot read {path}: {_first_line(error)}") from None
    if not isinstance(content, DictConfig):
        raise ConfigError(f"{path} must hold a mapping of settings (env:, policy:, training: ...).")
    return content


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def check_keys(values: Any, schema: type, prefix: str = "") -> None:
    """Raise ConfigError for the first key of `values` that `schema` (a dataclass) lacks."""
    if not isinstance(values, dict):
        return
    hints = get_type_hints(schema)
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(_unknown_key_message(prefix + str(key)))
        _check_value(value, hints[key], f"{prefix}{key}.")


def _check_value(value: Any, hint: Any, prefix: str) -> None:
    if is_dataclass(hint):
        check_keys(value, hint, prefix)
    elif get_origin(hint) is dict and isinstance(value, dict):
        item_type = get_args(hint)[1]
        if is_dataclass(item_type):
            for name, item in value.items():
                check_keys(item, item_type, f"{prefix}{name}.")


def all_keys() -> list[str]:
    """Every dotted key the config accepts (dict entries shown as <name>)."""
    return [key for key, _, _ in describe_keys()]


def _unknown_key_message(key: str) -> str:
    candidates = all_keys()
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:3]
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `pettingllms keys` to see them all."
    return f"Unknown config key '{key}'.{hint}"


def validate(config: Config) -> None:
    """Check values that types alone cannot; raise ConfigError naming the key."""
    training = config.training
    _require(training.sft_num_episodes > 0, "training.sft_num_episodes", training.sft_num_episodes, "an integer > 0")
    _require(
        training.num_samples_per_task > 0,
        "training.num_samples_per_task",
        training.num_samples_per_task,
        "an integer > 0",
    )
    _require(
        training.rollout_concurrency > 0, "training.rollout_concurrency", training.rollout_concurrency, "an integer > 0"
    )
    _require(
        training.collect_mode in ("env", "agent"), "training.collect_mode", training.collect_mode, "'env' or 'agent'"
    )
    _require(config.env.split in ("train", "test"), "env.split", config.env.split, "'train' or 'test'")
    _require(
        config.env.max_turns is None or config.env.max_turns > 0,
        "env.max_turns",
        config.env.max_turns,
        "an integer > 0",
    )
    if training.max_records_per_task is not None:
        _require(
            training.max_records_per_task > 0,
            "training.max_records_per_task",
            training.max_records_per_task,
            "an integer > 0",
        )
    if training.run_name is not None:
        _require(
            bool(training.run_name) and os.sep not in training.run_name and training.run_name not in (".", ".."),
            "training.run_name",
            training.run_name,
            "a plain file-name part without '/'",
        )
    _validate_policy("policy", config.policy)
    for name, policy in config.policies.items():
        _validate_policy(f"policies.{name}", policy)
    _validate_training(training.sft_config)
    for agent, settings in config.agents.items():
        if settings.policy is not None and settings.policy not in policies_by_name(config):
            raise ConfigError(
                f"agents.{agent}.policy='{settings.policy}' is not a policy. "
                f"Defined: {', '.join(policies_by_name(config))} (add it under policies.<name>)."
            )


def _validate_training(sft: SFTSettings) -> None:
    key = "training.sft_config"
    for name in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "lora_r",
        "lora_alpha",
        "max_seq_length",
        "logging_steps",
    ):
        _require(getattr(sft, name) > 0, f"{key}.{name}", getattr(sft, name), "an integer > 0")
    _require(sft.num_train_epochs > 0, f"{key}.num_train_epochs", sft.num_train_epochs, "a number > 0")
    _require(sft.learning_rate > 0, f"{key}.learning_rate", sft.learning_rate, "a number > 0")
    _require(0 <= sft.lora_dropout < 1, f"{key}.lora_dropout", sft.lora_dropout, "a number in [0, 1)")
    _require(sft.thinking in ("keep", "strip"), f"{key}.thinking", sft.thinking, "'keep' or 'strip'")
    _require(
        sft.lr_scheduler_type in SCHEDULERS, f"{key}.lr_scheduler_type", sft.lr_scheduler_type, ", ".join(SCHEDULERS)
    )
    for tracker in (name.strip() for name in sft.report_to.split(",")):
        if tracker not in ("none", "all") and importlib.util.find_spec(tracker) is None:
            raise ConfigError(f"{key}.report_to={tracker!r} needs the {tracker} package: pip install {tracker}")


SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)
"""transformers' learning-rate schedules (`SchedulerType`), listed here so that checking
a config does not import transformers."""


def _validate_policy(key: str, policy: PolicyConfig) -> None:
    _require(
        policy.backend in ("hf", "openai", "expert"), f"{key}.backend", policy.backend, "'hf', 'openai' or 'expert'"
    )
    _require(0.0 <= policy.error_rate <= 1.0, f"{key}.error_rate", policy.error_rate, "a number in [0, 1]")
    _require(policy.mode in ("chat", "completions"), f"{key}.mode", policy.mode, "'chat' or 'completions'")
    _require(policy.max_tokens > 0, f"{key}.max_tokens", policy.max_tokens, "an integer > 0")
    _require(policy.temperature >= 0, f"{key}.temperature", policy.temperature, "a number >= 0")
    _require(0 < policy.top_p <= 1, f"{key}.top_p", policy.top_p, "a number in (0, 1]")
    _require(policy.max_concurrency > 0, f"{key}.max_concurrency", policy.max_concurrency, "an integer > 0")
    _require(policy.max_retries >= 0, f"{key}.max_retries", policy.max_retries, "an integer >= 0")
    _require(
        policy.timeout_s > 0 and policy.connect_timeout_s > 0,
        f"{key}.timeout_s/connect_timeout_s",
        (policy.timeout_s, policy.connect_timeout_s),
        "numbers > 0",
    )
    _require(
        policy.balance in ("least_in_flight", "round_robin"),
        f"{key}.balance",
        policy.balance,
        "'least_in_flight' or 'round_robin'",
    )


def _require(ok: bool, key: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid; expected {accepted}.")


def policies_by_name(config: Config) -> dict[str, PolicyConfig]:
    """The shared policy (under its own `name`) and the extra named ones."""
    named = {config.policy.name: config.policy}
    named.update(config.policies)
    return named


def policy_of(config: Config, agent: str) -> str:
    """The name of the policy that plays `agent`: its own `agents.<agent>.policy`, else the shared one."""
    settings = config.agents.get(agent)
    return (settings.policy if settings else None) or config.policy.name


def to_dict(config: Config) -> dict[str, Any]:
    """A plain, JSON-ready copy of the config."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def describe_keys(schema: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every key, for `pettingllms keys`."""
    rows = []
    defaults = schema()
    for item in fields(schema):
        hint = get_type_hints(schema)[item.name]
        key = prefix + item.name
        if is_dataclass(hint):
            rows += describe_keys(hint, key + ".")
        elif get_origin(hint) is dict and is_dataclass(get_args(hint)[1]):
            rows += describe_keys(get_args(hint)[1], key + ".<name>.")
        else:
            rows.append((key, getattr(defaults, item.name), item.metadata.get("help", "")))
    return rows
