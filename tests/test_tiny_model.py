"""The tiny built-in model: it builds, loads as a normal Qwen2 checkpoint, and is cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pettingllms import tiny_model

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where to?"},
    {"role": "assistant", "content": "Up Left"},
    {"role": "user", "content": "Again."},
    {"role": "assistant", "content": "Down"},
]

ROUND_TRIP_STRINGS = [
    "",
    "hello world",
    "  two  spaces\n\n\ttab\r\n",
    "def solve(nums):\n    return sum(x * 2 for x in nums)  # done\n",
    "café naïve Straße 日本語 🙂 e\u0301 ﬁ",
    "<|im_start|>user\nMove the box.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_end|>x<|im_start|>",
    "#######\n#.@ $_#\n#__.__#\n#######",
    'Actions: ["Up", "Down", "Left", "Right"]',
    "I'll say we've 12345 + 3.14159 = \\boxed{12348.14159}",
    "   leading and trailing   ",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return tiny_model.build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def loaded_tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)


@pytest.mark.slow
def test_build_writes_a_small_qwen2_model(tiny_dir, loaded_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, local_files_only=True)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    assert model.config.model_type == "qwen2"
    assert 100_000 <= parameters <= 1_000_000
    assert model.config.vocab_size == len(loaded_tokenizer)
    assert 2048 <= len(loaded_tokenizer) <= 4096
    end_ids = model.generation_config.eos_token_id
    assert loaded_tokenizer.convert_tokens_to_ids("<|im_end|>") in end_ids
    assert loaded_tokenizer.eos_token == "<|im_end|>"
    assert loaded_tokenizer.pad_token == "<|endoftext|>"


def test_build_is_deterministic(tiny_dir, tmp_path):
    again = tiny_model.build_tiny_model(tmp_path / "again")
    for name in ["tokenizer.json", "model.safetensors", "config.json", "generation_config.json"]:
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def test_loaded_tokenizer_gives_the_trained_ids(loaded_tokenizer):
    # transformers 5 rebuilds a qwen2 folder's tokenizer as Qwen2Tokenizer from its own
    # defaults; the ids only survive because the trained pipeline is Qwen2's.
    trained = tiny_model.train_bpe()
    assert type(loaded_tokenizer).__name__ == "Qwen2Tokenizer"
    for text in ROUND_TRIP_STRINGS:
        ids = loaded_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == trained.encode(text).ids, text
        assert loaded_tokenizer(text)["input_ids"] == ids, "no BOS/EOS may be added"
        assert loaded_tokenizer.decode(ids) == trained.normalizer.normalize_str(text)


def test_tokenizer_config_names_qwen2(tiny_dir):
    config = json.loads((tiny_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"


def test_chat_template_renders_chatml(loaded_tokenizer):
    rendered = loaded_tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhere to?<|im_end|>\n<|im_start|>assistant\n"
    )
    full = loaded_tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert full.endswith("<|im_start|>assistant\nDown<|im_end|>\n")


def test_assistant_mask_covers_content_and_end_of_turn(loaded_tokenizer):
    encoded = loaded_tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    masked = [token for token, keep in zip(ids, mask) if keep]
    expected = loaded_tokenizer("Up Left<|im_end|>")["input_ids"] + loaded_tokenizer("Down<|im_end|>")["input_ids"]
    assert masked == expected


def test_tiny_model_path_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PETTINGLLMS_CACHE", str(tmp_path))
    path = tiny_model.tiny_model_path()
    assert path == tmp_path / tiny_model.TINY_MODEL_NAME
    built_at = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny_model.tiny_model_path() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == built_at
    assert [entry.name for entry in tmp_path.iterdir()] == [tiny_model.TINY_MODEL_NAME]


def test_tiny_model_path_keeps_the_winner_of_a_race(tmp_path, monkeypatch):
    """Another process finishes first: its folder stays and our staging folder is removed."""
    monkeypatch.setenv("PETTINGLLMS_CACHE", str(tmp_path))
    target = tmp_path / tiny_model.TINY_MODEL_NAME

    def build_while_another_process_wins(output_dir):
        Path(output_dir, "config.json").write_text("{}")
        target.mkdir()
        (target / "config.json").write_text('{"winner": true}')
        return Path(output_dir)

    monkeypatch.setattr(tiny_model, "build_tiny_model", build_while_another_process_wins)
    assert tiny_model.tiny_model_path() == target
    assert json.loads((target / "config.json").read_text()) == {"winner": True}
    assert [entry.name for entry in tmp_path.iterdir()] == [tiny_model.TINY_MODEL_NAME]
