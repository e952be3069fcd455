"""Reading, selecting and shaping training records (pettingllms/training/data.py, config.py).

No model here: every function under test is pure or reads small files made in tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pettingllms.config.sft import SFTSettings
from pettingllms.exceptions import ConfigError, DataError
from pettingllms.training.data import (
    answer_only,
    build_samples,
    group_by_policy,
    read_records,
    select_records,
    split_eval,
    strip_thinking,
    to_prompt_completion,
)


def make_record(index: int = 0, agent: str = "planner", policy: str = "shared", reward: float = 1.0, success=True):
    """One record in the format collection writes (docs/data-format.md)."""
    return {
        "messages": [
            {"role": "system", "content": "You push boxes."},
            {"role": "user", "content": f"Board {index}"},
            {"role": "assistant", "content": f"Actions: Up {index}"},
        ],
        "metadata": {
            "agent_name": agent,
            "policy_name": policy,
            "reward": reward,
            "env_success": success,
            "env_name": "sokoban",
            "env_idx": 0,
            "rollout_idx": index,
            "turn_idx": 0,
            "episode_id": f"ep{index}",
        },
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- reading


def test_reads_jsonl_records_with_metadata_and_source(tmp_path):
    path = write_jsonl(tmp_path / "sft_data_run.jsonl", [make_record(0), make_record(1, agent="executor")])
    records = read_records([str(path)])
    assert [r["messages"][-1]["content"] for r in records] == ["Actions: Up 0", "Actions: Up 1"]
    assert records[1]["metadata"]["agent_name"] == "executor"
    assert records[1]["source"] == f"{path}:2"


def test_blank_lines_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n" + json.dumps(make_record(0)) + "\n\n" + json.dumps(make_record(1)) + "\n")
    assert [r["source"] for r in read_records([str(path)])] == [f"{path}:2", f"{path}:4"]


def test_reads_parquet(tmp_path):
    import pyarrow
    import pyarrow.parquet

    path = tmp_path / "data.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist([make_record(0), make_record(1)]), path)
    records = read_records([str(path)])
    assert records[1]["messages"] == make_record(1)["messages"]
    assert records[1]["metadata"]["reward"] == 1.0
    assert records[0]["source"] == f"{path}:1"


def test_globs_expand_sorted_and_each_file_counts_once(tmp_path):
    write_jsonl(tmp_path / "sft_data_b.jsonl", [make_record(1)])
    write_jsonl(tmp_path / "sft_data_a.jsonl", [make_record(0)])
    records = read_records([str(tmp_path / "sft_data_*.jsonl"), str(tmp_path / "sft_data_a.jsonl")])
    assert [r["messages"][1]["content"] for r in records] == ["Board 0", "Board 1"]


def test_prompt_response_and_prompt_completion_rows(tmp_path):
    rows = [
        {"prompt": "2+2?", "response": "4"},
        {"prompt": "3+3?", "completion": "6"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}], "response": "2"},
    ]
    records = read_records([str(write_jsonl(tmp_path / "rows.jsonl", rows))])
    assert records[0]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert records[1]["messages"][-1] == {"role": "assistant", "content": "6"}
    assert [m["role"] for m in records[2]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["metadata"] == {}


# ---------------------------------------------------------------- reading errors


def test_error_when_no_file_matches_the_pattern(tmp_path):
    pattern = str(tmp_path / "sft_data_*.jsonl")
    with pytest.raises(DataError, match=r"No data file matches '.*sft_data_\*\.jsonl'"):
        read_records([pattern])


def test_error_when_a_file_is_missing_or_a_folder(tmp_path):
    with pytest.raises(DataError, match="Data file not found: '.*nope.jsonl'"):
        read_records([str(tmp_path / "nope.jsonl")])
    with pytest.raises(DataError, match="is a folder; pass data files or a glob"):
        read_records([str(tmp_path)])


def test_error_names_the_empty_file(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [make_record(0)])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=f"Data file '{empty}' is empty"):
        read_records([str(good), str(empty)])


def test_error_names_file_and_line_of_broken_json(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(make_record(0)) + "\n" + '{"messages": [\n')
    with pytest.raises(DataError, match=f"^{path}:2: not valid JSON"):
        read_records([str(path)])


def test_error_names_file_line_and_accepted_formats_for_unknown_rows(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [make_record(0), {"text": "hello", "label": 1}])
    with pytest.raises(DataError) as error:
        read_records([str(path)])
    message = str(error.value)
    assert message.startswith(f"{path}:2: not a training record (found ['label', 'text'])")
    assert "'messages'" in message and "'prompt' with 'response' or 'completion'" in message
    assert "\n" not in message


def test_error_when_the_last_message_is_not_the_reply(tmp_path):
    record = make_record(0)
    record["messages"] = record["messages"][:2]
    path = write_jsonl(tmp_path / "data.jsonl", [record])
    with pytest.raises(DataError, match=f"{path}:1: the last message must be the assistant's reply, got role 'user'"):
        read_records([str(path)])


def test_error_when_the_reply_has_no_prompt_before_it(tmp_path):
    # TRL crashed on these (IndexError in is_conversational) instead of naming the record.
    alone = {"messages": [{"role": "assistant", "content": "Up"}]}
    replies_only = {"messages": [{"role": "assistant", "content": "Up"}, {"role": "assistant", "content": "Left"}]}
    path = write_jsonl(tmp_path / "data.jsonl", [make_record(0), alone])
    with pytest.raises(DataError, match=f"^{path}:2: the reply has no prompt; put at least one system, user or tool"):
        read_records([str(path)])
    path = write_jsonl(tmp_path / "data.jsonl", [replies_only])
    with pytest.raises(DataError, match=f"^{path}:1: the reply has no prompt"):
        read_records([str(path)])


def test_error_names_an_unknown_role_and_the_accepted_ones(tmp_path):
    record = make_record(0)
    record["messages"][1]["role"] = "wizard"
    path = write_jsonl(tmp_path / "data.jsonl", [make_record(1), record])
    with pytest.raises(DataError) as error:
        read_records([str(path)])
    assert str(error.value) == (
        f"{path}:2: message 2 has role 'wizard'; expected one of system, user, assistant, tool."
    )


def test_tool_messages_are_accepted(tmp_path):
    record = make_record(0)
    record["messages"][2:2] = [{"role": "assistant", "content": "call"}, {"role": "tool", "content": "result"}]
    assert read_records([str(write_jsonl(tmp_path / "data.jsonl", [record]))])[0]["messages"][3]["role"] == "tool"


# ---------------------------------------------------------------- selection


def records_for_selection(tmp_path) -> list[dict]:
    rows = [
        make_record(0, agent="planner", policy="p1", reward=1.0, success=True),
        make_record(1, agent="planner", policy="p2", reward=0.2, success=True),
        make_record(2, agent="executor", policy="p1", reward=1.0, success=False),
        make_record(3, agent="executor", policy="p1", reward=0.9, success=True),
        make_record(4, agent="critic", policy="p1", reward=1.0, success=True),
        {"prompt": "plain row", "response": "no metadata"},
    ]
    return read_records([str(write_jsonl(tmp_path / "data.jsonl", rows))])


def test_no_filter_keeps_everything(tmp_path):
    selected, report = select_records(records_for_selection(tmp_path), SFTSettings())
    assert len(selected) == 6 and report.removed == {} and report.describe() == "6 of 6 records selected"


def test_each_filter_counts_what_it_removed(tmp_path):
    settings = SFTSettings(agents=["planner", "executor"], policies=["p1"], env_success=True, min_reward=0.5)
    selected, report = select_records(records_for_selection(tmp_path), settings)
    assert [r["metadata"]["rollout_idx"] for r in selected] == [0, 3]
    assert report.removed == {
        "agents=['planner', 'executor']": 2,  # the critic and the plain row
        "policies=['p1']": 1,
        "env_success=True": 1,
        "min_reward=0.5": 0,
    }
    assert report.total == 6 and report.selected == 2


def test_min_reward_removes_low_and_missing_rewards(tmp_path):
    selected, report = select_records(records_for_selection(tmp_path), SFTSettings(min_reward=0.95))
    assert len(selected) == 3 and report.removed == {"min_reward=0.95": 3}


def test_error_when_selection_leaves_nothing_says_what_each_filter_removed(tmp_path):
    settings = SFTSettings(agents=["planner"], env_success=False)
    with pytest.raises(DataError) as error:
        select_records(records_for_selection(tmp_path), settings)
    assert str(error.value) == (
        "No records left to train on: 0 of 6 records selected "
        "(agents=['planner'] removed 4; env_success=False removed 2)."
    )


def test_group_by_policy_needs_a_policy_name(tmp_path):
    records = records_for_selection(tmp_path)
    assert {name: len(group) for name, group in group_by_policy(records[:5]).items()} == {"p1": 4, "p2": 1}
    with pytest.raises(DataError, match=r"per_policy needs 'metadata.policy_name'.*1 have none \(first: .*:6\)"):
        group_by_policy(records)


# ---------------------------------------------------------------- thinking and samples


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>plan the moves</think>\nUp Left", "Up Left"),
        ("<think>a</think>Up <think>b</think>Left", "Up Left"),
        ("still thinking...\n</think>\n\nUp", "Up"),  # the template opened the block (DeepSeek-R1 style)
        ("Up <think>ran out of toke", "Up "),  # never closed: the rest goes
        ("<think>only a thought", ""),
        ("Up Left", "Up Left"),
    ],
)
def test_strip_thinking(text, expected):
    assert strip_thinking(text) == expected


def multi_turn_record() -> dict:
    return {
        "messages": [
            {"role": "user", "content": "Board"},
            {"role": "assistant", "content": "<think>x</think>Up"},
            {"role": "user", "content": "Board again"},
            {"role": "assistant", "content": "<think>y</think>Left"},
        ],
        "metadata": {},
        "source": "mem:1",
    }


def test_strip_trains_on_the_answer_alone():
    # The seed scripts' own example: `thinking=strip` yields the answer, without its tags.
    reply = "<think>用户想了解饮食。</think><answer>请问您最近的饮食习惯如何？</answer>"
    record = {**make_record(0), "source": "mem:1"}
    record["messages"][-1]["content"] = reply
    assert to_prompt_completion(record, thinking="strip")["completion"][0]["content"] == "请问您最近的饮食习惯如何？"
    assert to_prompt_completion(record, thinking="keep")["completion"][0]["content"] == reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think>\n<answer>\n Up Left \n</answer>", "Up Left"),
        ("Moves: <answer>Up</answer> done", "Moves: Up done"),  # text outside the element stays
        ("<think>a</think>Up Left", "Up Left"),  # no answer element: only the thought goes
        ("<answer>never closed", "<answer>never closed"),
    ],
)
def test_answer_only(text, expected):
    assert answer_only(text) == expected


def test_prompt_completion_trains_on_the_last_reply_only():
    sample = to_prompt_completion(multi_turn_record())
    assert sample["completion"] == [{"role": "assistant", "content": "<think>y</think>Left"}]
    assert [m["content"] for m in sample["prompt"]] == ["Board", "<think>x</think>Up", "Board again"]


def test_strip_changes_the_trained_reply_not_the_prompt():
    sample = to_prompt_completion(multi_turn_record(), thinking="strip")
    assert sample["completion"][0]["content"] == "Left"
    assert sample["prompt"][1]["content"] == "<think>x</think>Up"


def test_long_and_empty_samples_are_dropped_and_counted():
    records = [multi_turn_record() for _ in range(4)]
    records[1]["messages"][-1]["content"] = "<think>never answered"
    records[2]["messages"][-1]["content"] = "x" * 500

    def count_tokens(sample):
        return sum(len(m["content"]) for m in sample["prompt"] + sample["completion"])

    samples, dropped = build_samples(records, "strip", max_length=100, count_tokens=count_tokens)
    assert len(samples) == 2
    assert dropped == {"empty_reply": 1, "too_long": 1}


def test_split_eval_is_seeded_and_keeps_both_sides():
    train, held_out = split_eval(list(range(20)), 0.25, seed=1)
    assert len(train) == 15 and len(held_out) == 5 and sorted(train + held_out) == list(range(20))
    assert split_eval(list(range(20)), 0.25, seed=1) == (train, held_out)
    assert [len(side) for side in split_eval([1, 2], 0.9, seed=0)] == [1, 1]
    assert split_eval([1, 2, 3], 0.0, seed=0) == ([1, 2, 3], [])
    with pytest.raises(DataError, match="eval_split=1.5 needs a fraction between 0 and 1"):
        split_eval([1, 2, 3], 1.5, seed=0)


# ---------------------------------------------------------------- settings


def test_settings_are_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    config = OmegaConf.structured(SFTSettings)
    config = OmegaConf.merge(config, OmegaConf.from_dotlist(["agents=[planner]", "env_success=true", "lora_r=8"]))
    settings = OmegaConf.to_object(config)
    assert isinstance(settings, SFTSettings)
    assert settings.agents == ["planner"] and settings.env_success is True and settings.lora_r == 8
    assert (settings.num_train_epochs, settings.per_device_train_batch_size, settings.learning_rate) == (3, 2, 5e-5)


def test_every_setting_has_help():
    import dataclasses

    missing = [f.name for f in dataclasses.fields(SFTSettings) if not f.metadata.get("help")]
    assert missing == []


def test_unknown_setting_is_a_one_line_config_error():
    from pettingllms.training.sft import settings_from_overrides

    assert settings_from_overrides(["max_steps=5", "thinking=strip"]).max_steps == 5
    assert settings_from_overrides(["training.sft_config.overwrite=true"]).overwrite is True  # as messages name it
    with pytest.raises(ConfigError, match=r"^Key 'lora_rr' not in 'SFTSettings'. Did you mean") as error:
        settings_from_overrides(["lora_rr=8"])
    assert "\n" not in str(error.value)


def test_overwrite_and_resume_together_are_a_config_error():
    settings = SFTSettings(overwrite=True, resume_from_checkpoint="last")
    with pytest.raises(ConfigError, match=r"^training.sft_config.overwrite=True is invalid; expected false when"):
        settings.check("training.sft_config")
    SFTSettings(overwrite=True).check()
