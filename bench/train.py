"""Training: real (non-padding) tokens per second of `run_training` vs the usual agent-SFT baseline.

    .venv/bin/python bench/train.py                          # ~3 minutes on 2 cores
    .venv/bin/python bench/train.py --steps 20 --batch 8

Records: expert episodes of math_env, sokoban and code_env (short, middling and long samples,
about 120-1,000 tokens with the tiny model's template). Both sides full-fine-tune the tiny model on
them, in float32 on one CPU thread, with the same batch size, steps and learning rate:

- ours: `pettingllms.training.run_training` (TRL's SFTTrainer, loss on the replies only,
  batches grouped by length); also with random batches (TRL's default, and ours before);
- baseline: what agent-SFT pipelines commonly do: transformers' `Trainer`, `labels =
  input_ids`, every sample padded to `max_length`, here the smallest multiple of 256 that
  holds the longest sample (a generous choice: pipelines often keep 2048 or more).

Measured: the training loop alone (from `on_train_begin` to `on_train_end`, no loading or
saving), and the tokens each batch held (attention mask) against its size. Runs alternate;
the figure is the median of (our real tokens/s) / (baseline real tokens/s), plus the share
of padding in the batches of each.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

from common import median, report

os.environ.setdefault("OMP_NUM_THREADS", "1")  # both sides on one thread, as `train` picks for the tiny model
os.environ.setdefault("PETTINGLLMS_PROGRESS", "0")

ENVS = {"math_env": 24, "sokoban": 12, "code_env": 12}
"""Episodes collected per env: two records each."""


class Meter:
    """Counts what the batches held, and times the training loop."""

    def __init__(self):
        self.real_tokens = self.batch_tokens = 0
        self.started = self.ended = 0.0

    def wrap(self, collator):
        def counting(features):
            batch = collator(features)
            mask = batch.get("attention_mask")
            if mask is None:  # padding-free batches are one row of real tokens
                self.real_tokens += batch["input_ids"].numel()
            else:
                self.real_tokens += int(mask.sum())
            self.batch_tokens += batch["input_ids"].numel()
            return batch

        return counting

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class Timing(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                meter.started = time.perf_counter()

            def on_train_end(self, args, state, control, **kwargs):
                meter.ended = time.perf_counter()

        return Timing()

    def result(self) -> dict:
        seconds = self.ended - self.started
        return {
            "real_tokens_per_s": self.real_tokens / seconds,
            "padding_share": 1 - self.real_tokens / self.batch_tokens,
            "seconds": seconds,
        }


def collect_records(folder: str, scale: float) -> list[str]:
    from pettingllms.collect import collect
    from pettingllms.config import load_config

    for env, episodes in ENVS.items():
        overrides = ["policy=expert", f"env.name={env}", f"training.sft_num_episodes={max(1, int(episodes * scale))}"]
        collect(load_config([*overrides, f"training.sft_data_dir={folder}", f"training.run_name={env}"]))
    return sorted(glob.glob(f"{folder}/sft_data_*.jsonl"))


def train_ours(paths: list[str], output_dir: str, steps: int, batch: int, grouped: bool = True) -> dict:
    """`run_training` as it is; with `grouped=False`, with random batches (TRL's default sampler)."""
    from pettingllms.config.sft import SFTSettings
    from pettingllms.training import sft

    meter, real_build = Meter(), sft.build_trainer

    def measured_trainer(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        if not grouped:
            trainer.args.train_sampling_strategy = "random"
        trainer.data_collator = meter.wrap(trainer.data_collator)
        trainer.add_callback(meter.callback())
        return trainer

    settings = SFTSettings(
        output_dir=output_dir,
        overwrite=True,
        use_lora=False,
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        learning_rate=5e-5,
        save_steps=10**6,
    )
    sft.build_trainer = measured_trainer
    try:
        sft.run_training(settings, paths)
    finally:
        sft.build_trainer = real_build
    return meter.result()


def baseline_dataset(paths: list[str], tokenizer) -> tuple[list[dict], int]:
    """Every record's full conversation, tokenized and padded to one max_length; labels = input_ids."""
    from pettingllms.training.data import read_records

    conversations = [tokenizer.apply_chat_template(r["messages"], tokenize=True) for r in read_records(paths)]
    conversations = [
        ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids for ids in conversations
    ]
    max_length = -(-max(len(ids) for ids in conversations) // 256) * 256
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    samples = []
    for ids in conversations:
        padding = max_length - len(ids)
        samples.append(
            {
                "input_ids": ids + [pad] * padding,
                "attention_mask": [1] * len(ids) + [0] * padding,
                "labels": ids + [-100] * padding,
            }
        )
    return samples, max_length


def train_baseline(paths: list[str], output_dir: str, steps: int, batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from pettingllms.models import load_causal_lm, load_tokenizer, resolve_model

    path = resolve_model(None)
    tokenizer = load_tokenizer(path)
    samples, _ = baseline_dataset(paths, tokenizer)
    torch.set_num_threads(1)
    meter = Meter()
    arguments = TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=5e-5,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10**6,
        seed=42,
    )
    trainer = Trainer(
        model=load_causal_lm(path, dtype="float32"),
        args=arguments,
        train_dataset=Dataset.from_list(samples),
        data_collator=meter.wrap(default_data_collator),
        callbacks=[meter.callback()],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
    trainer.train()
    return meter.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny run, to check that the script works")
    args = parser.parse_args()
    scale = 1.0
    if args.quick:
        args.steps, args.batch, args.repeats, scale = 2, 2, 1, 0.1
    from pettingllms.console import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as folder:
        paths = collect_records(f"{folder}/records", scale)
        ours, ungrouped, baseline = [], [], []
        for _ in range(args.repeats):
            ours.append(train_ours(paths, f"{folder}/ours", args.steps, args.batch))
            ungrouped.append(train_ours(paths, f"{folder}/ours", args.steps, args.batch, grouped=False))
            baseline.append(train_baseline(paths, f"{folder}/baseline", args.steps, args.batch))
        from pettingllms.models import load_tokenizer, resolve_model

        _, max_length = baseline_dataset(paths, load_tokenizer(resolve_model(None)))
    ratios = [a["real_tokens_per_s"] / b["real_tokens_per_s"] for a, b in zip(ours, baseline)]
    ungrouped_ratios = [a["real_tokens_per_s"] / b["real_tokens_per_s"] for a, b in zip(ungrouped, baseline)]
    result = {
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
        "baseline_max_length": max_length,
        "ours_over_baseline": round(median(ratios), 2),
        "ours_real_tokens_per_s": round(median([r["real_tokens_per_s"] for r in ours])),
        "baseline_real_tokens_per_s": round(median([r["real_tokens_per_s"] for r in baseline])),
        "ungrouped_over_baseline": round(median(ungrouped_ratios), 2),
        "ours_padding_share": round(median([r["padding_share"] for r in ours]), 3),
        "ungrouped_padding_share": round(median([r["padding_share"] for r in ungrouped]), 3),
        "baseline_padding_share": round(median([r["padding_share"] for r in baseline]), 3),
    }
    summary = (
        f"{result['ours_over_baseline']:.2f}x the baseline's real tokens/s; padding "
        f"{100 * result['ours_padding_share']:.0f}% of our batches vs {100 * result['baseline_padding_share']:.0f}%; "
        f"random batches: {result['ungrouped_over_baseline']:.2f}x, "
        f"{100 * result['ungrouped_padding_share']:.0f}% padding"
    )
    report("train", result, summary)


if __name__ == "__main__":
    main()
