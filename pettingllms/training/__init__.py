"""The training stage: fine-tune a model on collected records (TRL SFTTrainer + PEFT LoRA).

    >>> from pettingllms.training import SFTSettings, run_training
    >>> run_training(SFTSettings(output_dir="./sft_model"), ["sft_data/sft_data_*.jsonl"])

`pettingllms.config.sft` holds the settings, `data` the pure record -> sample helpers, `sft` the trainer
(also `python -m pettingllms.training.sft`, under torchrun too), `merge` the LoRA merge, `outputs`
the rule for which folders they may write. Which model to load, and loading it, is
`pettingllms.models`.
torch / transformers / trl are imported inside the functions that use them.
"""

from pettingllms.config.sft import SFTSettings

__all__ = ["SFTSettings", "merge_lora", "run_training"]


def __getattr__(name: str):
    # Imported on first use rather than here, so that `python -m pettingllms.training.sft`
    # does not find its own module already imported by the package (runpy warns about it).
    if name == "run_training":
        from pettingllms.training.sft import run_training

        return run_training
    if name == "merge_lora":
        from pettingllms.training.merge import merge_lora

        return merge_lora
    raise AttributeError(f"module 'pettingllms.training' has no attribute '{name}'")
