"""Length-grouped batches come in random order (pettingllms/training/batches.py): agents whose
turns differ in length must not be trained in long runs of one agent's batches."""

from __future__ import annotations

import itertools

import torch
from test_training_padding import record
from transformers.trainer_pt_utils import get_length_grouped_indices

from pettingllms.config.sft import SFTSettings
from pettingllms.models import load_causal_lm, load_tokenizer
from pettingllms.tiny_model import tiny_model_path
from pettingllms.training.batches import shuffled_length_batches
from pettingllms.training.sft import build_datasets, build_trainer


def two_agents(count: int) -> list[int]:
    """Lengths like a tool's turns (~600 tokens) and a planner's (~480), interleaved."""
    return [600 + index % 17 if index % 2 else 480 + index % 5 for index in range(count)]


def batches_of(indices: list[int], size: int) -> list[list[int]]:
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def longest_run(kinds: list[bool]) -> int:
    return max(len(list(run)) for _, run in itertools.groupby(kinds))


def test_the_batches_are_transformers_length_groups_in_another_order():
    lengths = two_agents(802)  # 200 full batches of 4 and a short one of 2
    ours = shuffled_length_batches(lengths, 4, generator=torch.Generator().manual_seed(0))
    grouped = get_length_grouped_indices(lengths, 4, generator=torch.Generator().manual_seed(0))
    assert sorted(ours) == list(range(802))
    assert sorted(map(sorted, batches_of(ours, 4))) == sorted(map(sorted, batches_of(grouped, 4)))
    assert batches_of(ours, 4) != batches_of(grouped, 4)
    assert max(lengths[i] for i in ours[:4]) == max(lengths)  # the longest batch first
    assert len(batches_of(ours, 4)[-1]) == 2  # the short batch last, where the loader expects it


def test_one_agents_batches_do_not_come_in_long_runs():
    lengths = two_agents(800)
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        theirs = get_length_grouped_indices(lengths, 4, generator=generator)
        ours = shuffled_length_batches(lengths, 4, generator=torch.Generator().manual_seed(seed))
        kinds = [[lengths[i] >= 600 for i in batch] for batch in batches_of(ours, 4)]
        # Still one length group a batch, but where a mega-batch's long samples meet its short ones.
        assert sum(len(set(batch)) > 1 for batch in kinds) <= 5
        # transformers sorts each mega-batch of 50 batches: 25 tool batches, then 25 planner ones.
        assert longest_run([lengths[batch[0]] >= 600 for batch in batches_of(theirs, 4)]) >= 20
        assert longest_run([batch[0] for batch in kinds]) <= 14, seed  # 200 coin flips: ~8


def test_tiny_inputs_stay_whole():
    assert shuffled_length_batches([], 4) == []
    assert shuffled_length_batches([5], 4) == [0]
    assert sorted(shuffled_length_batches([5, 9, 1], 2)) == [0, 1, 2]


def test_the_trainer_feeds_the_shuffled_batches(tmp_path):
    model_dir = str(tiny_model_path())
    model, tokenizer = load_causal_lm(model_dir, dtype="float32"), load_tokenizer(model_dir)
    settings = SFTSettings(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        use_lora=False,
    )  # length groups are per optimizer step: with accumulation, its micro-batches are one group
    # Two kinds of record, 40 words and 300 words, as a planner's and a tool's turns.
    records = [record(i, 300 if i % 2 else 40) for i in range(200)]
    train, _, _ = build_datasets(settings, records, [], tokenizer)
    trainer = build_trainer(settings, model, tokenizer, train)
    widths = [batch["attention_mask"].shape[1] for batch in trainer.get_train_dataloader()]
    long = [width > 200 for width in widths]
    assert len(widths) == 100 and 49 <= sum(long) <= 52  # one kind a batch, but at mega-batch seams
    assert longest_run(long) <= 14, long  # transformers' sampler: runs of 25
