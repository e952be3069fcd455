"""Expert iteration (rejection-sampling fine-tuning): collect -> train -> evaluate, in rounds.

    pettingllms iterate rounds=3 env.name=sudoku policy=expert

Round 1 collects with the configured policy (an expert, a teacher server, the base model);
round r > 1 collects with round r-1's model playing the trained agents. Each round trains (from
the base on every round's kept data so far, or continuing the previous model on the new data:
`iterate.from_base`) and evaluates the new model on the test split. Everything of round r lives
in `<iterate.output_dir>/round_<r>/` (`data/`, `model/`, `eval/`), and `iterate_summary.json`
holds the success per round. Each stage resumes on its own (collection and evaluation from
their ledgers, training from its checkpoints or its finished summary), so an interrupted
iteration continues in the round and stage where it stopped.
"""

from __future__ import annotations

import copy
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pettingllms.config import Config
from pettingllms.console import info
from pettingllms.evaluation import EvalResult, evaluate, trained_agents, with_model
from pettingllms.runfiles import RunFiles, read_json_object, write_json_atomic

SUMMARY_FILE = "iterate_summary.json"
TRAINING_SUMMARY = "training_summary.json"


@dataclass
class RoundDirs:
    """The folders of one round."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def eval(self) -> Path:
        return self.root / "eval"


class Iteration:
    """Runs the rounds of one iteration, each stage skipped when a previous attempt finished it."""

    def __init__(self, config: Config):
        self.config = config
        self.settings = config.iterate
        self.root = Path(self.settings.output_dir)
        self.agents = trained_agents(config)
        from pettingllms.models import model_for_training

        self.base_model = model_for_training(config)
        self.summary: dict[str, Any] = {"env_name": config.env.name, "base_model": self.base_model, "rounds": []}

    def round_dirs(self, number: int) -> RoundDirs:
        return RoundDirs(self.root / f"round_{number}")

    def run(self, log=info) -> dict[str, Any]:
        """Every round (or until success stops improving); returns the iteration summary."""
        log(f"Evaluating the base model ({self.base_model}) on the test split...")
        base = self.evaluate_model(self.base_model, self.root / "base_eval", "base")
        self.summary["base_eval"] = base.summary
        self.save()
        model = None
        for number in range(1, self.settings.rounds + 1):
            model = self.run_round(number, model, log)
            if self.stalled():
                log(f"Success has not improved for {self.settings.patience} rounds: stopping after round {number}.")
                break
        return self.summary

    def run_round(self, number: int, previous_model: str | None, log) -> str | None:
        dirs = self.round_dirs(number)
        who = "the configured policy" if previous_model is None else f"round {number - 1}'s model"
        log(f"Round {number}: collecting with {who}...")
        collected = self.collect(number, dirs, previous_model)
        log(f"Round {number}: training...")
        model, training = self.train(number, dirs, previous_model)
        log(f"Round {number}: evaluating {model}...")
        evaluation = self.evaluate_model(model, dirs.eval, f"round_{number}").summary
        self.summary["rounds"].append(round_row(number, collected, training, evaluation, model))
        self.save()
        return model

    def collect(self, number: int, dirs: RoundDirs, previous_model: str | None) -> dict[str, Any]:
        from pettingllms.collect import collect

        plan = self.config
        if previous_model is not None:
            plan = with_model(plan, previous_model, self.agents, run_name=None, policy_name=f"round_{number - 1}_model")
        plan = copy.deepcopy(plan)
        plan.training.sft_data_dir = str(dirs.data)
        plan.training.run_name = f"round_{number}"
        result = collect(plan)
        if result.interrupted:
            raise KeyboardInterrupt
        return result.stats

    def train(self, number: int, dirs: RoundDirs, previous_model: str | None) -> tuple[str, dict[str, Any]]:
        """Train this round's model (or find it trained); with no record to learn from, keep the previous one."""
        from pettingllms.training.sft import run_training

        finished = read_json_object(dirs.model / TRAINING_SUMMARY)
        if finished is not None:
            return str(dirs.model), finished
        settings = copy.deepcopy(self.config.training.sft_config)
        settings.output_dir = str(dirs.model)
        continuing = not self.settings.from_base and previous_model is not None
        settings.model_name_or_path = previous_model if continuing else self.base_model
        rounds = range(1, number + 1) if self.settings.from_base else [number]
        records = [RunFiles(self.round_dirs(r).data, f"round_{r}").records for r in rounds]
        paths = [glob.escape(str(path)) for path in records if path.exists() and path.stat().st_size > 0]
        if not paths:
            kept = previous_model or self.base_model
            info(f"Round {number}: no episode succeeded, nothing to train on; keeping {kept}.")
            return kept, {"skipped": "no kept records"}
        if dirs.model.exists() and any(dirs.model.glob("checkpoint-*")):
            settings.resume_from_checkpoint, settings.overwrite = "last", False
        elif dirs.model.exists():
            settings.overwrite = True  # our own folder of a training that died before its first checkpoint
        return str(dirs.model), run_training(settings, paths)

    def evaluate_model(self, model: str, folder: Path, run_name: str) -> EvalResult:
        plan = with_model(self.config, model, self.agents, run_name=run_name)
        plan.eval.output_dir = str(folder)
        result = evaluate(plan)
        if result.interrupted:
            raise KeyboardInterrupt
        return result

    def stalled(self) -> bool:
        """Whether the last `patience` rounds all failed to beat the best success before them."""
        patience = self.settings.patience
        rates = [self.summary["base_eval"]["success_rate"]] + [
            row["eval_success_rate"] for row in self.summary["rounds"]
        ]
        if patience <= 0 or len(rates) <= patience:
            return False
        return max(rates[-patience:]) <= max(rates[:-patience])

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / SUMMARY_FILE, self.summary)


def round_row(
    number: int, collected: dict[str, Any], training: dict[str, Any], evaluation: dict[str, Any], model: str
) -> dict[str, Any]:
    """One line of the per-round table."""
    return {
        "round": number,
        "collected_episodes": collected.get("total_episodes"),
        "collect_success_rate": collected.get("success_rate"),
        "kept_records": collected.get("kept_records"),
        "train_samples": training.get("train_samples"),
        "final_train_loss": training.get("final_train_loss"),
        "model": model,
        "eval_episodes": evaluation["episodes"],
        "eval_success_rate": evaluation["success_rate"],
        "eval_interval_95": evaluation["success_interval_95"],
    }
