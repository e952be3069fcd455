import json
import subprocess
import sys

from pettingllms.collect import collect
from pettingllms.config import load_config


def test_stats_recomputed_from_rollouts_equal_the_collected_ones(tmp_path):
    config = load_config(
        [
            f"training.sft_data_dir={tmp_path}",
            "training.run_name=s",
            "policy=expert",
            "policy.error_rate=0.5",
            "env.name=plan_path",
            "training.sft_num_episodes=8",
        ]
    )
    result = collect(config)
    recomputed = subprocess.run(
        [sys.executable, "-m", "pettingllms", "stats", str(result.files.rollouts), str(result.files.records)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert recomputed.returncode == 0, recomputed.stderr
    blocks = [json.loads(block.split("\n", 1)[1]) for block in recomputed.stdout.split("== ")[1:]]
    from_rollouts, from_records = blocks
    for key in (
        "total_episodes",
        "successful_episodes",
        "success_rate",
        "total_records",
        "kept_records",
        "per_agent",
        "removed",
        "errors",
    ):
        assert from_rollouts[key] == result.stats[key], key
    assert from_records["records"] == result.stats["kept_records"]
    assert from_records["episodes"] == result.stats["successful_episodes"]


def test_stats_on_a_missing_file_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pettingllms", "stats", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "No such file" in result.stderr and "Traceback" not in result.stderr
