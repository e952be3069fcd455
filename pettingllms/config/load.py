"""The configuration: dataclasses with a help string per field, loaded from YAML + `key=value`.

Layers, later ones win:

1. the defaults of the dataclasses in `schema`;
2. `configs/env/<env.name>.yaml`, the chosen environment's defaults;
3. a preset, `config=path/to/file.yaml` (quick-test uses `configs/quick_test.yaml`);
4. the groups chosen on the command line: `policy=<name>` (`configs/policy/<name>.yaml`)
   and `env=<name>`, so they win over a preset;
5. dotted overrides, `training.sft_num_episodes=50 env.max_turns=2`.

An unknown key is a `ConfigError` that names the key and the nearest valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pettingllms.config.schema import STATEFUL_BENCHMARKS, STATEFUL_ENV, Config
from pettingllms.exceptions import ConfigError


def _config_dir() -> Path:
    """configs/ of the repository (an editable install), else the copy installed with the package."""
    package = Path(__file__).resolve().parent.parent
    repository = package.parent / "configs"
    return repository if repository.is_dir() else package / "configs"


CONFIG_DIR = _config_dir()
GROUPS = ("env", "policy")
"""Names that select a YAML file when given without a dot: `policy=expert`, `env=sokoban`."""


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the config from the layers in the module docstring; raise ConfigError on mistakes."""
    presets, groups, dotted = _split_overrides(overrides)
    _check_env_choice(groups, dotted)
    layers = [_schema()]
    preset_layer = OmegaConf.merge(OmegaConf.create(), *(_read_yaml(Path(preset)) for preset in presets))
    env_name = groups.get("env") or _dotted_value(dotted, "env.name") or OmegaConf.select(preset_layer, "env.name")
    env_name = env_name or Config().env.name
    if env_name == STATEFUL_ENV:
        benchmark = _dotted_value(dotted, "env.benchmark") or OmegaConf.select(preset_layer, "env.benchmark")
        if benchmark not in STATEFUL_BENCHMARKS:
            raise ConfigError(f"env.name={STATEFUL_ENV} needs env.benchmark={{{','.join(STATEFUL_BENCHMARKS)}}}.")
        env_name = benchmark
    env_file = CONFIG_DIR / "env" / f"{env_name}.yaml"
    if env_file.exists():
        layers.append(_read_yaml(env_file))
    layers.append(preset_layer)
    if "policy" in groups:
        layers.append(_read_yaml(_group_file("policy", groups["policy"])))
    layers += [OmegaConf.create({"env": {"name": env_name}}), parse_dotted(dotted)]
    for layer in layers[1:]:
        check_keys(OmegaConf.to_container(layer), Config)
    try:
        merged = OmegaConf.merge(*layers)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        raise ConfigError(f"{key}: {_first_line(error)}" if key else _first_line(error)) from None
    if config.env.name == STATEFUL_ENV:  # an alias: the run is the benchmark's env, with its YAML
        config.env.name = config.env.benchmark
    if config.env.imports:
        from pettingllms.envs import import_env_modules

        import_env_modules(config.env.imports)
    return config


@functools.cache
def _schema() -> DictConfig:
    """The typed defaults every load merges onto: built once (0.2 s), since `merge` copies rather than changes it."""
    return OmegaConf.structured(Config)


def _split_overrides(overrides) -> tuple[list[str], dict[str, str], list[str]]:
    presets, groups, dotted = [], {}, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"Override '{item}' is not key=value (e.g. training.sft_num_episodes=50).")
        if key == "config":
            presets.append(value)
        elif key in GROUPS:
            groups[key] = value
        elif key == "env.import":  # `import` is a Python keyword, so the field is `imports`
            dotted.append(f"env.imports=[{value}]" if not value.startswith("[") else f"env.imports={value}")
        else:
            dotted.append(item)
    return presets, groups, dotted


def _check_env_choice(groups: dict[str, str], dotted: list[str]) -> None:
    """`env=A env.name=B` names two environments: refuse it instead of mixing A's YAML into B."""
    named = _dotted_value(dotted, "env.name")
    if "env" in groups and named is not None and named != groups["env"]:
        raise ConfigError(
            f"env={groups['env']} and env.name={named} name two environments; give one of them "
            "(env=NAME and env.name=NAME are the same choice)."
        )


def resolve_preset(config_path: str | None, config_name: str) -> Path:
    """The YAML file `--config-path DIR --config-name NAME` names, as Hydra finds it (DIR defaults to configs/)."""
    directory = Path(config_path).expanduser() if config_path else CONFIG_DIR
    file_name = config_name if config_name.endswith((".yaml", ".yml")) else f"{config_name}.yaml"
    path = directory / file_name
    if path.is_file():
        return path
    if not directory.is_dir():
        raise ConfigError(f"--config-path {directory} is not a folder.")
    available = sorted(item.stem for item in directory.glob("*.y*ml"))
    listing = ", ".join(available) if available else "no YAML file"
    raise ConfigError(f"--config-name {config_name}: there is no {path}. {directory} has: {listing}.")


def _dotted_value(dotted: list[str], key: str) -> str | None:
    values = [item.partition("=")[2] for item in dotted if item.partition("=")[0] == key]
    return values[-1] if values else None


def parse_dotted(dotted: list[str]):
    """The overrides as one layer. Values are read as YAML (numbers, booleans, lists), except
    for text settings, which keep the characters typed: `training.run_name=20261121_101500`
    must not turn into the number 20261121101500."""
    layer = OmegaConf.create()
    for item in dotted:
        key, _, text = item.partition("=")
        try:
            value = text if _is_text_key(key) and text not in ("null", "~") else OmegaConf.from_dotlist([f"v={text}"]).v
            OmegaConf.update(layer, key, value, force_add=True)
        except (OmegaConfBaseException, yaml.YAMLError) as error:  # `env.kwargs.x=[a` is a YAML error
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
        declared = _unwrap_optional(declared)
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
    environment = content.get("env")
    if isinstance(environment, DictConfig) and "import" in environment:  # the YAML spelling of env.imports
        value = environment.pop("import")
        environment["imports"] = [value] if isinstance(value, str) else value
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


def _unwrap_optional(hint: Any) -> Any:
    """`X` for `X | None` when X is a dataclass (a section that may be absent, such as `reward.judge`)."""
    arguments = [item for item in get_args(hint) if item is not type(None)]
    if get_origin(hint) in (Union, UnionType) and len(arguments) == 1 and is_dataclass(arguments[0]):
        return arguments[0]
    return hint


def _check_value(value: Any, hint: Any, prefix: str) -> None:
    hint = _unwrap_optional(hint)
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


def to_dict(config: Config) -> dict[str, Any]:
    """A plain, JSON-ready copy of the config (tuples become lists, as JSON has them)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def describe_keys(schema: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every key, for `pettingllms keys`."""
    rows = []
    defaults = schema()
    for item in fields(schema):
        hint = _unwrap_optional(get_type_hints(schema)[item.name])
        key = prefix + item.name
        if is_dataclass(hint):
            rows += describe_keys(hint, key + ".")
        elif get_origin(hint) is dict and is_dataclass(get_args(hint)[1]):
            rows += describe_keys(get_args(hint)[1], key + ".<name>.")
        else:
            text = item.metadata.get("help", "")
            if item.metadata.get("backends"):
                text = f"[{' / '.join(item.metadata['backends'])} only] {text}"
            rows.append((key, getattr(defaults, item.name), text))
    return rows
