"""Training as the user sees it: one progress display with loss, learning rate and tokens per second,
and the loss curve of every step for `training_summary.json`.

It replaces transformers' own progress bar and its printer of raw log dicts (values as strings).
The trainer logs every step (`logging_steps=1` in `sft.build_sft_config`), so the curve has every
step; on a terminal the bar shows the latest values, in a log file a line comes every few seconds.
"""

from __future__ import annotations

import time
from typing import Any

from pettingllms.console import Progress

CURVE_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "num_tokens")


def training_progress_callback() -> Any:
    """A `TrainerCallback` (built here so that importing this module does not import transformers)."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self):
            self.curve: list[dict[str, Any]] = []
            self.progress: Progress | None = None
            self.last_tokens, self.last_time = 0.0, time.monotonic()

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(state.max_steps, "training", initial=state.global_step, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            entry = {key: logs[key] for key in CURVE_KEYS if key in (logs or {})}
            if not entry:
                return
            self.curve.append({"step": state.global_step, **entry})
            if self.progress is not None:
                self.progress.update(0, **self.shown(entry))

        def shown(self, entry: dict[str, Any]) -> dict[str, str]:
            shown = {}
            if "loss" in entry:
                shown["loss"] = f"{entry['loss']:.4f}"
            if "eval_loss" in entry:
                shown["eval_loss"] = f"{entry['eval_loss']:.4f}"
            if "learning_rate" in entry:
                shown["lr"] = f"{entry['learning_rate']:.2e}"
            if "num_tokens" in entry:  # cumulative tokens seen, from TRL
                now = time.monotonic()
                rate = (entry["num_tokens"] - self.last_tokens) / max(now - self.last_time, 1e-9)
                self.last_tokens, self.last_time = entry["num_tokens"], now
                shown["tok/s"] = f"{rate:,.0f}"
            return shown

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.close()

    return TrainingProgress()


def training_summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The end-of-training table: what was trained on, how the loss went, where the result is."""
    if "per_policy" in summary:
        rows = [("", "")]
        for policy, one in summary["per_policy"].items():
            rows += [(f"{policy}: {label}", value) for label, value in training_summary_rows(one)[1:]]
        return rows
    first, last, evaluated = summary.get("first_train_loss"), summary.get("final_train_loss"), summary.get("eval_loss")
    loss = f"{first:.4f} -> {last:.4f}" if first is not None and last is not None else str(last)
    what = "adapter" if summary.get("use_lora") else "model"
    rows = [
        ("", ""),
        ("samples", f"{summary.get('train_samples')} (evaluation: {summary.get('eval_samples', 0)})"),
        ("trained tokens", f"{summary.get('label_tokens', 0):,} per epoch"),
        ("train loss", loss),
        ("steps", f"{summary.get('global_steps')} ({summary.get('epochs') or 0:.2f} epochs)"),
    ]
    if evaluated is not None:
        rows.append(("eval loss", f"{evaluated:.4f}"))
    if summary.get("wall_time_s") is not None:
        rows.append(("time", f"{summary['wall_time_s']:.1f} s"))
    rows.append((what, str(summary.get("output_dir"))))
    if summary.get("merged_model"):
        rows.append(("merged model", str(summary["merged_model"])))
    return rows
