"""Fine-tuning on the tiny built-in model (pettingllms/training/sft.py): the loss mask, the
saved outputs and the summary, per-policy adapters, full fine-tuning, resuming, torchrun.

Everything runs on CPU in a few seconds per training: a handful of records, a few steps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from disks import mounted_tmpfs

from pettingllms.config.sft import SFTSettings
from pettingllms.exceptions import ModelNotFoundError, UserError
from pettingllms.models import load_causal_lm, load_tokenizer
from pettingllms.tiny_model import tiny_model_path
from pettingllms.training.sft import build_datasets, build_trainer, run_training

SYSTEM = "You are the planner. Reply with moves."


def make_record(index: int, policy: str = "shared", agent: str = "planner", reply: str | None = None) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Grid {index}: push the box to the goal."},
            {"role": "assistant", "content": reply or f"Actions: Up Left {index}"},
        ],
        "metadata": {
            "agent_name": agent,
            "policy_name": policy,
            "reward": 1.0,
            "env_success": True,
            "env_name": "sokoban",
            "env_idx": 0,
            "rollout_idx": index,
            "turn_idx": 0,
            "episode_id": f"ep{index}",
        },
    }


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


def quick_settings(output_dir: Path, **overrides) -> SFTSettings:
    """Settings for a training of a few seconds on CPU."""
    values = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        lora_r=4,
        lora_alpha=8,
        logging_steps=1,
        save_steps=100,
    )
    return SFTSettings(**(values | overrides))


@pytest.fixture(scope="module")
def tiny_model() -> str:
    return str(tiny_model_path())


# ---------------------------------------------------------------- the loss mask


def trained_text(trainer, tokenizer, index: int = 0) -> tuple[str, str]:
    """(decoded tokens that carry loss, decoded full sequence) of sample `index`, as the trainer batches it."""
    batch = trainer.data_collator([trainer.train_dataset[index]])
    input_ids, labels = batch["input_ids"][0], batch["labels"][0]
    return tokenizer.decode(input_ids[labels != -100]), tokenizer.decode(input_ids)


def multi_turn_record() -> dict:
    """A record whose prompt holds an earlier assistant turn, which must not be trained on."""
    record = make_record(7, reply="Down Down Right")
    record["messages"][2:2] = [
        {"role": "assistant", "content": "EARLIER REPLY"},
        {"role": "user", "content": "The box did not move. Again."},
    ]
    return {**record, "source": "mem:1"}


@pytest.mark.slow
def test_loss_is_on_the_reply_and_its_end_of_turn_token_only(tmp_path, tiny_model):
    model, tokenizer = load_causal_lm(tiny_model, dtype="float32"), load_tokenizer(tiny_model)
    settings = quick_settings(tmp_path)
    train, _, _ = build_datasets(settings, [multi_turn_record()], [], tokenizer)
    trainer = build_trainer(settings, model, tokenizer, train)

    trained, full = trained_text(trainer, tokenizer)
    assert trained == "Down Down Right<|im_end|>"
    assert full.endswith("<|im_start|>assistant\nDown Down Right<|im_end|>\n")
    assert SYSTEM in full and "EARLIER REPLY" in full  # in the prompt, and never trained on


def test_without_generation_markers_the_loss_still_skips_the_prompt(tmp_path, tiny_model):
    # Plain ChatML, as many real models ship it: no {% generation %} markers.
    model, tokenizer = load_causal_lm(tiny_model, dtype="float32"), load_tokenizer(tiny_model)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    settings = quick_settings(tmp_path)
    train, _, _ = build_datasets(settings, [multi_turn_record()], [], tokenizer)
    trainer = build_trainer(settings, model, tokenizer, train)

    trained, _ = trained_text(trainer, tokenizer)
    assert trained == "Down Down Right<|im_end|>\n"  # the template's separator after the turn comes along
    assert not trainer.args.assistant_only_loss


def test_thinking_strip_removes_think_blocks_from_the_trained_tokens(tmp_path, tiny_model):
    model, tokenizer = load_causal_lm(tiny_model, dtype="float32"), load_tokenizer(tiny_model)
    record = {**make_record(1, reply="<think>box left of goal</think>Right"), "source": "mem:1"}
    settings = quick_settings(tmp_path, thinking="strip")
    train, _, _ = build_datasets(settings, [record], [], tokenizer)
    trained, _ = trained_text(build_trainer(settings, model, tokenizer, train), tokenizer)
    assert trained == "Right<|im_end|>"


# ---------------------------------------------------------------- run_training


@pytest.mark.slow
def test_run_training_saves_an_adapter_and_a_summary(tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    records = [make_record(i) for i in range(14)] + [make_record(90, reply="Up " * 400) for _ in range(2)]
    data = write_jsonl(tmp_path / "sft_data_run.jsonl", records)
    output = tmp_path / "adapter"
    summary = run_training(quick_settings(output, eval_split=0.2, max_seq_length=256), [data])

    assert (output / "adapter_config.json").is_file() and (output / "adapter_model.safetensors").is_file()
    assert (output / "tokenizer_config.json").is_file() and (output / "training_args.bin").is_file()
    written = json.loads((output / "training_summary.json").read_text())
    assert written["dropped"] == {"empty_reply": 0, "too_long": 2}
    assert (written["train_samples"], written["eval_samples"]) == (11, 3)
    assert written["selection"] == {"total": 16, "removed": {}, "selected": 16}
    assert written["data_files"] == [data] and written["model"] == tiny_model
    assert written["label_tokens"] > 11 and written["world_size"] == 1 and written["global_steps"] == 2
    assert math.isfinite(written["final_train_loss"]) and math.isfinite(written["eval_loss"])
    assert written["wall_time_s"] > 0 and written["use_lora"] is True
    assert summary["label_tokens"] == written["label_tokens"]

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(output))
    assert model.peft_config["default"].r == 4


@pytest.mark.slow
def test_per_policy_trains_one_adapter_per_policy(tmp_path, tiny_model):
    records = [make_record(i, policy="planner_model" if i % 2 else "executor_model") for i in range(8)]
    data = write_jsonl(tmp_path / "data.jsonl", records)
    summary = run_training(quick_settings(tmp_path / "out", per_policy=True, max_steps=1), [data])

    assert sorted(summary["per_policy"]) == ["executor_model", "planner_model"]
    for policy in ("executor_model", "planner_model"):
        assert (tmp_path / "out" / policy / "adapter_config.json").is_file()
        assert json.loads((tmp_path / "out" / policy / "training_summary.json").read_text())["train_samples"] == 4
    assert (tmp_path / "out" / "training_summary.json").is_file()


@pytest.mark.slow
def test_use_lora_false_saves_a_full_model(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(4)])
    run_training(quick_settings(tmp_path / "full", use_lora=False, max_steps=1), [data])

    assert not (tmp_path / "full" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert model.config.model_type == "qwen2"


@pytest.mark.slow
def test_resume_from_the_last_checkpoint(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(8)])
    output = tmp_path / "resumable"
    run_training(quick_settings(output, max_steps=2, save_steps=1), [data])
    assert (output / "checkpoint-2").is_dir()

    summary = run_training(quick_settings(output, max_steps=3, save_steps=1, resume_from_checkpoint="last"), [data])
    assert summary["global_steps"] == 3 and (output / "checkpoint-3").is_dir()


@pytest.mark.slow
def test_eval_data_file_is_selected_like_the_training_data(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "train.jsonl", [make_record(i) for i in range(4)])
    held_out = [make_record(i, agent="planner" if i < 13 else "critic") for i in range(10, 15)]
    eval_data = write_jsonl(tmp_path / "eval.jsonl", held_out)
    settings = quick_settings(tmp_path / "out", max_steps=1, agents=["planner"], eval_data_path=eval_data)
    summary = run_training(settings, [data])
    assert summary["eval_samples"] == 3 and math.isfinite(summary["eval_loss"])


def test_error_when_every_sample_is_too_long(tmp_path, tiny_model):
    from pettingllms.exceptions import DataError

    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(3)])
    with pytest.raises(DataError, match="No samples left to train on: of 3 records, 3 longer than max_seq_length=8"):
        run_training(quick_settings(tmp_path / "out", max_seq_length=8), [data])


def test_error_when_the_tokenizer_has_no_chat_template(tmp_path, tiny_model):
    from pettingllms.exceptions import UserError

    model, tokenizer = load_causal_lm(tiny_model, dtype="float32"), load_tokenizer(tiny_model)
    settings = quick_settings(tmp_path)
    train, _, _ = build_datasets(settings, [{**make_record(0), "source": "mem:1"}], [], tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(UserError, match="has no chat template; train a chat"):
        build_trainer(settings, model, tokenizer, train)


def test_missing_model_is_a_one_line_error(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(0)])
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(
        ModelNotFoundError,
        match=f"^Model '{missing}' is neither a local folder nor a Hub id in the "
        r"local cache\. pettingllms accepts .*nothing is downloaded\.$",
    ):
        run_training(quick_settings(tmp_path / "out", model_name_or_path=missing), [data])


def test_records_are_read_before_the_model_is_loaded(tmp_path):
    # A data mistake is reported at once, not after a (possibly long) model load.
    from pettingllms.exceptions import DataError

    with pytest.raises(DataError, match="No data file matches"):
        run_training(quick_settings(tmp_path / "out", model_name_or_path="/no/such/model"), [str(tmp_path / "*.jsonl")])


# ---------------------------------------------------------------- the output folder: nothing a user has is overwritten


def test_a_folder_that_is_not_ours_is_refused_even_with_overwrite(tmp_path):
    # `output_dir=.` in a clone used to rewrite the project's README.md.
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "README.md").write_text("# my project")
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(0)])
    for overwrite in (False, True):
        with pytest.raises(UserError, match=f"^Output folder '{clone}' is not empty and holds no pettingllms output"):
            run_training(quick_settings(clone, overwrite=overwrite), [data])
    assert [path.name for path in clone.iterdir()] == ["README.md"]
    assert (clone / "README.md").read_text() == "# my project"


@pytest.mark.slow
def test_an_earlier_training_is_replaced_only_with_overwrite(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(2)])
    output = tmp_path / "out"
    run_training(quick_settings(output, max_steps=1), [data])
    (output / "notes.txt").write_text("from the first run")
    with pytest.raises(
        UserError, match=r"holds an earlier pettingllms output; pass training.sft_config.overwrite=true"
    ):
        run_training(quick_settings(output, max_steps=1), [data])
    assert (output / "notes.txt").exists()

    run_training(quick_settings(output, max_steps=1, overwrite=True), [data])
    assert not (output / "notes.txt").exists() and (output / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_a_killed_training_is_refused_until_resumed_or_overwritten(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(4)])
    output = tmp_path / "out"
    run_training(quick_settings(output, max_steps=2, save_steps=1), [data])
    # What a kill after the first checkpoint leaves: the marker and checkpoint-1, nothing final.
    for path in output.iterdir():
        if path.name not in ("pettingllms_output.json", "checkpoint-1"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    state = (output / "checkpoint-1" / "trainer_state.json").read_bytes()

    with pytest.raises(UserError) as error:
        run_training(quick_settings(output, max_steps=2, save_steps=1), [data])
    assert str(error.value) == (
        f"Output folder '{output}' holds an unfinished training (last checkpoint: checkpoint-1); pass "
        "training.sft_config.resume_from_checkpoint=last to continue it, or training.sft_config.overwrite=true "
        "to start over."
    )
    assert (output / "checkpoint-1" / "trainer_state.json").read_bytes() == state

    summary = run_training(quick_settings(output, max_steps=2, save_steps=1, resume_from_checkpoint="last"), [data])
    assert summary["global_steps"] == 2
    logged_steps = [
        entry["step"]
        for entry in json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        if "loss" in entry
    ]
    assert logged_steps == [1, 2]  # step 1 comes from the checkpoint's own history: not trained again


def test_an_output_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(0)])
    (tmp_path / "out").write_text("a file")
    # No such model: the output folder must be the first thing said, before any (slow) load.
    settings = quick_settings(tmp_path / "out", model_name_or_path=str(tmp_path / "no_model"))
    with pytest.raises(UserError, match=f"^Output folder '{tmp_path / 'out'}' is a file; choose a folder.$"):
        run_training(settings, [data])


def test_a_read_only_output_folder_is_one_line_before_the_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(0)])
    with mounted_tmpfs(tmp_path / "ro", "size=1m,ro") as folder:
        settings = quick_settings(folder / "out", model_name_or_path=str(tmp_path / "no_model"))
        with pytest.raises(UserError, match=f"^Cannot write to output folder '{folder / 'out'}': .*Read-only file"):
            run_training(settings, [data])


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_no_half_written_output(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(2)])
    with mounted_tmpfs(tmp_path / "full", "size=64k") as folder:
        with pytest.raises(UserError) as error:
            run_training(quick_settings(folder / "out", max_steps=1), [data])
        assert str(error.value).startswith(f"Could not write to output folder '{folder / 'out'}': ")
        assert "\n" not in str(error.value)
        assert list(folder.iterdir()) == []


@pytest.mark.slow
def test_training_an_adapter_continues_it_on_its_base(tmp_path, tiny_model):
    # A new adapter over an adapter would be saved as an adapter of the base alone.
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(2)])
    run_training(quick_settings(tmp_path / "first", max_steps=1), [data])
    settings = quick_settings(tmp_path / "second", max_steps=1, lora_r=8, model_name_or_path=str(tmp_path / "first"))
    summary = run_training(settings, [data])

    config = json.loads((tmp_path / "second" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_model and config["r"] == 4  # the first adapter's rank
    assert summary["model"] == str(tmp_path / "first")


# ---------------------------------------------------------------- several processes


@pytest.mark.slow
def test_torchrun_two_cpu_processes_share_the_data(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", [make_record(i) for i in range(8)])
    output = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "pettingllms.training.sft",
        "--data",
        data,
        f"output_dir={output}",
        "num_train_epochs=1",
        "per_device_train_batch_size=1",
        "gradient_accumulation_steps=1",
        "lora_r=4",
        "save_steps=100",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["world_size"] == 2
    # 8 samples, one per step and per process: 4 steps when both ranks take half the data each.
    assert summary["global_steps"] == 4
    assert (output / "adapter_model.safetensors").is_file()
    assert done.stdout.count("\nadapter ") == 1  # only rank 0 prints the training table
    assert "[RANK" not in done.stdout + done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_collected_records_train_the_same_model_in_whatever_order_they_finished(tmp_path, tiny_model):
    # Collection writes episodes as they finish, so two collections of the same episodes differ in line order.
    records = [make_record(i, reply="Up " * (1 + i % 5) + str(i)) for i in range(12)]
    for record in records:
        record["metadata"]["env_idx"], record["metadata"]["rollout_idx"] = divmod(record["metadata"]["rollout_idx"], 3)
    in_order = write_jsonl(tmp_path / "a.jsonl", records)
    shuffled = write_jsonl(tmp_path / "b.jsonl", records[5:] + records[:5][::-1])
    curves = [
        run_training(quick_settings(tmp_path / name, max_steps=3, logging_steps=1), [data])["loss_curve"]
        for name, data in (("a", in_order), ("b", shuffled))
    ]
    assert len(curves[0]) == 3 and curves[0] == curves[1]


def test_the_cpu_loss_from_the_logits_equals_trls_tiled_lm_head(tmp_path, tiny_model):
    """On a CPU the trainer takes its loss from the full logits (2.4x faster per step there); it must be
    the same number as TRL's tiled LM head gives on the same batch, with the same mask."""
    import torch
    from trl import SFTTrainer

    from pettingllms.training.sft import agent_sft_trainer

    model, tokenizer = load_causal_lm(tiny_model, dtype="float32"), load_tokenizer(tiny_model)
    records = [{**make_record(i, reply="Up " * (1 + i)), "source": f"mem:{i}"} for i in range(3)] + [
        multi_turn_record()
    ]
    train, _, _ = build_datasets(quick_settings(tmp_path), records, [], tokenizer)
    trainer = build_trainer(quick_settings(tmp_path), model, tokenizer, train)
    assert type(trainer) is agent_sft_trainer(logits_loss=True)
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompts and padding masked
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        trls = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch))
    assert ours.item() == pytest.approx(trls.item(), rel=1e-5)
