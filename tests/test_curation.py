"""`pettingllms filter` (pettingllms/curation.py): new records from a saved run's rollouts, no model call."""

from __future__ import annotations

import json

import pytest
from synthetic_runs import make_episode, standard_episodes, write_run

from pettingllms.config import load_config
from pettingllms.curation import build_filter, describe_result, filter_run, parse_filters
from pettingllms.exceptions import ConfigError, DataError
from pettingllms.runfiles import RunFiles


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- settings


def test_filters_are_key_value_with_yaml_values_and_an_optional_training_prefix():
    filters = parse_filters(
        ["training.only_success=false", "near_dedup_threshold=0.9", "agents=[tool, planner]", "max_reply_chars=null"]
    )
    assert filters == {
        "only_success": False,
        "near_dedup_threshold": 0.9,
        "agents": ["tool", "planner"],
        "max_reply_chars": None,
    }


def test_an_unknown_filter_says_what_was_meant_on_one_line():
    with pytest.raises(
        ConfigError, match=r"^Unknown filter 'near_dedup'. Did you mean 'near_dedup_threshold'\?"
    ) as error:
        parse_filters(["near_dedup=0.9"])
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_filters(["dedup"])


def test_given_filters_replace_the_run_s_own_and_the_rest_stay():
    saved = {"only_success": False, "dedup": True, "max_records_per_task": 2, "sft_num_episodes": 9}
    record_filter = build_filter(saved, parse_filters(["dedup=false", "agents=tool", "min_reward=1"]))
    assert record_filter.only_success is False and record_filter.max_records_per_task == 2
    assert record_filter.dedup is False and record_filter.agents == ("tool",) and record_filter.min_reward == 1.0
    assert build_filter(None, {}).settings() == build_filter({}, {}).settings()  # no saved config: the defaults


def test_a_run_collected_with_min_reward_filters_with_it_until_a_filter_replaces_it(tmp_path):
    write_run(tmp_path, "big", standard_episodes(), training={"min_reward": 0.5})
    own = filter_run("big", [], "own", data_dir=str(tmp_path))
    assert own.settings["min_reward"] == 0.5 and own.stats["kept_records"] == 3
    assert own.stats["removed"]["reward_below_min"] == 5
    loose = filter_run("big", ["min_reward=null"], "loose", data_dir=str(tmp_path))
    assert "reward_below_min" not in loose.stats["removed"] and loose.stats["kept_records"] == 8
    config = json.loads(loose.files.config.read_text())
    assert config["config"]["training"]["min_reward"] is None and config["filters"]["min_reward"] is None


@pytest.mark.parametrize(
    "item, message",
    [
        ("near_dedup_threshold=0", r"^training.near_dedup_threshold=0.0 is invalid; expected a number in \(0, 1\]"),
        ("near_dedup_threshold=1.5", r"^training.near_dedup_threshold=1.5 is invalid; expected a number in \(0, 1\]"),
        ("max_invalid_actions=-1", r"^training.max_invalid_actions=-1 is invalid; expected an integer >= 0"),
        ("max_reply_chars=0", r"^training.max_reply_chars=0 is invalid; expected an integer > 0"),
        ("max_records_per_task=-2", r"^training.max_records_per_task=-2 is invalid"),
        ("dedup=sometimes", r"^dedup: "),
        ("min_reward=high", r"^min_reward='high' is invalid; expected a number"),
        ("agents=[1, 2]", r"^agents=\[1, 2\] is invalid; expected agent names"),
        ("agents=[tool", r"^Filter 'agents=\[tool': '\[tool' is not a value"),
    ],
)
def test_bad_filter_values_are_one_line_config_errors(item, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_filter({}, parse_filters([item]))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.near_dedup_threshold=1.01", r"^training.near_dedup_threshold=1.01 is invalid; expected a number in"),
        ("training.max_invalid_actions=-3", r"^training.max_invalid_actions=-3 is invalid; expected an integer >= 0"),
        ("training.max_reply_chars=-1", r"^training.max_reply_chars=-1 is invalid; expected an integer > 0"),
    ],
)
def test_collection_checks_the_same_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([override])
    config = load_config(["training.near_dedup_threshold=1", "training.drop_truncated=true"])
    assert config.training.near_dedup_threshold == 1.0 and config.training.drop_truncated is True


# ---------------------------------------------------------------- the command on a written run


def test_filter_writes_records_stats_and_a_config_saying_where_they_came_from(tmp_path):
    source = write_run(tmp_path, "big", standard_episodes(), training={"dedup": False})
    result = filter_run("big", ["only_success=false", "agents=[planner]"], "planners", data_dir=str(tmp_path))
    files = RunFiles(tmp_path, "planners")
    assert result.files == files and not files.rollouts.exists()
    records = read_jsonl(files.records)
    assert records and {record["metadata"]["agent_name"] for record in records} == {"planner"}
    stats = json.loads(files.stats.read_text())
    assert stats["run_name"] == "planners" and stats["kept_records"] == len(records)
    assert stats["kept_records"] + sum(stats["removed"].values()) == stats["total_records"]
    assert stats["removed"]["agent_not_selected"] > 0 and stats["wall_time_s"] == 3.5
    config = json.loads(files.config.read_text())
    assert config["filtered_from"] == {"run": "big", "rollouts": str(source.rollouts), "rejudged": False}
    assert config["filters"]["only_success"] is False and config["filters"]["agents"] == ["planner"]
    assert (
        config["config"]["training"]["only_success"] is False and config["config"]["training"]["run_name"] == "planners"
    )
    assert "into 'planners'" in describe_result(result)[0]


def test_filter_takes_a_rollouts_path_and_applies_quality_filters(tmp_path):
    truncated = make_episode(0, 0, True)
    for turn in truncated["turns"]:
        turn["finish_reason"] = "length"
    episodes = [truncated, make_episode(1, 0, True, response="x" * 50), make_episode(2, 0, True, rounds=2, valid=False)]
    episodes.append(make_episode(3, 0, True))
    source = write_run(tmp_path, "raw", episodes)
    filters = ["drop_truncated=true", "max_reply_chars=20", "max_invalid_actions=1"]
    result = filter_run(str(source.rollouts), filters, "clean")
    assert result.stats["removed"] == {"reply_too_long": 2, "too_many_invalid_actions": 4, "truncated": 2}
    assert {record["metadata"]["episode_id"] for record in read_jsonl(result.files.records)} == {"toy-train-3-0"}


def test_filter_refuses_to_overwrite_or_to_name_the_source(tmp_path):
    write_run(tmp_path, "big", standard_episodes())
    with pytest.raises(DataError, match=r"^--output big is the run being filtered"):
        filter_run("big", [], "big", data_dir=str(tmp_path))
    filter_run("big", [], "copy", data_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"sft_data_copy.jsonl already exists; choose another --output name") as error:
        filter_run("big", ["dedup=true"], "copy", data_dir=str(tmp_path))
    assert "\n" not in str(error.value)
    RunFiles(tmp_path, "taken").stats.write_text("{}")
    with pytest.raises(DataError, match=r"sft_data_taken_stats.json already exists"):
        filter_run("big", [], "taken", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^--output='a/b' is invalid"):
        filter_run("big", [], "a/b", data_dir=str(tmp_path))


def test_filter_needs_the_run_s_rollouts(tmp_path):
    files = RunFiles(tmp_path, "orphan")
    files.records.write_text(json.dumps({"messages": [], "metadata": {}}) + "\n")
    with pytest.raises(DataError, match=r"rollouts_orphan.jsonl does not exist"):
        filter_run(str(files.records), [], "again")
    with pytest.raises(DataError, match=r"No run 'nothing'"):
        filter_run("nothing", [], "again", data_dir=str(tmp_path))


# ---------------------------------------------------------------- against a real collection


def collect_run(tmp_path, *overrides):
    from pettingllms.collect import collect

    common = [f"training.sft_data_dir={tmp_path}", "training.run_name=src", "policy=expert", "policy.error_rate=0.3"]
    return collect(load_config([*common, *overrides]))


@pytest.mark.slow
def test_filter_with_the_run_s_own_settings_reproduces_collect_byte_for_byte(tmp_path):
    settings = ["env.name=plan_path", "training.sft_num_episodes=12", "training.num_samples_per_task=4"]
    collected = collect_run(tmp_path, *settings, "training.dedup=true")
    assert collected.stats["removed"].get("duplicate"), "several samples of a task must give duplicates"
    result = filter_run("src", [], "again", data_dir=str(tmp_path))
    # Same order too: the ledger holds the episodes in the order collection filtered them in.
    assert result.files.records.read_bytes() == collected.files.records.read_bytes()
    stats = json.loads(result.files.stats.read_text())
    different = {key for key in stats if stats[key] != collected.stats[key]}
    # No tokenizer is loaded to filter: the token counts are unknown there.
    assert different == {"run_name", "kept_record_tokens", "tokens_spent_per_kept_record"}
    loose = filter_run("src", ["dedup=false", "only_success=false"], "loose", data_dir=str(tmp_path))
    assert loose.stats["kept_records"] == loose.stats["total_records"] > collected.stats["kept_records"]


@pytest.mark.slow
def test_filter_reproduces_collect_with_the_curation_keys_on(tmp_path):
    # Needs collection to build its RecordFilter with RecordFilter.from_settings(config.training).
    settings = ["env.name=sudoku", "training.sft_num_episodes=12", "training.num_samples_per_task=4"]
    curation = ["training.near_dedup_threshold=0.5", "training.max_invalid_actions=0", "training.max_reply_chars=5000"]
    collected = collect_run(tmp_path, *settings, "training.only_success=false", *curation)
    assert collected.stats["removed"].get("near_duplicate")
    result = filter_run("src", [], "again", data_dir=str(tmp_path))
    assert result.files.records.read_bytes() == collected.files.records.read_bytes()
    assert result.stats["removed"] == collected.stats["removed"]
