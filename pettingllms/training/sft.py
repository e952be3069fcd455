"""Fine-tune a model on collected records with TRL's `SFTTrainer` and a PEFT LoRA adapter.

    >>> summary = run_training(SFTSettings(max_steps=20), ["sft_data/sft_data_*.jsonl"])

Also a small entry point of its own, which runs under `torchrun` / `accelerate launch` too
(the Trainer sets up DDP from the launcher's environment):

    torchrun --nproc_per_node 2 -m pettingllms.training.sft --data 'sft_data/*.jsonl' max_steps=20

The loss mask. Each record becomes a conversational prompt-completion sample (data.py) and
TRL renders prompt and prompt+completion with the model's chat template; with
`completion_only_loss` no prompt token carries loss. When the template marks assistant text
with `{% generation %}` and the marked span ends on the end-of-turn token, TRL's
`assistant_only_loss` is switched on as well and a token is trained only if both masks keep
it: exactly the reply and its end-of-turn token (ChatML: `content<|im_end|>`, not the `\n`
written after it). With any other template the loss covers all the template writes after
the prompt: the reply, its end-of-turn token and any trailing separator.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from pettingllms.config.sft import SFTSettings
from pettingllms.console import info, is_main_process, print_table, quiet_libraries
from pettingllms.exceptions import ConfigError, DataError, UserError
from pettingllms.models import (
    adapter_base,
    base_model_of,
    choose_cpu_threads,
    find_model_dir,
    first_line,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
)
from pettingllms.training.data import (
    build_samples,
    expand_paths,
    group_by_policy,
    read_records,
    select_records,
    split_eval,
)
from pettingllms.training.outputs import SUMMARY_FILE, Output, claim_output
from pettingllms.training.progress import training_progress_callback, training_summary_rows

KEY = "training.sft_config"
"""Where the settings live on the command line; error messages name the keys under it."""


# ---------------------------------------------------------------- the stage


def run_training(
    settings: SFTSettings, data_paths: list[str], policy_models: dict[str, str] | None = None
) -> dict[str, Any]:
    """Train on the records in `data_paths` (files or globs); return the training summary.

    Writes the adapter (or full model), tokenizer, training args and `training_summary.json`
    to `settings.output_dir`; with `per_policy`, one such folder per policy inside it, each
    trained from `policy_models[policy]` when given (role-specialized agents on different
    models), else from `settings.model_name_or_path`. The output folder is claimed (see
    `training.outputs`) before any model is loaded.
    """
    settings = _as_settings(settings)
    records, report = select_records(read_records(data_paths, settings), settings)
    eval_records = read_eval_records(settings)
    info(f"{report.describe()}.")
    data_files = expand_paths(data_paths)
    sources = {"data_files": [str(path) for path in data_files], "selection": dataclasses.asdict(report)}
    models = _model_folders([settings.model_name_or_path, *(policy_models or {}).values()])
    inputs = (*data_files, *expand_paths(_split_paths(settings.eval_data_path)), *models)
    output = claim_training_output(settings, inputs)
    if not settings.per_policy:
        return train_model(settings, records, eval_records, sources, output)
    summaries = {}
    for policy, group in group_by_policy(records).items():
        info(f"Policy '{policy}': {len(group)} records.")
        model = (policy_models or {}).get(policy) or settings.model_name_or_path
        policy_settings = dataclasses.replace(
            settings, output_dir=str(Path(settings.output_dir) / policy), model_name_or_path=model
        )
        policy_eval = [r for r in eval_records if r["metadata"].get("policy_name") == policy]
        policy_output = claim_training_output(policy_settings, inputs)
        summaries[policy] = train_model(policy_settings, group, policy_eval, sources, policy_output)
    summary = {"output_dir": settings.output_dir, "per_policy": summaries}
    with output.writing():
        _write_main(Path(settings.output_dir) / SUMMARY_FILE, summary)
    return summary


def claim_training_output(settings: SFTSettings, inputs: tuple[Path, ...] = ()) -> Output:
    """`settings.output_dir`, checked and made writable, or a one-line UserError (see `training.outputs`).

    Only the main process claims: under torchrun the others would race it while it empties
    the folder.
    """
    if not _is_main_process():
        return Output(Path(settings.output_dir), fresh=False, existed=True)
    return claim_output(
        settings.output_dir,
        kind="train",
        overwrite=settings.overwrite,
        overwrite_flag=f"{KEY}.overwrite=true",
        resume=settings.resume_from_checkpoint is not None,
        resume_flag=f"{KEY}.resume_from_checkpoint=last",
        protected=inputs,
    )


def _model_folders(names: list[str | None]) -> list[Path]:
    return [Path(name) for name in names if name and Path(name).exists()]


def read_eval_records(settings: SFTSettings) -> list[dict]:
    """The selected records of `settings.eval_data_path` (none when it is unset)."""
    if not settings.eval_data_path:
        return []
    try:
        return select_records(read_records(_split_paths(settings.eval_data_path), settings), settings)[0]
    except DataError as error:
        raise DataError(f"eval_data_path: {error}") from None


def train_model(
    settings: SFTSettings, records: list[dict], eval_records: list[dict], sources: dict[str, Any], output: Output
) -> dict[str, Any]:
    """Train one model (or adapter) on `records`, save it into the claimed `output`, return its summary."""
    started = time.monotonic()
    model_path = resolve_model(settings.model_name_or_path)
    with output.discarded_on_failure():
        checkpoint = resolve_checkpoint(settings)
        model, tokenizer = load_training_model(settings, model_path), load_tokenizer(model_path)
        train, evaluation, dropped = build_datasets(settings, records, eval_records, tokenizer)
        trainer = build_trainer(settings, model, tokenizer, train, evaluation)
    with output.writing():  # checkpoints are written during training, the model at its end
        result = trainer.train(resume_from_checkpoint=checkpoint)
        eval_loss = trainer.evaluate()["eval_loss"] if evaluation is not None else None
        trainer.save_model(settings.output_dir)
    summary = {
        "model": model_path,
        "output_dir": settings.output_dir,
        **sources,
        "dropped": dropped,
        **describe_training(trainer, result, eval_loss),
        "use_lora": settings.use_lora,
        "merged_model": None,
        "settings": dataclasses.asdict(settings),
    }
    if trainer.is_world_process_zero():
        summary["merged_model"] = _merge_if_asked(settings, model_path)
    summary["wall_time_s"] = round(time.monotonic() - started, 2)
    with output.writing():
        _write_main(Path(settings.output_dir) / SUMMARY_FILE, summary)
    return summary


def load_training_model(settings: SFTSettings, model_path: str) -> Any:
    """The model to fine-tune, in `training_dtype(settings)`.

    An adapter folder (an earlier `train`'s output) with `use_lora` goes on training that
    adapter on the base it names: a new adapter over it would be saved as an adapter of the
    base alone, and loading it later would silently lose the first one.
    """
    base = adapter_base(find_model_dir(model_path))
    if settings.use_lora and base is not None:
        info(
            f"Continuing the LoRA adapter {model_path} on its base {base} "
            f"(its own rank and target modules; the {KEY}.lora_* settings do not apply)."
        )
    else:
        what = "LoRA adapter" if settings.use_lora else "full fine-tune"
        info(f"Training {model_path} ({what}).")
    model = load_causal_lm(model_path, dtype=training_dtype(settings), trainable_adapter=settings.use_lora)
    choose_cpu_threads(model, settings.torch_threads)
    return model


def uses_bf16(settings: SFTSettings) -> bool:
    """Whether training runs in bfloat16 mixed precision: as asked, else where the GPU supports it."""
    import torch

    if settings.bf16 is not None:
        return settings.bf16
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_dtype(settings: SFTSettings) -> str:
    """The dtype the model's weights are loaded in: the one its matrix products will run in.

    With LoRA under bf16 the frozen base is loaded in bfloat16: half the memory, and no cast of
    every weight on every forward (PEFT keeps the adapter itself in float32). A full fine-tune
    keeps float32 weights even under bf16: AdamW updates of a few 1e-5 are below bfloat16's
    resolution and would be lost; autocast runs the products in bfloat16 all the same.
    """
    return "bfloat16" if settings.use_lora and uses_bf16(settings) else "float32"


def build_datasets(
    settings: SFTSettings, records: list[dict], eval_records: list[dict], tokenizer: Any
) -> tuple[Any, Any, dict[str, int]]:
    """(train, eval or None, dropped counts): `datasets.Dataset`s of prompt-completion samples."""
    from datasets import Dataset

    count_tokens = token_counter(tokenizer)
    samples, dropped = build_samples(records, settings.thinking, settings.max_seq_length, count_tokens)
    if eval_records:
        eval_samples, _ = build_samples(eval_records, settings.thinking, settings.max_seq_length, count_tokens)
    else:
        samples, eval_samples = split_eval(samples, settings.eval_split, settings.seed)
    too_long = f"{dropped['too_long']} longer than max_seq_length={settings.max_seq_length} tokens"
    if not samples:
        raise DataError(
            f"No samples left to train on: of {len(records)} records, {too_long} and "
            f"{dropped['empty_reply']} with an empty reply were dropped."
        )
    info(
        f"Dropped {too_long} and {dropped['empty_reply']} with an empty reply; "
        f"training on {len(samples)} samples, evaluating on {len(eval_samples)}."
    )
    return Dataset.from_list(samples), Dataset.from_list(eval_samples) if eval_samples else None, dropped


def build_trainer(settings: SFTSettings, model: Any, tokenizer: Any, train: Any, evaluation: Any = None) -> Any:
    """TRL's `SFTTrainer` over prompt-completion datasets, with the loss mask described above."""
    if not tokenizer.chat_template:
        raise UserError(
            f"The tokenizer of '{tokenizer.name_or_path}' has no chat template; train a chat (instruct) model."
        )
    has_eval = evaluation is not None
    config = build_sft_config(settings, has_eval=has_eval, assistant_mask=uses_assistant_mask(tokenizer))
    import torch
    from peft import PeftModel
    from peft.utils.error import NoMatchingPeftModuleError

    # On a GPU, TRL's tiled LM head saves the memory of the full logits (a 150k vocabulary makes
    # them the largest tensor); on a CPU its tile loops cost more than the logits they avoid
    # (bench/train.py: two thirds of a tiny model's step), so the loss comes from the logits.
    trainer_class = agent_sft_trainer(logits_loss=not torch.cuda.is_available())
    try:
        trainer = trainer_class(
            model=model,
            args=config,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            # A model that already carries its adapter (see load_training_model) trains that one.
            peft_config=None if isinstance(model, PeftModel) else build_lora_config(settings),
        )
    except NoMatchingPeftModuleError as error:
        raise ConfigError(
            f"training.sft_config.lora_target_modules={settings.lora_target_modules!r}: {first_line(error)}"
        ) from None
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # One display of ours instead of transformers' bar and its printer of raw log dicts.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(training_progress_callback())
    return trainer


@functools.cache
def agent_sft_trainer(logits_loss: bool) -> type:
    """`SFTTrainer` whose length-grouped batches come in random order (training/batches.py), and
    with `logits_loss` transformers' own loss: cross-entropy over the full logits on the tokens
    whose label is not -100 (the same mask and the same value as TRL's tiled LM head, which also
    computes entropy and token accuracy over the vocabulary on every step)."""
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import SFTTrainer

    from pettingllms.training.batches import ShuffledLengthBatches

    class AgentSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, LengthGroupedSampler):
                return ShuffledLengthBatches(sampler.lengths, sampler.batch_size)
            return sampler

        if logits_loss:

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                inputs["use_cache"] = False
                if model.training and "attention_mask" in inputs:  # the `num_tokens` TRL logs, for tokens/s
                    seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                    self._total_train_tokens = getattr(self, "_total_train_tokens", 0) + seen
                    self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return AgentSFTTrainer


# ---------------------------------------------------------------- configs


def build_sft_config(settings: SFTSettings, has_eval: bool, assistant_mask: bool) -> Any:
    """TRL's `SFTConfig` for `settings`, on GPU when there is one, else on CPU."""
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    periodic_eval = has_eval and settings.eval_steps > 0
    return SFTConfig(
        output_dir=settings.output_dir,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        per_device_eval_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        # TRL defaults to bf16, which the Trainer refuses on a CPU-only machine unless told so.
        bf16=uses_bf16(settings),
        use_cpu=not on_gpu,
        seed=settings.seed,
        # Every step is logged, so training_summary.json has the whole loss curve (the display
        # decides what to show); logging_steps sets how often a line is written to a log file.
        logging_steps=1,
        disable_tqdm=True,
        eval_strategy="steps" if periodic_eval else "no",
        eval_steps=settings.eval_steps if periodic_eval else None,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        report_to=settings.report_to,
        completion_only_loss=True,
        assistant_only_loss=assistant_mask,
        # Long samples were dropped whole by `build_samples`; TRL's truncation would cut replies.
        max_length=None,
        # Each batch is padded to its longest sample; batches of similar lengths waste little on
        # padding (agent records run from 100 to 1,300+ tokens: random batches of 8 were 50% padding,
        # grouped ones 22%; bench/train.py).
        # Not TRL's padding_free: it flattens a batch into one row, correct only with flash attention
        # (TRL's docs), and this runs on CPUs and with sdpa too.
        **_length_grouping(SFTConfig),
        # Every LoRA (or model) parameter takes part in each step, so DDP need not search for unused ones.
        ddp_find_unused_parameters=False,
        **_renamed_arguments(SFTConfig, settings),
    )


def _length_grouping(config_class: type) -> dict[str, Any]:
    """Length-grouped sampling under the name this transformers version uses (5 renamed it)."""
    if "train_sampling_strategy" in config_class.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def _renamed_arguments(config_class: type, settings: SFTSettings) -> dict[str, Any]:
    """Warmup and checkpointing arguments under the names this transformers version uses.

    transformers 5 folded `warmup_ratio` into `warmup_steps` (a value below 1 is a ratio) and
    renamed `gradient_checkpointing` to `activation_checkpointing`; the old name, which TRL's
    config still sets (to True by default), warns on every run.
    """
    fields = config_class.__dataclass_fields__
    warmup = "warmup_ratio" if "warmup_ratio" in fields else "warmup_steps"
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    # Checkpointing is opt-in here: it slows small models down.
    return {warmup: settings.warmup_ratio, checkpointing: settings.gradient_checkpointing}


def build_lora_config(settings: SFTSettings) -> Any:
    """PEFT `LoraConfig` for a causal LM, or None for full fine-tuning."""
    if not settings.use_lora:
        return None
    from peft import LoraConfig

    targets = settings.lora_target_modules
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets if targets == "all-linear" else [name.strip() for name in targets.split(",")],
    )


def uses_assistant_mask(tokenizer: Any) -> bool:
    """Whether TRL's assistant mask can narrow the loss to the reply and its end-of-turn token.

    It needs `{% generation %}` markers in the template whose span ends on the end-of-turn
    token; without the latter the model would never be trained to stop.
    """
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    template = tokenizer.chat_template
    return bool(template) and has_generation_markers(template) and is_chat_template_stop_token_trained(tokenizer)


def token_counter(tokenizer: Any):
    """A function giving a sample's token count with the chat template applied, as TRL tokenizes it."""

    def count_tokens(sample: dict[str, Any]) -> int:
        messages = sample["prompt"] + sample["completion"]
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    return count_tokens


# ---------------------------------------------------------------- checkpoints and merging


def resolve_checkpoint(settings: SFTSettings) -> str | None:
    """The checkpoint folder to resume from, if any ('last' = newest in `output_dir`)."""
    from transformers.trainer_utils import get_last_checkpoint

    wanted = settings.resume_from_checkpoint
    if wanted is None:
        return None
    if wanted == "last":
        last = get_last_checkpoint(settings.output_dir) if Path(settings.output_dir).is_dir() else None
        if last is None:
            raise UserError(f"resume_from_checkpoint=last: no checkpoint-* folder in '{settings.output_dir}'.")
        return last
    if not Path(wanted).is_dir():
        raise UserError(f"Checkpoint folder not found: '{wanted}'.")
    return wanted


def _merge_if_asked(settings: SFTSettings, model_path: str) -> str | None:
    if not (settings.merge_lora and settings.use_lora):
        return None
    from pettingllms.training.merge import merge_lora

    base = base_model_of(model_path)  # a continued adapter merges into the base it names
    merged = merge_lora(base, settings.output_dir, str(Path(settings.output_dir) / "merged"), overwrite=True)
    info(f"Merged model written to {merged}")
    return str(merged)


# ---------------------------------------------------------------- summary helpers


def count_label_tokens(dataset: Any) -> int:
    """Tokens that carry loss in one pass over `dataset` (labels other than -100)."""
    return sum(sum(1 for label in labels if label != -100) for labels in dataset["labels"])


def describe_training(trainer: Any, result: Any, eval_loss: float | None) -> dict[str, Any]:
    """What a finished `trainer.train()` did: samples, trained tokens, losses, steps, processes."""
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    progress = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "curve")), None)
    final_loss = logged[-1] if logged else result.training_loss
    return {
        "train_samples": len(trainer.train_dataset),
        "eval_samples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "label_tokens": count_label_tokens(trainer.train_dataset),
        "loss_mask": "reply + end-of-turn token (completion and assistant masks)"
        if trainer.args.assistant_only_loss
        else "all the template writes after the prompt (completion mask)",
        "first_train_loss": logged[0] if logged else None,
        "final_train_loss": final_loss,
        "mean_train_loss": result.training_loss,
        "eval_loss": eval_loss,
        "global_steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "world_size": trainer.args.world_size,
        "loss_curve": progress.curve if progress is not None else [],
    }


def _is_main_process() -> bool:
    return is_main_process()


def _write_main(path: Path, summary: dict[str, Any]) -> None:
    if _is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")


def _split_paths(paths: str | None) -> list[str]:
    return [part.strip() for part in (paths or "").split(",") if part.strip()]


def _as_settings(settings: Any) -> SFTSettings:
    # The command line hands over an OmegaConf node typed as SFTSettings; make it the dataclass.
    if isinstance(settings, SFTSettings):
        return settings
    from omegaconf import OmegaConf

    return OmegaConf.to_object(settings)


# ---------------------------------------------------------------- entry point


def settings_from_overrides(overrides: list[str]) -> SFTSettings:
    """`SFTSettings` from `key=value` strings, checked by OmegaConf (unknown keys, types) and by
    `SFTSettings.check`. Keys may carry the `training.sft_config.` prefix that messages name."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [override.removeprefix(f"{KEY}.") for override in overrides]
    try:
        config = OmegaConf.merge(OmegaConf.structured(SFTSettings), OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as error:
        raise ConfigError(first_line(error)) from None
    settings = OmegaConf.to_object(config)
    settings.check(KEY)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pettingllms.training.sft",
        description="Fine-tune on collected JSONL/Parquet records (also under torchrun).",
    )
    parser.add_argument("--data", action="append", required=True, help="data file or glob; repeat for more")
    parser.add_argument("overrides", nargs="*", help="SFTSettings fields as key=value, e.g. max_steps=10")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        summary = run_training(settings_from_overrides(args.overrides), args.data)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if is_main_process():
        print_table(training_summary_rows(summary), title="training")
    info(f"Summary: {Path(summary['output_dir']) / SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
