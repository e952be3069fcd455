"""Merge a LoRA adapter into its base model and save a standalone model (`pettingllms merge-lora`).

    >>> merge_lora("Qwen/Qwen2.5-0.5B-Instruct", "./sft_model", "./sft_model/merged")

The merged folder loads with `AutoModelForCausalLM.from_pretrained` alone (no PEFT), so it
can be served by vLLM / SGLang / `transformers serve` or collected with again. The base is
checked against the adapter first (`pettingllms.models.check_adapter_fits`).
"""

from __future__ import annotations

from pathlib import Path

from pettingllms.exceptions import UserError
from pettingllms.models import load_tokenizer, load_with_adapter
from pettingllms.training.outputs import claim_output


def merge_lora(base_model_name: str, lora_model_path: str, output_path: str, overwrite: bool = False) -> Path:
    """Write `base_model_name` with the adapter at `lora_model_path` folded in to `output_path`.

    The tokenizer comes from the adapter folder when it holds one (training saves the one it
    used there), else from the base model. `output_path` must be new or empty, or an earlier
    pettingllms output, which `overwrite` replaces (see `pettingllms.training.outputs`).
    """
    adapter, output_dir = Path(lora_model_path), Path(output_path)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"No LoRA adapter at '{adapter}': it has no adapter_config.json.")
    # Claimed before the (slow) load, so that a folder that cannot be written is said at once.
    output = claim_output(
        output_dir,
        kind="merge",
        overwrite=overwrite,
        overwrite_flag="--overwrite (overwrite=True)",
        protected=(adapter, Path(base_model_name)),
    )
    with output.discarded_on_failure():  # a refused base leaves no empty output folder behind
        model = load_with_adapter(base_model_name, str(adapter))
        tokenizer = load_tokenizer(str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_model_name)
    with output.writing():
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    return output_dir
