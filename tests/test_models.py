"""Which model, and loading it (pettingllms/models.py): the tiny fallback, the model that
collected a run, the model training uses, adapter folders and their bases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pettingllms import models
from pettingllms.exceptions import ModelNotFoundError
from pettingllms.runfiles import RunFiles, write_json_atomic
from pettingllms.tiny_model import tiny_model_path


@pytest.fixture(scope="module")
def tiny_model() -> str:
    return str(tiny_model_path())


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter on q_proj with non-zero B (a fresh adapter changes nothing), no tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.fill_(0.05)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    return path


# ---------------------------------------------------------------- which model


def test_resolve_model_falls_back_to_the_tiny_model(tiny_model):
    assert models.resolve_model(None) == models.resolve_model("") == tiny_model
    assert models.resolve_model("/models/qwen") == "/models/qwen"


def test_model_for_training_prefers_the_setting_then_the_collecting_policy(tiny_model):
    from pettingllms.config import load_config

    assert models.model_for_training(load_config(["policy.model_path=/models/qwen"])) == "/models/qwen"
    chosen = ["policy.model_path=/models/qwen", "training.sft_config.model_name_or_path=/models/llama"]
    assert models.model_for_training(load_config(chosen)) == "/models/llama"
    assert models.model_for_training(load_config(["policy=expert"])) == tiny_model
    assert models.model_for_training(load_config([])) == tiny_model


def test_collecting_model_reads_each_runs_saved_config(tmp_path):
    def collected_by(run: str, policy: dict) -> str:
        files = RunFiles(tmp_path, run)
        files.records.write_text("")
        write_json_atomic(files.config, {"config": {"policy": policy}})
        return str(files.records)

    qwen = collected_by("a", {"backend": "hf", "model_path": "/models/qwen"})
    also_qwen = collected_by("b", {"backend": "openai", "model_path": "/models/qwen"})
    assert models.collecting_model([qwen]) == "/models/qwen"
    assert models.collecting_model([qwen, also_qwen]) == "/models/qwen"
    assert models.collecting_model([str(tmp_path / "sft_data_*.jsonl")]) == "/models/qwen"  # a glob
    llama = collected_by("c", {"backend": "hf", "model_path": "/models/llama"})
    assert models.collecting_model([qwen, llama]) is None  # two models: none is "the" model
    assert models.collecting_model([collected_by("d", {"backend": "expert", "model_path": "/x"})]) is None
    assert models.collecting_model([str(tmp_path / "elsewhere.jsonl")]) is None
    damaged = RunFiles(tmp_path, "e")
    damaged.prepare()
    damaged.config.write_text("[1, 2]")
    assert models.collecting_model([str(damaged.records)]) is None


# ---------------------------------------------------------------- folders


def test_find_model_dir_says_what_is_accepted(tmp_path):
    with pytest.raises(ModelNotFoundError, match="is neither a local folder nor a Hub id in the local cache"):
        models.find_model_dir(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match="is a folder without config.json"):
        models.find_model_dir(str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelNotFoundError, match="is a file, not a model folder"):
        models.find_model_dir(str(tmp_path / "file"))


def test_an_adapter_names_its_base(adapter, tiny_model, tmp_path):
    assert models.adapter_base(str(adapter)) == tiny_model
    assert models.adapter_base(tiny_model) is None
    assert models.base_model_of(str(adapter)) == tiny_model and models.base_model_of(tiny_model) == tiny_model
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=f"^Adapter '{tmp_path}': adapter_config.json names no base"):
        models.adapter_base(str(tmp_path))


# ---------------------------------------------------------------- loading


def test_an_adapter_folder_loads_merged_into_its_base(adapter, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    loaded = models.load_causal_lm(str(adapter), dtype="float32")
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(adapter))
    expected = expected.merge_and_unload()
    query = "model.layers.1.self_attn.q_proj.weight"
    assert not isinstance(loaded, PeftModel)
    assert torch.equal(loaded.state_dict()[query], expected.state_dict()[query])
    assert not torch.equal(
        loaded.state_dict()[query], AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()[query]
    )


def test_a_trainable_adapter_stays_a_peft_model(adapter):
    from peft import PeftModel

    model = models.load_causal_lm(str(adapter), dtype="float32", trainable_adapter=True)
    trainable = [name for name, weight in model.named_parameters() if weight.requires_grad]
    assert isinstance(model, PeftModel) and trainable and all("lora_" in name for name in trainable)


def test_an_adapter_without_a_tokenizer_uses_its_bases(adapter, tiny_model):
    assert models.load_tokenizer(str(adapter)).get_vocab() == models.load_tokenizer(tiny_model).get_vocab()


def test_a_broken_model_is_one_line(tiny_model, tmp_path):
    import shutil

    shutil.copytree(tiny_model, tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").write_text("not weights")
    with pytest.raises(ModelNotFoundError, match=f"^Could not load model '{tmp_path / 'broken'}': ") as error:
        models.load_causal_lm(str(tmp_path / "broken"))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_training_never_imports_a_policy_backend_nor_heavy_libraries():
    code = (
        "import sys, pettingllms.training.sft, pettingllms.training.merge, pettingllms.models\n"
        "print(sorted(m for m in sys.modules if m.startswith('pettingllms.policies') or m in ('torch', 'peft')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_small_model_on_the_cpu_gets_one_torch_thread_unless_told_otherwise(monkeypatch):
    import torch

    from pettingllms.models import choose_cpu_threads, load_causal_lm, resolve_model

    model = load_causal_lm(resolve_model(None), dtype="float32")
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert choose_cpu_threads(model) == 1 and torch.get_num_threads() == 1
        assert choose_cpu_threads(model, requested=2) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert choose_cpu_threads(model) is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
