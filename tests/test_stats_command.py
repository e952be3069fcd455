import json
import subprocess
import sys

import pytest
from synthetic_runs import make_episode, standard_episodes, write_run

from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.exceptions import DataError
from pettingllms.records import RecordFilter
from pettingllms.run_summary import kept_turns, summarize_episodes
from pettingllms.runfiles import RunFiles
from pettingllms.stats import load_run, print_stats, resolve_run, stats_for_file


@pytest.mark.slow
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
        [sys.executable, "-m", "pettingllms", "stats", "--json", str(result.files.rollouts), str(result.files.records)],
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


@pytest.mark.slow
def test_stats_on_a_missing_file_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pettingllms", "stats", str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "No such file" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- the tables: numbers, names, printing


def test_summary_counts_agents_turns_tasks_and_drops():
    episodes = standard_episodes()
    record_filter = RecordFilter()
    summary = summarize_episodes("toy", episodes, kept_turns(episodes, record_filter), record_filter.removed)
    assert (summary.episodes, summary.successful, summary.failed, summary.error_episodes) == (6, 3, 2, 1)
    assert (summary.turns, summary.kept_records, summary.invalid_actions) == (22, 8, 6)
    assert summary.removed == {"error_episode": 2, "not_successful": 12}
    assert summary.errors == {"http_5xx": 1}
    tool = next(row for row in summary.per_agent if row.agent == "tool")
    assert (tool.turns, tool.kept, tool.invalid, tool.episodes, tool.successes) == (11, 4, 3, 6, 3)
    assert [(row.turn_idx, row.episodes, row.successes) for row in summary.per_turn] == [
        (0, 6, 3), (1, 6, 3), (2, 3, 1), (3, 3, 1), (4, 2, 0), (5, 2, 0),
    ]  # fmt: skip
    assert summary.per_turn[2].agents == {"tool": 3}
    tasks = summary.tasks
    assert (tasks.tasks, tasks.max_samples, tasks.all_succeeded, tasks.some_succeeded, tasks.none_succeeded) == (
        3, 2, 1, 1, 1,
    )  # fmt: skip
    assert sorted(summary.episode_rewards) == [0, 0, 0, 1, 1, 1]
    assert summary.length_unit == "characters" and len(summary.kept_lengths) == 8
    assert len(summary.dropped_lengths) == 14


def test_agent_success_uses_the_agents_own_verdict_when_the_env_gives_one():
    episode = make_episode(0, 0, False)
    episode["agent_success"] = {"tool": True, "planner": False}
    summary = summarize_episodes("toy", [episode], [set()], {})
    assert {row.agent: row.successes for row in summary.per_agent} == {"planner": 0, "tool": 1}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A real run: plan_path, the expert failing half the time, two samples per task."""
    directory = tmp_path_factory.mktemp("runs")
    config = load_config(
        [
            f"training.sft_data_dir={directory}",
            "training.run_name=real",
            "policy=expert",
            "policy.error_rate=0.5",
            "env.name=plan_path",
            "training.sft_num_episodes=8",
            "training.num_samples_per_task=2",
        ]
    )
    return collect(config)


@pytest.mark.slow
def test_summary_of_a_collected_run_matches_its_stats_file(collected):
    summary = load_run(collected.files.rollouts).summary
    stats = collected.stats
    assert summary.episodes == stats["total_episodes"] and summary.successful == stats["successful_episodes"]
    assert summary.error_episodes == stats["error_episodes"] and summary.failed == stats["failed_episodes"]
    assert summary.turns == stats["total_records"] and summary.kept_records == stats["kept_records"]
    assert summary.invalid_actions == stats["invalid_actions"]
    assert {row.agent: {"collected": row.turns, "kept": row.kept} for row in summary.per_agent} == stats["per_agent"]
    assert summary.removed == stats["removed"] and summary.errors == stats["errors"]
    assert summary.wall_time_s == stats["wall_time_s"]
    assert sorted(summary.kept_lengths)[0] == stats["kept_record_chars"]["min"]
    assert max(summary.kept_lengths) == stats["kept_record_chars"]["max"]
    tasks = summary.tasks
    assert tasks.tasks == 4 and tasks.max_samples == 2
    assert tasks.all_succeeded + tasks.some_succeeded + tasks.none_succeeded == 4
    assert sum(row.episodes for row in summary.per_turn) == summary.turns
    assert summary.per_turn[0].episodes == summary.episodes


@pytest.mark.slow
def test_a_records_file_stands_for_its_run_and_prints_side_by_side(collected, capsys):
    from_records = load_run(collected.files.records).summary
    assert from_records.episodes == collected.stats["total_episodes"] and not from_records.records_only
    print_stats(["real", str(collected.files.records)], data_dir=str(collected.files.directory))
    out = capsys.readouterr().out
    for title in ("Per agent", "Per turn", "Per task", "Rewards", "Record length", "Removed by the filters"):
        assert title in out
    assert "planner · success rate" in out  # side by side: one row per agent and measure, a column per run


def test_a_run_name_is_found_in_the_data_dir_and_a_typo_gets_a_suggestion(tmp_path):
    files = write_run(tmp_path, "big", standard_episodes())
    assert resolve_run("big", tmp_path) == files.rollouts
    assert resolve_run(str(tmp_path), None) == files.rollouts  # a folder: its newest run
    files.rollouts.unlink()
    files.records.write_text("")
    assert resolve_run("big", tmp_path) == files.records
    with pytest.raises(DataError, match=r"No run 'bgi' in .*Did you mean 'big'\?"):
        resolve_run("bgi", tmp_path)
    with pytest.raises(DataError, match="No such file"):
        resolve_run(str(tmp_path / "nope.jsonl"), tmp_path)


def test_tables_print_every_section_and_json_keeps_the_stats_file_format(tmp_path, capsys):
    write_run(tmp_path, "toy", standard_episodes())
    print_stats(["toy"], data_dir=str(tmp_path))
    out = capsys.readouterr().out
    for expected in ("Per agent", "Per turn", "Per task", "some succeeded", "1 (33.3%)", "http_5xx", "not_successful"):
        assert expected in out
    print_stats(["toy"], data_dir=str(tmp_path), as_json=True)
    header, body = capsys.readouterr().out.split("\n", 1)
    rollouts = RunFiles(tmp_path, "toy").rollouts
    assert header == f"== {rollouts}"
    assert json.loads(body) == stats_for_file(rollouts)


@pytest.mark.slow
def test_plot_writes_the_pngs_beside_the_run(tmp_path, capsys):
    write_run(tmp_path, "toy", standard_episodes())
    print_stats(["toy"], data_dir=str(tmp_path), plot=True)
    assert "plots of toy written to" in capsys.readouterr().out
    plots = RunFiles(tmp_path, "toy").folder / "plots_toy"
    assert {path.name for path in plots.iterdir()} >= {"success_per_agent.png", "lengths.png"}
