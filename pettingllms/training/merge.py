"""Merge a LoRA adapter into its base model and save a standalone model (`pettingllms merge-lora`).

    >>> merge_lora("Qwen/Qwen2.5-0.5B-Instruct", "./sft_model", "./sft_model/merged")

The merged folder loads with `AutoModelForCausalLM.from_pretrained` alone (no PEFT), so it
can be served by vLLM / SGLang / `transformers serve` or collected with again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pettingllms.exceptions import UserError


def merge_lora(base_model_name: str, lora_model_path: str, output_path: str, overwrite: bool = False) -> Path:
    """Write `base_model_name` with the adapter at `lora_model_path` folded in to `output_path`.

    The tokenizer comes from the adapter folder when it holds one (training saves the one it
    used there), else from the base model. An existing non-empty `output_path` is refused
    unless `overwrite`, which replaces it.
    """
    from peft import PeftModel

    from pettingllms.training.sft import load_model, load_tokenizer

    adapter, output = Path(lora_model_path), Path(output_path)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"No LoRA adapter at '{adapter}': it has no adapter_config.json.")
    _check_output(output, overwrite, protected=[path for path in (adapter, Path(base_model_name)) if path.exists()])
    model = PeftModel.from_pretrained(load_model(base_model_name), str(adapter)).merge_and_unload()
    tokenizer_source = str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_model_name
    tokenizer = load_tokenizer(tokenizer_source)
    if output.exists():
        shutil.rmtree(output)  # only reached when empty or `overwrite` (see _check_output)
    output.mkdir(parents=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def _check_output(output: Path, overwrite: bool, protected: list[Path]) -> None:
    """Refuse an output folder whose replacement would destroy work."""
    if any(path.resolve().is_relative_to(output.resolve()) for path in protected):
        raise UserError(f"Output path '{output}' holds the base model or the adapter; choose another folder.")
    if output.exists() and not output.is_dir():
        raise UserError(f"Output path '{output}' is a file; choose a folder.")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise UserError(f"Output folder '{output}' is not empty; pass overwrite=True (--overwrite) to replace it.")
        if not (output / "config.json").is_file():
            # --overwrite replaces a model, never an arbitrary folder (a typo must not cost a home directory).
            raise UserError(
                f"Output folder '{output}' is not empty and holds no model (no config.json); "
                "--overwrite only replaces a model folder. Choose an empty or new folder."
            )
