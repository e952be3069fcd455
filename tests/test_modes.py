"""The four modes from the command line, as a user runs them (real subprocesses, tiny model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pettingllms.runfiles import RunFiles

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pettingllms", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def run_script(name, *args, cwd, env):
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "sft_train" / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=600,
    )


@pytest.mark.slow
def test_quick_test_runs_the_whole_flow_and_prints_the_summary(tmp_path):
    result = run_cli("quick-test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "quick-test summary" in result.stdout
    data_dir = tmp_path / "sft_data" / "quick_test"
    (records,) = data_dir.glob("sft_data_*.jsonl")
    stats = json.loads(RunFiles.of(records).stats.read_text())
    assert stats["total_episodes"] == 10
    assert 0 < stats["successful_episodes"] < 10, "quick-test must contain successes and failures"
    assert f"{stats['success_rate']:.2f}" in result.stdout
    model_dir = tmp_path / "sft_model_quick_test"  # out of the data folder, which data loaders read whole
    summary = json.loads((model_dir / "training_summary.json").read_text())
    assert summary["train_samples"] == stats["kept_records"]
    assert f"{summary['first_train_loss']:.4f} -> {summary['final_train_loss']:.4f}" in result.stdout
    assert summary["final_train_loss"] < summary["first_train_loss"], "quick-test must show the model learning"
    assert (model_dir / "adapter_config.json").exists()


@pytest.mark.slow
def test_collect_then_train_only_gives_an_adapter_that_loads(tmp_path):
    collected = run_cli(
        "collect",
        "policy=expert",
        "env.name=sudoku",
        "training.sft_num_episodes=4",
        "training.run_name=r1",
        "training.sft_data_dir=data",
        cwd=tmp_path,
    )
    assert collected.returncode == 0, collected.stderr[-3000:]
    trained = run_cli(
        "train",
        "training.sft_data_dir=data",
        "training.sft_config.max_steps=2",
        "training.sft_config.output_dir=model",
        cwd=tmp_path,
    )  # newest sft_data_*.jsonl
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["data_files"] == ["data/sft_data_r1.jsonl"]  # the newest file, as found under training.sft_data_dir

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pettingllms.tiny_model import tiny_model_path

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path()), tmp_path / "model")
    assert any("lora_" in name for name, _ in model.named_parameters())

    merge = (
        "merge-lora",
        "--base_model_name",
        str(tiny_model_path()),
        "--lora_model_path",
        "model",
        "--output_path",
        "merged",
    )
    merged = run_cli(*merge, cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr[-3000:]
    standalone = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    prompt = torch.tensor([[1, 20, 30]])
    assert standalone.generate(prompt, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape[-1] == 6
    again = run_cli(*merge, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow  # a CLI subprocess that collects: ~5 s on 2 cores
def test_run_with_training_off_only_collects(tmp_path):
    result = run_cli(
        "run",
        "policy=expert",
        "training.sft_num_episodes=2",
        "training.run_sft_training=false",
        "training.sft_data_dir=data",
        "training.sft_config.output_dir=model",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "collected only" in result.stdout
    assert list((tmp_path / "data").glob("sft_data_*.jsonl")) and not (tmp_path / "model").exists()


@pytest.mark.slow
def test_train_without_any_data_says_what_to_do(tmp_path):
    result = run_cli("train", "training.sft_data_dir=empty", cwd=tmp_path)
    assert result.returncode == 2
    assert "No training data" in result.stderr and "training.train_data_path" in result.stderr


def test_every_script_is_valid_bash_and_its_header_names_its_folders():
    """Cheap cover for the fast suite; the tests below run the scripts."""
    scripts = sorted((REPO / "scripts").rglob("*.sh"))
    for script in scripts:
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{script.name}: {checked.stderr}"
    for script in scripts:
        task = script.name.split("_")[0]
        if task in ("code", "math"):
            header = script.read_text().split("source ")[0]
            assert f"./sft_data_{task}" in header, f"{script.name} must say where its data goes"


@pytest.mark.slow  # a CLI subprocess that collects: ~5 s on 2 cores
def test_collect_only_script_writes_data(tmp_path):
    env = {
        "POLICY": "expert",
        "NUM_EPISODES": "2",
        "RUN_NAME": "scripted",
        "PETTINGLLMS": str(Path(sys.executable).parent / "pettingllms"),
    }
    result = run_script("math_sft_collect_only.sh", f"training.sft_data_dir={tmp_path}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads(RunFiles(tmp_path, "scripted").stats.read_text())
    assert stats["env_name"] == "math_env" and stats["total_episodes"] == 2


@pytest.mark.slow
def test_collect_and_train_script_trains_on_the_run_it_collected(tmp_path):
    """Default RUN_NAME is a timestamp: it must stay text (not become a number) end to end."""
    env = {"POLICY": "expert", "NUM_EPISODES": "2", "PETTINGLLMS": str(Path(sys.executable).parent / "pettingllms")}
    result = run_script(
        "code_sft_collect_and_train.sh",
        f"training.sft_data_dir={tmp_path / 'data'}",
        "training.sft_config.max_steps=1",
        f"training.sft_config.output_dir={tmp_path / 'model'}",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = list((tmp_path / "data").glob("sft_data_*.jsonl"))
    assert len(records) == 1 and "_" in records[0].stem.removeprefix("sft_data_")
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["data_files"] == [str(records[0])]


@pytest.mark.slow
def test_code_scripts_collect_into_and_train_from_the_seed_folders(tmp_path):
    """The seed's layout, relative to where the scripts run: data in ./sft_data_code, the model in ./sft_model_code."""
    env = {"POLICY": "expert", "NUM_EPISODES": "2", "PETTINGLLMS": str(Path(sys.executable).parent / "pettingllms")}
    collected = run_script("code_sft_collect_only.sh", cwd=tmp_path, env=env)
    assert collected.returncode == 0, collected.stderr[-3000:]
    (records,) = (tmp_path / "sft_data_code").glob("sft_data_*.jsonl")
    assert json.loads(RunFiles.of(records).stats.read_text())["total_episodes"] == 2

    trained = run_script("code_sft_train_only.sh", "training.sft_config.max_steps=1", cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((tmp_path / "sft_model_code" / "training_summary.json").read_text())
    assert summary["data_files"] == [str(Path("sft_data_code") / records.name)]
    assert (tmp_path / "sft_model_code" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_run_with_role_specialized_agents_trains_one_adapter_per_policy(tmp_path):
    result = run_cli(
        "run",
        "policy=expert",
        "policies.teacher.backend=expert",
        "agents.tool.policy=teacher",
        "env.name=sudoku",
        "training.sft_num_episodes=3",
        "training.sft_data_dir=data",
        "training.sft_config.max_steps=1",
        "training.sft_config.output_dir=model",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "one adapter per policy" in result.stdout
    for policy in ("expert", "teacher"):  # the planner's shared policy is named 'expert' by configs/policy/expert.yaml
        assert (tmp_path / "model" / policy / "adapter_config.json").is_file()
