"""Data other tools wrote, as `train` reads it (pettingllms/training/data.py): JSON arrays, column names,
top-level rewards. Small files of each shape; one slow test trains a step on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pettingllms.config.sft import SFTSettings
from pettingllms.exceptions import ConfigError, DataError
from pettingllms.training.data import read_records, select_records


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


def ragen_parquet(path: Path) -> Path:
    """RAGEN-style SFT data: `input` is the rendered prompt, `output` the reply."""
    rows = [
        {"data_source": "sokoban", "input": f"Board {i}. Your move?", "output": f"<answer>Up {i}</answer>"}
        for i in range(4)
    ]
    return write_parquet(path, rows)


def agentrl_json(path: Path) -> Path:
    """AgentRL-style records: one JSON array, the reward beside the conversation."""
    rows = [
        {
            "messages": [{"role": "user", "content": f"Task {i}"}, {"role": "assistant", "content": f"Answer {i}"}],
            "reward": i / 4,
            "success": i == 3,
        }
        for i in range(4)
    ]
    path.write_text(json.dumps(rows, indent=2))
    return path


def alpaca_jsonl(path: Path) -> Path:
    """DoctorAgent-style (Alpaca) rows: `instruction` and `output`."""
    rows = [
        {"instruction": f"Patient says: symptom {i}. Ask or diagnose.", "output": f"Question {i}?"} for i in range(3)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_ragen_parquet_with_input_and_output_columns(tmp_path):
    path = ragen_parquet(tmp_path / "train.parquet")
    settings = SFTSettings(prompt_key="input", response_key="output")
    records = read_records([str(path)], settings)
    assert records[1]["messages"] == [
        {"role": "user", "content": "Board 1. Your move?"},
        {"role": "assistant", "content": "<answer>Up 1</answer>"},
    ]
    assert records[0]["source"] == f"{path}:1" and records[0]["metadata"] == {}
    selected, report = select_records(records, settings)
    assert len(selected) == 4 and report.removed == {}


def test_without_a_mapping_other_columns_are_refused_with_the_keys_to_set(tmp_path):
    path = ragen_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError) as error:
        read_records([str(path)])
    message = str(error.value)
    assert message.startswith(f"{path}:1: not a training record (found ['data_source', 'input', 'output'])")
    assert "training.sft_config.messages_key, or prompt_key and response_key" in message


def test_a_mapping_naming_a_missing_column_lists_the_columns_the_file_has(tmp_path):
    path = ragen_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError) as error:
        read_records([str(path)], SFTSettings(prompt_key="question", response_key="output"))
    assert str(error.value) == (
        f"{path}:1: training.sft_config.prompt_key='question' is not a column here; "
        "the row's columns: data_source, input, output."
    )
    with pytest.raises(DataError, match=r"reward_key='score' is not a column here; the row's columns: data_source"):
        read_records([str(path)], SFTSettings(prompt_key="input", response_key="output", reward_key="score"))
    alpaca = alpaca_jsonl(tmp_path / "doctor.jsonl")
    with pytest.raises(DataError, match=r"doctor.jsonl:1: no prompt column .*set training.sft_config.prompt_key"):
        read_records([str(alpaca)], SFTSettings(response_key="output"))


def test_agentrl_json_array_with_a_top_level_reward_and_min_reward(tmp_path):
    path = agentrl_json(tmp_path / "agentrl.json")
    records = read_records([str(path)])
    assert [record["metadata"]["reward"] for record in records] == [0.0, 0.25, 0.5, 0.75]
    assert records[2]["source"] == f"{path} item 3"
    selected, report = select_records(records, SFTSettings(min_reward=0.5))
    assert [record["messages"][-1]["content"] for record in selected] == ["Answer 2", "Answer 3"]
    assert report.removed == {"min_reward=0.5": 2}
    successful, _ = select_records(records, SFTSettings(env_success=True))
    assert [record["messages"][0]["content"] for record in successful] == ["Task 3"]


def test_metadata_wins_over_top_level_reward_and_reward_key_wins_over_both(tmp_path):
    row = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "metadata": {"reward": 1.0, "env_success": False},
        "reward": 0.0,
        "success": True,
        "score": 0.3,
    }
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert read_records([str(path)])[0]["metadata"] == {"reward": 1.0, "env_success": False}
    assert read_records([str(path)], SFTSettings(reward_key="score"))[0]["metadata"]["reward"] == 0.3


def test_alpaca_style_jsonl_with_instruction_and_output(tmp_path):
    path = alpaca_jsonl(tmp_path / "doctor.jsonl")
    records = read_records([str(path)], SFTSettings(prompt_key="instruction", response_key="output"))
    assert [record["messages"][-1]["content"] for record in records] == ["Question 0?", "Question 1?", "Question 2?"]
    assert records[0]["messages"][0] == {"role": "user", "content": "Patient says: symptom 0. Ask or diagnose."}


def test_messages_key_reads_a_conversation_column(tmp_path):
    conversation = [{"role": "system", "content": "Be a doctor."}, {"role": "user", "content": "Hi"}]
    conversation.append({"role": "assistant", "content": "What hurts?"})
    path = tmp_path / "dialogues.json"
    path.write_text(json.dumps([{"id": 1, "conversation": conversation}]))
    records = read_records([str(path)], SFTSettings(messages_key="conversation"))
    assert records[0]["messages"] == conversation
    with pytest.raises(DataError, match=r"messages_key='conversation' is null here"):
        path.write_text(json.dumps([{"id": 1, "conversation": None}]))
        read_records([str(path)], SFTSettings(messages_key="conversation"))


def test_json_files_holding_jsonl_or_a_broken_array(tmp_path):
    lines = tmp_path / "lines.json"
    row = {"prompt": "2+2?", "response": "4"}
    lines.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    assert len(read_records([str(lines)])) == 2
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": \n')
    with pytest.raises(DataError, match=rf"^{broken}:4: not valid JSON \(Expecting value at column 1\)"):
        read_records([str(broken)])
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DataError, match="is empty: it holds no records"):
        read_records([str(empty)])
    scalars = tmp_path / "scalars.json"
    scalars.write_text("[1, 2]")
    with pytest.raises(DataError, match=rf"^{scalars} item 1: not a training record \(found int\)"):
        read_records([str(scalars)])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"prompt_key": ""}, r"^training.sft_config.prompt_key='' is invalid; expected a column name"),
        ({"reward_key": "  "}, r"^training.sft_config.reward_key='  ' is invalid"),
        (
            {"messages_key": "conversation", "prompt_key": "input"},
            r"^training.sft_config.messages_key='conversation' is invalid; expected null when prompt_key",
        ),
    ],
)
def test_bad_column_settings_are_one_line_config_errors(values, message):
    with pytest.raises(ConfigError, match=message) as error:
        SFTSettings(**values).check()
    assert "\n" not in str(error.value)


def one_step_settings(output_dir, **keys) -> SFTSettings:
    """One LoRA step of the tiny built-in model, with the data keys under test."""
    from pettingllms.tiny_model import tiny_model_path

    return SFTSettings(
        model_name_or_path=str(tiny_model_path()),
        output_dir=str(output_dir),
        max_steps=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        lora_r=4,
        lora_alpha=8,
        logging_steps=1,
        max_seq_length=256,
        **keys,
    )


@pytest.mark.slow
def test_ragen_parquet_trains_one_step_on_the_tiny_model(tmp_path):
    # Needs run_training to read with its settings: read_records(paths, settings).
    from pettingllms.training.sft import run_training

    data = ragen_parquet(tmp_path / "train.parquet")
    settings = one_step_settings(tmp_path / "out", prompt_key="input", response_key="output")
    summary = run_training(settings, [str(data)])
    assert summary["train_samples"] == 4
    assert (tmp_path / "out" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_agentrl_json_trains_one_step_with_min_reward(tmp_path):
    from pettingllms.training.sft import run_training

    data = agentrl_json(tmp_path / "agentrl.json")
    settings = one_step_settings(tmp_path / "out", min_reward=0.5)
    summary = run_training(settings, [str(data)])
    assert summary["train_samples"] == 2
