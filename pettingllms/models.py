"""Which model, and how to load it: the one module that answers "which model?".

    >>> resolve_model(None)                                   # the tiny built-in model's folder
    >>> find_model_dir("Qwen/Qwen2.5-0.5B-Instruct")          # a cached Hub id -> its snapshot
    >>> model = load_causal_lm("./sft_model", dtype="float32")  # an adapter: its base, adapter merged
    >>> tokenizer = load_tokenizer("./sft_model")

A model is a local folder (from `save_pretrained`), a LoRA adapter folder (from `pettingllms
train`) or a Hub id already in the local cache; nothing is downloaded. An adapter goes onto
a base only after `check_adapter_fits` compared the two: PEFT silently drops the weights that
find no module (a base with fewer layers) and loads onto any architecture whose module names
match (a Llama base takes a Qwen2 adapter without a word).

torch / transformers / peft are imported inside the functions that use them.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from pettingllms.exceptions import ModelNotFoundError, UserError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
LOCAL_BACKENDS = ("hf", "openai")
"""Backends whose `policy.model_path` is a model that training can load."""

# A LoRA weight as PEFT saves it: `base_model.model.<module>.lora_A.weight` ([r, in]),
# `lora_B.weight` ([out, r]); on embeddings `lora_embedding_A` ([r, in]) and `_B` ([out, r]).
_LORA_WEIGHT = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?:embedding_)?(?P<side>[AB])(?:\.weight)?$")


# ---------------------------------------------------------------- which model


def resolve_model(name_or_path: str | None) -> str:
    """`name_or_path`, or the tiny built-in model's folder (built on first use) when it is None or empty."""
    if name_or_path:
        return name_or_path
    from pettingllms.tiny_model import tiny_model_path

    return str(tiny_model_path())


def model_for_training(config: Any) -> str:
    """The model `train` fine-tunes: `training.sft_config.model_name_or_path`, else the collecting
    policy's `model_path` (hf and openai backends), else the tiny model."""
    if config.training.sft_config.model_name_or_path:
        return config.training.sft_config.model_name_or_path
    if config.policy.backend in LOCAL_BACKENDS and config.policy.model_path:
        return config.policy.model_path
    return resolve_model(None)


def collecting_model(record_paths: list[str]) -> str | None:
    """The model that collected every file of `record_paths` (files or globs), read from each
    run's saved config; None unless one hf / openai `model_path` collected them all."""
    from pettingllms.runfiles import RunFiles, read_run_config

    files = [path for pattern in record_paths for path in (sorted(glob.glob(pattern)) or [pattern])]
    runs = [RunFiles.of(path) for path in files]
    models = {_policy_model(read_run_config(run)) if run else None for run in runs}
    return models.pop() if len(models) == 1 else None


def _policy_model(saved: dict[str, Any] | None) -> str | None:
    config = saved.get("config") if isinstance(saved, dict) else None
    policy = config.get("policy") if isinstance(config, dict) else None
    if not isinstance(policy, dict) or policy.get("backend") not in LOCAL_BACKENDS:
        return None
    return policy.get("model_path")


def base_model_of(name_or_path: str) -> str:
    """The base model an adapter folder was trained on; any other model is its own base."""
    return adapter_base(find_model_dir(name_or_path)) or name_or_path


# ---------------------------------------------------------------- where its files are


def find_model_dir(name_or_path: str) -> str:
    """The local folder to load `name_or_path` from: itself, or a cached Hub id's snapshot.

    Loading a Hub id by name is not enough offline: transformers 5.23 looks for a PEFT
    adapter_config.json on the Hub even under local_files_only (five retries, ~25 s,
    when peft is installed), so a cached id is resolved to its snapshot folder here.
    """
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file():
        return str(path)
    snapshot = None if path.exists() else cached_hub_snapshot(name_or_path)
    if snapshot is not None:
        return snapshot
    if path.is_dir():
        what = "is a folder without config.json"
    elif path.exists():
        what = "is a file, not a model folder"
    else:
        what = "is neither a local folder nor a Hub id in the local cache"
    raise ModelNotFoundError(
        f"Model {name_or_path!r} {what}. pettingllms accepts a local folder with config.json "
        "(from save_pretrained), a LoRA adapter folder (from `pettingllms train`) or a Hub id already "
        "downloaded (`hf download ID`); nothing is downloaded."
    )


def cached_hub_snapshot(name: str) -> str | None:
    """The snapshot folder of Hub repo id `name` in the local HF cache, or None."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        config_file = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id is simply not cached
        return None
    return str(Path(config_file).parent) if isinstance(config_file, str) else None


def adapter_base(folder: str) -> str | None:
    """The `base_model_name_or_path` an adapter folder names; None for a folder that is no adapter."""
    config_file = Path(folder, ADAPTER_CONFIG)
    if not config_file.is_file():
        return None
    try:
        base = json.loads(config_file.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        base = None
    if not isinstance(base, str) or not base:
        raise ModelNotFoundError(f"Adapter '{folder}': {ADAPTER_CONFIG} names no base_model_name_or_path.")
    return base


# ---------------------------------------------------------------- loading


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a model folder, a cached Hub id, or an adapter folder (its own, else its base's)."""
    from transformers import AutoTokenizer

    folder = find_model_dir(name_or_path)
    base = adapter_base(folder)
    if base is not None and not Path(folder, "tokenizer_config.json").is_file():
        folder = find_model_dir(base)
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # OSError, ValueError, SafetensorError...: all mean "cannot load"
        raise ModelNotFoundError(f"Could not load the tokenizer of '{name_or_path}': {first_line(error)}") from None


SMALL_MODEL_PARAMETERS = 50_000_000
"""Below this, torch's intra-op threads cost more than they give on a CPU (measured in bench/)."""


def choose_cpu_threads(model: Any, requested: int | None = None) -> int | None:
    """Set torch's CPU thread count for `model`, and return it (None: left as it was).

    `requested` wins. Otherwise a small model on the CPU gets one thread unless OMP_NUM_THREADS
    says what the user wants: on a 2-core machine the tiny model trained 2-4x slower per step
    with torch's default of two threads whenever anything else ran (8x in one measurement).
    """
    import torch

    if requested is not None:
        torch.set_num_threads(requested)
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    parameters = list(model.parameters())
    on_cpu = all(parameter.device.type == "cpu" for parameter in parameters)
    if on_cpu and sum(parameter.numel() for parameter in parameters) < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)
        return 1
    return None


def load_causal_lm(
    name_or_path: str, *, dtype: Any = "auto", device: str | None = None, trainable_adapter: bool = False
) -> Any:
    """A causal LM from a model folder or cached Hub id; an adapter folder loads on the base it names.

    `dtype`: a torch dtype or its name; "auto" keeps the checkpoint's own. `device`: where to
    move it (None leaves it on the CPU). An adapter is merged into its base, unless
    `trainable_adapter`, which returns a PEFT model whose adapter training continues.
    """
    folder = find_model_dir(name_or_path)
    base = adapter_base(folder)
    if base is None:
        model = _from_pretrained(folder, name_or_path, dtype)
    else:
        model = load_with_adapter(base, folder, dtype=dtype, trainable=trainable_adapter)
    return model if device is None else model.to(device)


def load_with_adapter(base_name_or_path: str, adapter_dir: str, *, dtype: Any = "auto", trainable: bool = False) -> Any:
    """`base_name_or_path` with the LoRA adapter at `adapter_dir`, once `check_adapter_fits` agrees;
    merged into the base unless `trainable`."""
    from peft import PeftModel

    model = _from_pretrained(find_model_dir(base_name_or_path), base_name_or_path, dtype)
    check_adapter_fits(model, adapter_dir, base_name_or_path)
    try:
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
    except Exception as error:  # a broken adapter file: one line, like any other model that cannot load
        raise ModelNotFoundError(f"Could not load adapter '{adapter_dir}': {first_line(error)}") from None
    # Merged once at load: generation then costs what the base model costs.
    return model if trainable else model.merge_and_unload()


def _from_pretrained(folder: str, name: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except Exception as error:  # OSError, ValueError, SafetensorError...: all mean "cannot load"
        raise ModelNotFoundError(f"Could not load model '{name}': {first_line(error)}") from None


# ---------------------------------------------------------------- does the adapter fit?


def check_adapter_fits(base_model: Any, adapter_dir: str, base_name: str) -> None:
    """Refuse (UserError) a base the adapter cannot have been trained on; warn when it names another.

    Refused: another architecture than the base the adapter names (when that base is here to
    read), or a LoRA weight whose module the base lacks or whose shape differs from it.
    """
    recorded = adapter_base(adapter_dir)
    recorded_folder = _local_folder(recorded)
    recorded_config = _read_config(recorded_folder) if recorded_folder else {}
    if recorded_config.get("model_type"):
        _check_architecture(base_model.config, recorded_config, adapter_dir, base_name)
    problems = adapter_shape_problems(base_model, adapter_weight_shapes(adapter_dir))
    if problems:
        raise UserError(
            f"Adapter '{adapter_dir}' does not fit base model '{base_name}': {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            + f"; use the base it was trained on ('{recorded}')."
        )
    _warn_if_another_base(recorded, recorded_folder, base_name)


def _check_architecture(config: Any, recorded: dict[str, Any], adapter_dir: str, base_name: str) -> None:
    wanted = (recorded.get("model_type"), recorded.get("architectures"))
    found = (getattr(config, "model_type", None), getattr(config, "architectures", None))
    if wanted[0] != found[0] or (wanted[1] and found[1] and list(wanted[1]) != list(found[1])):
        raise UserError(
            f"Adapter '{adapter_dir}' was trained on a {_describe(*wanted)} model; base model "
            f"'{base_name}' is a {_describe(*found)}. Use a base of the adapter's architecture."
        )


def _describe(model_type: str | None, architectures: list[str] | None) -> str:
    return f"{model_type} ({', '.join(architectures)})" if architectures else str(model_type)


def _warn_if_another_base(recorded: str, recorded_folder: str | None, base_name: str) -> None:
    if recorded_folder is None:
        print(
            f"warning: the adapter was trained on '{recorded}', which is not here; loading it on "
            f"'{base_name}' (module shapes checked, architecture not).",
            file=sys.stderr,
        )
    elif os.path.realpath(recorded_folder) != os.path.realpath(find_model_dir(base_name)):
        print(f"warning: the adapter was trained on '{recorded}'; loading it on '{base_name}'.", file=sys.stderr)


def adapter_weight_shapes(adapter_dir: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in the adapter's weights file (empty when it has none: PEFT says so)."""
    folder = Path(adapter_dir)
    if (folder / ADAPTER_WEIGHTS[0]).is_file():
        from safetensors import safe_open

        with safe_open(folder / ADAPTER_WEIGHTS[0], framework="pt") as weights:
            return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    if (folder / ADAPTER_WEIGHTS[1]).is_file():
        import torch

        state = torch.load(folder / ADAPTER_WEIGHTS[1], map_location="cpu", weights_only=True)
        return {key: tuple(tensor.shape) for key, tensor in state.items()}
    return {}


def adapter_shape_problems(base_model: Any, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What in the adapter's LoRA weights the base cannot take: a missing module, a wrong shape."""
    problems = []
    for key, shape in shapes.items():
        match = _LORA_WEIGHT.match(key)
        if match is None:  # DoRA magnitudes, modules_to_save...: PEFT checks those itself
            continue
        module_name, side = match["module"], match["side"]
        try:
            features = _features(base_model.get_submodule(module_name))
        except AttributeError:
            problems.append(f"the base has no module {module_name}")  # once per module, not per A and B
            continue
        if features is None or len(shape) != 2:
            continue
        # lora_A is [r, in_features] and lora_B is [out_features, r].
        size, wanted = (shape[1], features[0]) if side == "A" else (shape[0], features[1])
        if size != wanted:
            what = "in" if side == "A" else "out"
            problems.append(f"{module_name} has {wanted} {what}-features in the base, {size} in the adapter")
    return list(dict.fromkeys(problems))


def _features(module: Any) -> tuple[int, int] | None:
    """(in, out) features of a module LoRA adapts; None for a kind it does not know."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return module.in_features, module.out_features
    if hasattr(module, "num_embeddings"):
        return module.num_embeddings, module.embedding_dim
    if type(module).__name__ == "Conv1D":  # GPT-2's transposed linear: weight is [in, out]
        return tuple(module.weight.shape)
    return None


def _local_folder(name_or_path: str) -> str | None:
    try:
        return find_model_dir(name_or_path)
    except ModelNotFoundError:
        return None


def _read_config(folder: str) -> dict[str, Any]:
    try:
        config = json.loads(Path(folder, "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def first_line(error: BaseException) -> str:
    """An exception's first message line (its type when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
