"""Merging a LoRA adapter into the tiny model (pettingllms/training/merge.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from pettingllms.exceptions import ModelNotFoundError, UserError
from pettingllms.tiny_model import tiny_model_path
from pettingllms.training.merge import merge_lora


@pytest.fixture(scope="module")
def tiny_model() -> str:
    return str(tiny_model_path())


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter that really changes the model.

    LoRA's B matrices start at zero, so a fresh adapter is a no-op and a merge test on it
    would pass whatever the merge did; B is filled with noise before saving.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear"),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.2)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def logits_of(model, tokenizer) -> torch.Tensor:
    messages = [{"role": "user", "content": "Push the box left."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def test_merged_model_matches_base_plus_adapter_and_generates(tiny_model, adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_path = merge_lora(tiny_model, str(adapter), str(tmp_path / "merged"))
    tokenizer = AutoTokenizer.from_pretrained(merged_path)
    base_logits = logits_of(AutoModelForCausalLM.from_pretrained(tiny_model).eval(), tokenizer)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(adapter)).eval()
    adapter_logits = logits_of(adapted, tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(merged_path).eval()

    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3)  # the adapter does something
    assert torch.allclose(logits_of(merged, tokenizer), adapter_logits, atol=1e-4)
    assert not any("lora" in name for name in merged.state_dict())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    generated = merged.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_tokenizer_comes_from_the_base_when_the_adapter_has_none(tiny_model, adapter, tmp_path):
    bare = tmp_path / "bare_adapter"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (bare / name).write_bytes((adapter / name).read_bytes())
    merged = merge_lora(tiny_model, str(bare), str(tmp_path / "merged"))
    assert (merged / "tokenizer_config.json").is_file()


def test_refuses_an_earlier_merge_unless_overwrite(tiny_model, adapter, tmp_path):
    output = merge_lora(tiny_model, str(adapter), str(tmp_path / "merged"))
    (output / "notes.txt").write_text("keep me")
    with pytest.raises(
        UserError, match=f"^Output folder '{output}' holds an earlier pettingllms output; pass --overwrite"
    ):
        merge_lora(tiny_model, str(adapter), str(output))
    assert (output / "notes.txt").exists()

    merge_lora(tiny_model, str(adapter), str(output), overwrite=True)
    assert not (output / "notes.txt").exists() and (output / "config.json").is_file()


def test_refuses_to_overwrite_the_adapter_itself(tiny_model, adapter):
    with pytest.raises(UserError, match=f"^Output folder '{adapter}' holds '{adapter}', an input of this command"):
        merge_lora(tiny_model, str(adapter), str(adapter), overwrite=True)


def test_missing_paths_are_one_line_errors(tiny_model, adapter, tmp_path):
    with pytest.raises(UserError, match=f"^No LoRA adapter at '{tmp_path}/nothing': it has no adapter_config.json.$"):
        merge_lora(tiny_model, str(tmp_path / "nothing"), str(tmp_path / "out"))
    with pytest.raises(ModelNotFoundError, match=f"^Model '{tmp_path}/no_base' is neither a local folder"):
        merge_lora(str(tmp_path / "no_base"), str(adapter), str(tmp_path / "out"))


@pytest.mark.slow
def test_training_with_merge_lora_writes_a_merged_model(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from pettingllms.config.sft import SFTSettings
    from pettingllms.training.sft import run_training

    record = {
        "messages": [{"role": "user", "content": "Grid: push the box."}, {"role": "assistant", "content": "Left"}],
        "metadata": {"agent_name": "planner", "policy_name": "shared", "reward": 1.0, "env_success": True},
    }
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    settings = SFTSettings(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        lora_r=4,
        merge_lora=True,
        gradient_accumulation_steps=1,
        save_steps=100,
    )
    summary = run_training(settings, [str(data)])
    assert summary["merged_model"] == str(tmp_path / "out" / "merged")
    assert AutoModelForCausalLM.from_pretrained(summary["merged_model"]).config.model_type == "qwen2"


def test_overwrite_never_replaces_a_folder_that_is_not_ours(tiny_model, adapter, tmp_path):
    precious, someone_elses_model = tmp_path / "precious", tmp_path / "model"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    shutil.copytree(tiny_model, someone_elses_model)
    for folder in (precious, someone_elses_model):
        with pytest.raises(UserError, match="is not empty and holds no pettingllms output .*only replaces pettingllms"):
            merge_lora(tiny_model, str(adapter), str(folder), overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert sorted(path.name for path in someone_elses_model.iterdir()) == sorted(os.listdir(tiny_model))


# ---------------------------------------------------------------- does the base fit the adapter?


def save_base(tmp_path: Path, name: str, config_class_name: str = "Qwen2Config", **changes) -> str:
    """A randomly initialised model like the tiny one, with `changes` to its config."""
    import transformers

    tiny = transformers.AutoConfig.from_pretrained(tiny_model_path())
    values = dict(
        vocab_size=tiny.vocab_size,
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_hidden_layers,
        num_attention_heads=tiny.num_attention_heads,
        num_key_value_heads=tiny.num_key_value_heads,
        tie_word_embeddings=True,
    )
    config = getattr(transformers, config_class_name)(**(values | changes))
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    ("config_class", "changes", "message"),
    [
        # PEFT silently dropped the layer-1 weights.
        ("Qwen2Config", {"num_hidden_layers": 1}, r"the base has no module model\.layers\.1\.\S+ \(and 6 more\)"),
        # Same module names and shapes: only the architecture tells them apart. PEFT merged it.
        ("LlamaConfig", {}, r"was trained on a qwen2 \(Qwen2ForCausalLM\) model; base model .* is a llama"),
        # A traceback from PEFT.
        ("Qwen2Config", {"hidden_size": 32}, r"model\.layers\.0\.\S+ has 32 \w+-features in the base, 64 in the"),
    ],
)
def test_a_base_that_does_not_fit_the_adapter_is_refused(adapter, tmp_path, config_class, changes, message):
    base = save_base(tmp_path, "base", config_class, **changes)
    with pytest.raises(UserError, match=message) as error:
        merge_lora(base, str(adapter), str(tmp_path / "merged"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "merged").exists()  # a refused merge leaves no folder behind


def test_a_copy_of_the_base_merges_with_a_warning(tiny_model, adapter, tmp_path, capsys):
    copy = tmp_path / "copy_of_base"
    shutil.copytree(tiny_model, copy)
    merge_lora(str(copy), str(adapter), str(tmp_path / "merged"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: the adapter was trained on '{tiny_model}'; loading it on '{copy}'."]
