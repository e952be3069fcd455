"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

import subprocess
import sys

import pytest


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pettingllms", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_envs_lists_every_registered_environment():
    result = run_cli("envs")
    assert result.returncode == 0, result.stderr
    for name in ("sokoban", "plan_path", "sudoku", "code_env", "math_env"):
        assert name in result.stdout
    assert "tool, planner" in result.stdout


def test_keys_lists_keys_with_help():
    result = run_cli("keys")
    assert result.returncode == 0
    assert "training.sft_num_episodes = 100" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["collect", "env.name=sokobn"], "Unknown env 'sokobn'. Did you mean 'sokoban'? Registered: sokoban"),
        (["collect", "policy=nope"], "Unknown policy 'nope'"),
        (
            ["collect", "training.sft_num_episodes=0"],
            "training.sft_num_episodes=0 is invalid; expected an integer in 1",
        ),
        (["collect", "training.sft_num_episode=3"], "Unknown config key 'training.sft_num_episode'"),
        (["collect", "oops"], "is not key=value"),
        (["collect", "policy.model_path=/no/such/model", "training.sft_num_episodes=1"], "/no/such/model"),
        (["train", "training.train_data_path=/no/such/*.jsonl"], "/no/such/*.jsonl"),
        (["collect", "env=sokoban", "env.name=sudoku"], "env=sokoban and env.name=sudoku name two environments"),
        (["collect", "env=code_env", "env.name=sokoban"], "env=code_env and env.name=sokoban name two"),
        (["collect", "training.seed=-5"], "training.seed=-5 is invalid; expected an integer >= 0"),
        (["collect", "training.run_name=r[1]"], "glob characters"),
        (["collect", "training.sft_num_episodes=99999999999999999999999"], "training.sft_num_episodes"),
        (["collect", "--config-name", "nope"], "--config-name nope: there is no"),
    ],
)
@pytest.mark.slow
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    result = run_cli(*args, f"training.sft_data_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_train_data_paths_from_a_list_commas_or_the_run_name():
    from pettingllms.cli import train_data_paths
    from pettingllms.config import load_config

    assert train_data_paths(load_config(["training.train_data_path=a.jsonl, b/*.jsonl"])) == ["a.jsonl", "b/*.jsonl"]
    assert train_data_paths(load_config(["training.train_data_path=[x.jsonl,y.parquet]"])) == ["x.jsonl", "y.parquet"]
    assert train_data_paths(load_config(["training.run_name=20261121_101500", "training.sft_data_dir=d"])) == [
        "d/sft_data_20261121_101500.jsonl"
    ]


def test_train_only_fine_tunes_the_model_that_collected_the_data(tmp_path):
    from pettingllms.models import collecting_model
    from pettingllms.runfiles import RunFiles, write_json_atomic

    def collected_by(run, policy):
        files = RunFiles(tmp_path, run)
        files.records.write_text("")
        write_json_atomic(files.config, {"config": {"policy": policy}})
        return str(files.records)

    qwen = collected_by("a", {"backend": "hf", "model_path": "/models/qwen"})
    assert collecting_model([qwen]) == "/models/qwen"
    assert (
        collecting_model([qwen, collected_by("b", {"backend": "hf", "model_path": "/models/qwen"})]) == "/models/qwen"
    )
    assert collecting_model([qwen, collected_by("c", {"backend": "hf", "model_path": "/models/llama"})]) is None
    assert collecting_model([collected_by("d", {"backend": "expert", "model_path": None})]) is None
    assert collecting_model([str(tmp_path / "elsewhere.jsonl")]) is None


@pytest.mark.slow
def test_a_model_that_cannot_load_stops_the_run_with_one_line_and_the_run_can_restart(tmp_path):
    import shutil

    from pettingllms.tiny_model import tiny_model_path

    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model_path(), broken)
    (broken / "model.safetensors").write_text("not weights")
    args = (
        "collect",
        "policy=hf",
        "training.sft_num_episodes=2",
        "training.run_name=r",
        "env.max_turns=1",
        "policy.max_tokens=8",
        f"training.sft_data_dir={tmp_path / 'data'}",
    )
    failed = run_cli(*args, f"policy.model_path={broken}", cwd=tmp_path)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert f"error: Could not load model '{broken}'" in failed.stderr
    fixed = run_cli(*args, cwd=tmp_path)  # same run name, the working (tiny) model
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "2 episodes" in fixed.stdout


@pytest.mark.slow
def test_keys_filters_by_prefix_and_marks_backend_only_keys():
    result = run_cli("keys", "policy.")
    assert result.returncode == 0, result.stderr
    keys = [line.split(" = ")[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert keys and all(key.startswith("policy.") for key in keys)
    assert "policy.max_batch_size" in keys and "[hf only]" in result.stdout and "[openai only]" in result.stdout
    nothing = run_cli("keys", "polcy")
    assert nothing.returncode == 2 and "No config key starts with 'polcy'" in nothing.stderr


@pytest.mark.slow
def test_hydra_style_config_path_and_name_select_a_preset(tmp_path):
    presets = tmp_path / "my_env"
    presets.mkdir()
    (presets / "small.yaml").write_text(
        "env:\n  name: sudoku\npolicy:\n  name: expert\n  backend: expert\ntraining:\n  sft_num_episodes: 2\n"
    )
    result = run_cli(
        "collect", "--config-path", str(presets), "--config-name", "small", "training.run_name=h",
        "training.sft_data_dir=data", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    from pettingllms.runfiles import RunFiles

    stats = RunFiles(tmp_path / "data", "h").stats.read_text()
    assert '"env_name": "sudoku"' in stats and '"total_episodes": 2' in stats
    missing = run_cli("collect", "--config-path", str(presets), "--config-name", "big", cwd=tmp_path)
    assert missing.returncode == 2 and "there is no" in missing.stderr and "has: small" in missing.stderr
    alone = run_cli("collect", "--config-path", str(presets), cwd=tmp_path)
    assert alone.returncode == 2 and "--config-path needs --config-name" in alone.stderr


def test_the_built_in_presets_are_found_by_name_alone(tmp_path):
    from pettingllms.config import load_config, resolve_preset

    config = load_config([f"config={resolve_preset(None, 'quick_test')}"])
    assert config.training.sft_data_dir == "./sft_data/quick_test"
