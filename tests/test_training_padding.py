"""Training spends little compute on padding: batches grouped by length, the model in the dtype
training uses, activation checkpointing only when asked (pettingllms/training/sft.py)."""

from __future__ import annotations

import pytest

from pettingllms.config.sft import SFTSettings
from pettingllms.models import load_causal_lm, load_tokenizer
from pettingllms.tiny_model import tiny_model_path
from pettingllms.training.sft import build_datasets, build_sft_config, build_trainer, training_dtype


def record(index: int, words: int) -> dict:
    """A record whose reply is `words` words long; lengths vary from record to record."""
    return {
        "messages": [
            {"role": "user", "content": f"Task {index}: count."},
            {"role": "assistant", "content": " ".join(f"w{n}" for n in range(words))},
        ],
        "metadata": {"agent_name": "a", "policy_name": "p", "reward": 1.0, "env_success": True},
    }


def test_batches_are_grouped_by_length_and_padded_far_less_than_random_ones(tmp_path):
    model_dir = str(tiny_model_path())
    model, tokenizer = load_causal_lm(model_dir, dtype="float32"), load_tokenizer(model_dir)
    settings = SFTSettings(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, use_lora=False)
    # Lengths 1..400 words, shuffled: random batches of 4 would be about half padding.
    words = [(index * 137) % 400 + 1 for index in range(64)]
    train, _, _ = build_datasets(settings, [record(i, n) for i, n in enumerate(words)], [], tokenizer)
    trainer = build_trainer(settings, model, tokenizer, train)
    real = total = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    assert 1 - real / total < 0.1


def test_the_config_groups_by_length_and_checkpoints_only_when_asked(tmp_path):
    config = build_sft_config(SFTSettings(output_dir=str(tmp_path)), has_eval=False, assistant_mask=False)
    grouped = getattr(config, "train_sampling_strategy", None) == "group_by_length"
    assert grouped or getattr(config, "group_by_length", False)
    assert not config.gradient_checkpointing and not config.padding_free
    asked = SFTSettings(output_dir=str(tmp_path), gradient_checkpointing=True)
    assert build_sft_config(asked, has_eval=False, assistant_mask=False).gradient_checkpointing


@pytest.mark.parametrize(
    ("use_lora", "bf16", "dtype"),
    [(True, None, "float32"), (True, True, "bfloat16"), (False, True, "float32"), (True, False, "float32")],
)
def test_the_model_is_loaded_in_the_dtype_training_computes_in(use_lora, bf16, dtype, monkeypatch):
    import torch

    # bf16=None without a GPU means no mixed precision: float32 throughout.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_dtype(SFTSettings(use_lora=use_lora, bf16=bf16)) == dtype
