"""`pettingllms eval` and the before/after evaluation of `run`: the numbers, the files, the faults."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from pettingllms.config import load_config
from pettingllms.evaluation import evaluate, pass_at_k, summarize_evaluation, wilson_interval
from pettingllms.exceptions import ConfigError
from pettingllms.runfiles import RunFiles, read_ledger

# -- the numbers ------------------------------------------------------------------------------------


def test_wilson_interval_matches_the_formula_and_stays_in_bounds():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    low, high = wilson_interval(12, 50)
    assert low == pytest.approx(0.1431, abs=1e-3) and high == pytest.approx(0.3742, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    # 1 - C(3, 2) / C(5, 2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(10, 1, 10) == 1.0 and math.isclose(pass_at_k(10, 1, 1), 0.1)


def episode(env_idx: int, success: bool, invalid: int = 0, error: str | None = None) -> dict:
    turns = [
        {"agent": "planner", "valid": index >= invalid, "prompt_tokens": 3, "completion_tokens": 2}
        for index in range(2)
    ]
    return {
        "env_name": "sudoku", "env_idx": env_idx, "success": success, "agent_success": {"planner": success},
        "turns": turns, "error": {"kind": error, "message": ""} if error else None,
    }  # fmt: skip


def test_summary_counts_successes_invalid_actions_errors_and_pass_at_k():
    episodes = [episode(0, True), episode(0, False, invalid=2), episode(1, False, invalid=1), episode(1, False)]
    episodes.append(episode(2, False, error="timeout"))
    summary = summarize_evaluation(episodes, samples_per_task=2)
    assert (summary["episodes"], summary["successes"], summary["error_episodes"]) == (4, 1, 1)
    assert summary["success_rate"] == 0.25 and summary["errors"] == {"timeout": 1}
    assert summary["per_agent"]["planner"]["invalid_action_rate"] == 3 / 8
    assert summary["per_agent"]["planner"]["agent_success_rate"] == 0.25
    assert summary["pass_at_k"] == {"1": 0.25, "2": 0.5}
    assert summary["usage"] == {"prompt_tokens": 24, "completion_tokens": 16}


# -- real evaluations --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env", ["sokoban", "plan_path", "sudoku"])
def test_the_expert_solves_every_test_task(env, tmp_path):
    config = load_config([f"env.name={env}", "policy=expert", "eval.num_episodes=10", f"eval.output_dir={tmp_path}"])
    result = evaluate(config)
    assert result.summary["success_rate"] == 1.0 and result.summary["episodes"] == 10
    assert result.summary["success_interval_95"][0] > 0.6
    assert result.summary["split"] == "test"
    seeds = {episode["seed"] for episode in read_ledger(result.files.rollouts)}
    assert min(seeds) >= 1_000_000, "evaluation must play the test split's seeds"
    assert json.loads(result.files.evaluation.read_text())["successes"] == 10


def test_an_env_without_a_test_split_is_refused():
    with pytest.raises(ConfigError, match="has no test split"):
        evaluate(load_config(["env.name=code_env", "policy=expert", "eval.num_episodes=2"]))


@pytest.mark.slow
def test_a_model_that_only_writes_invalid_actions_scores_zero_and_says_so(tmp_path):
    settings = ["env.name=sokoban", "env.max_turns=1", "policy.max_tokens=4", "eval.num_episodes=3"]
    config = load_config([*settings, f"eval.output_dir={tmp_path}"])
    summary = evaluate(config).summary
    assert summary["success_rate"] == 0.0 and summary["episodes"] == 3
    assert summary["per_agent"]["planner"]["invalid_action_rate"] == 1.0
    assert summary["policies"]["planner"] == {"policy": "shared_model", "backend": "hf", "model": "tiny built-in model"}


@pytest.mark.slow
def test_an_evaluation_resumes_and_pass_at_k_needs_samples(tmp_path):
    base = ["env.name=sudoku", "policy=expert", "policy.error_rate=0.5", "eval.num_samples_per_task=3"]
    base += [f"eval.output_dir={tmp_path}", "eval.run_name=ev"]
    first = evaluate(load_config([*base, "eval.num_episodes=6"]))
    second = evaluate(load_config([*base, "eval.num_episodes=12"]))
    assert first.summary["episodes"] == 6 and second.summary["episodes"] == 12
    assert len(read_ledger(second.files.rollouts)) == 12
    rates = second.summary["pass_at_k"]
    assert set(rates) == {"1", "2", "3"} and rates["1"] <= rates["2"] <= rates["3"]
    assert 0 < rates["1"] < 1


@pytest.mark.slow
def test_run_evaluates_the_model_before_and_after_training(tmp_path):
    result = subprocess.run(
        [
            sys.executable, "-m", "pettingllms", "run", "env.name=sudoku", "policy=expert",
            "training.sft_num_episodes=4", "training.sft_config.max_steps=1", "training.sft_config.output_dir=model",
            "eval.num_episodes=2", "eval.max_tokens=8", "training.sft_data_dir=data", "eval.output_dir=evals",
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "before / after training, 2 test episodes" in result.stdout
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    before, after = summary["evaluation"]["before"], summary["evaluation"]["after"]
    assert before["episodes"] == after["episodes"] == 2
    assert after["policies"]["planner"]["model"] == "model" and after["policies"]["tool"]["model"] == "model"
    before_seeds = {e["seed"] for e in read_ledger(RunFiles(tmp_path / "evals", before["run_name"]).rollouts)}
    after_seeds = {e["seed"] for e in read_ledger(RunFiles(tmp_path / "evals", after["run_name"]).rollouts)}
    assert before_seeds == after_seeds, "before and after must play the same test tasks"
