"""What followed a run: the training folder that used it, that training's loss curve, its evaluations.

Nothing records which training used a run, so `find_training_dir` looks where the run's own
config says `train` would write (`training.sft_config.output_dir`) and accepts that folder only
when its `training_summary.json` names the run's records file; `--training DIR` says it outright.

The loss curve is the `loss_curve` of `training_summary.json` (every step, written by `train`),
else, for trainings saved before it existed, the trainer's `log_history` from `trainer_state.json`
(written with each checkpoint, not with the final model, so the newest `checkpoint-N/` is read).
A `per_policy` training has one subfolder per policy, each with its own summary: each gives its own
curve. `pettingllms run` adds to the summary the evaluations of the model before and after training
(`evaluation.before` / `.after`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pettingllms.exceptions import DataError
from pettingllms.runfiles import RunFiles, read_json_object
from pettingllms.training.outputs import SUMMARY_FILE

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class LossCurve:
    """One training's logged losses: training loss by step, and eval loss by step when it evaluated."""

    label: str
    steps: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    """The folder's `training_summary.json`."""


def loss_curve(label: str, log_history: list[dict[str, Any]], summary: dict[str, Any]) -> LossCurve:
    """The curve in a trainer's `log_history` (a list of logged dicts, each with a `step`)."""
    curve = LossCurve(label, summary=summary)
    for index, entry in enumerate(log_history):
        step = entry.get("step", index + 1)
        if isinstance(entry.get("loss"), int | float):
            curve.steps.append(step)
            curve.losses.append(float(entry["loss"]))
        if isinstance(entry.get("eval_loss"), int | float):
            curve.eval_steps.append(step)
            curve.eval_losses.append(float(entry["eval_loss"]))
    return curve


def read_loss_curves(training_dir: str | Path) -> list[LossCurve]:
    """The loss curves of a training folder (one per policy for a per-policy training)."""
    folder = Path(training_dir)
    if not folder.is_dir():
        raise DataError(f"--training {training_dir}: no such folder; give the `output_dir` a `train` wrote.")
    if (folder / SUMMARY_FILE).is_file():
        folders = [folder]
    else:
        folders = sorted(path.parent for path in folder.glob(f"*/{SUMMARY_FILE}"))
    if not folders:
        raise DataError(
            f"--training {training_dir}: no {SUMMARY_FILE} in it or its subfolders; is it a `train` output?"
        )
    return [_read_curve(path, path.name if path != folder else folder.name) for path in folders]


def _read_curve(folder: Path, label: str) -> LossCurve:
    summary = read_json(folder / SUMMARY_FILE)
    history = summary.get("loss_curve", summary.get("log_history"))
    if not isinstance(history, list):
        state = newest_trainer_state(folder)
        history = read_json(state).get("log_history", []) if state else []
    return loss_curve(label, [entry for entry in history if isinstance(entry, dict)], summary)


def newest_trainer_state(folder: Path) -> Path | None:
    """`trainer_state.json` of the folder, else of its newest `checkpoint-N/`; None when there is none."""
    if (folder / "trainer_state.json").is_file():
        return folder / "trainer_state.json"
    checkpoints = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := _CHECKPOINT.match(path.name)) and (path / "trainer_state.json").is_file()
    ]
    return max(checkpoints)[1] / "trainer_state.json" if checkpoints else None


def find_training_dir(files: RunFiles, config: dict[str, Any] | None) -> Path | None:
    """The folder the run's config would train into, when its summary says it trained on this run."""
    output_dir = (config or {}).get("config", {}).get("training", {}).get("sft_config", {}).get("output_dir")
    if not output_dir:
        return None
    candidates = [Path(output_dir), files.directory / Path(output_dir).name]
    for folder in candidates:
        for summary_path in [folder / SUMMARY_FILE, *sorted(folder.glob(f"*/{SUMMARY_FILE}"))]:
            data_files = read_json(summary_path).get("data_files") or []
            if any(Path(str(name)).name == files.records.name for name in data_files):
                return folder
    return None


@dataclass
class TrainingResults:
    """What followed a run: its training folder (if known), that folder's loss curves, and evaluations.

    `before` / `after`: `pettingllms eval` summaries (`success_rate`, `success_interval_95`...) of the
    model before and after training, as `pettingllms run` saves them in `training_summary.json`; with
    only an `eval_<run>.json` beside the run (the run is itself an evaluation), that one is `after`.
    """

    folder: Path | None = None
    curves: list[LossCurve] = field(default_factory=list)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def read_training_results(
    files: RunFiles | None, config: dict[str, Any] | None, training_dir: str | Path | None = None
) -> TrainingResults:
    """The training given as `training_dir` (a DataError when it is not one), else the one found for the run."""
    folder = Path(training_dir) if training_dir else (find_training_dir(files, config) if files else None)
    results = TrainingResults(folder, read_loss_curves(folder) if folder else [])
    for curve in results.curves:
        evaluation = curve.summary.get("evaluation") or {}
        if _is_evaluation(evaluation.get("after")):
            results.before = evaluation["before"] if _is_evaluation(evaluation.get("before")) else None
            results.after = evaluation["after"]
            return results
    beside = read_json(files.evaluation) if files else {}
    results.after = beside if _is_evaluation(beside) else None
    return results


def _is_evaluation(summary: Any) -> bool:
    return isinstance(summary, dict) and isinstance(summary.get("success_rate"), int | float)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or not one."""
    return read_json_object(path) or {}
