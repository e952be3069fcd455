"""The hf policy on the tiny model: replies, batching, stop strings, seeds, errors."""

from __future__ import annotations

import asyncio

import pytest

from pettingllms.exceptions import ModelNotFoundError, PolicyError
from pettingllms.policies.base import GenerationRequest, SamplingParams
from pettingllms.policies.hf import HFPolicy
from pettingllms.tiny_model import TINY_MODEL_NAME, build_tiny_model


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Matrices this small only lose from intra-op threads, and on a busy CI box they lose
    a lot (100x measured on 2 shared cores); restore the setting for the other tests."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny model with its weights drawn wider: as built, its near-uniform logits give every
    prompt the same greedy reply ("\\n\\n..."), and tests comparing replies could not fail."""
    import torch
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(std=0.3, generator=generator)
    model.save_pretrained(path)
    return str(path)


def ask(content: str, **sampling) -> GenerationRequest:
    sampling.setdefault("max_tokens", 8)
    return GenerationRequest([{"role": "user", "content": content}], SamplingParams(**sampling))


def loaded_policy(tiny_dir: str, **options) -> HFPolicy:
    policy = HFPolicy(model_path=tiny_dir, device="cpu", **options)
    policy.load()
    return policy


def greedy_reference(model, tokenizer, content: str, max_tokens: int = 8) -> str:
    """The reply transformers' own `generate` gives one prompt alone, greedy, without special tokens."""
    messages = [{"role": "user", "content": content}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def count_generate_calls(policy: HFPolicy) -> list[int]:
    """Wrap the model's generate so each call records its batch size, then runs for real."""
    calls: list[int] = []
    real_generate = policy.model.generate

    def counting_generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real_generate(*args, **kwargs)

    policy.model.generate = counting_generate
    return calls


async def gather_replies(policy: HFPolicy, requests: list[GenerationRequest]) -> list:
    return await asyncio.gather(*(policy.generate(request) for request in requests), return_exceptions=True)


@pytest.mark.slow
def test_generate_returns_text_and_the_prompt_it_saw(tiny_dir):
    policy = HFPolicy(model_path=tiny_dir, device="cpu")  # loads lazily, in a thread
    generation = asyncio.run(policy.generate(ask("Push the box.", temperature=0)))
    expected_prompt = "<|im_start|>user\nPush the box.<|im_end|>\n<|im_start|>assistant\n"
    assert generation.text and generation.text == greedy_reference(policy.model, policy.tokenizer, "Push the box.")
    assert generation.prompt_text == expected_prompt
    assert generation.prompt_tokens == len(policy.tokenizer(expected_prompt)["input_ids"])
    assert 1 <= generation.completion_tokens <= 8
    assert generation.finish_reason in ("stop", "length")
    asyncio.run(policy.close())


def test_concurrent_requests_share_generate_calls_and_reply_as_one_by_one(tiny_dir):
    policy = loaded_policy(tiny_dir)
    prompts = ["x " * n for n in range(8)]  # different lengths: the batch is left-padded
    alone = [greedy_reference(policy.model, policy.tokenizer, prompt) for prompt in prompts]
    calls = count_generate_calls(policy)
    replies = asyncio.run(gather_replies(policy, [ask(prompt, temperature=0) for prompt in prompts]))
    assert [reply.text for reply in replies] == alone
    assert len(set(alone)) > 4  # the replies depend on the prompt, so a mix-up would show
    assert len(calls) < 8 and sum(calls) == 8


def test_batches_group_by_sampling_and_respect_max_batch_size(tiny_dir):
    policy = loaded_policy(tiny_dir, max_batch_size=3)
    calls = count_generate_calls(policy)
    requests = [ask("a", max_tokens=4) for _ in range(4)] + [ask("b", max_tokens=6) for _ in range(2)]
    asyncio.run(gather_replies(policy, requests))
    assert calls == [3, 1, 2]


def test_stop_string_truncates_the_reply(tiny_dir):
    # Same seed, same batches: the stopped reply is the unstopped one cut at the stop string.
    full = asyncio.run(loaded_policy(tiny_dir, seed=3).generate(ask("go", max_tokens=24)))
    stop = full.text[6:9]
    assert len(stop) == 3
    stopped = asyncio.run(loaded_policy(tiny_dir, seed=3).generate(ask("go", max_tokens=24, stop=[stop])))
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.finish_reason == "stop"


def test_greedy_is_deterministic_across_calls_and_event_loops(tiny_dir):
    policy = loaded_policy(tiny_dir)
    first = asyncio.run(policy.generate(ask("Solve 2 + 2.", temperature=0)))
    second = asyncio.run(policy.generate(ask("Solve 2 + 2.", temperature=0)))
    assert first.text == second.text


def test_sampling_follows_the_seed(tiny_dir):
    def sample(seed: int) -> str:
        return asyncio.run(loaded_policy(tiny_dir, seed=seed).generate(ask("hi", max_tokens=16))).text

    assert sample(5) == sample(5)
    assert sample(5) != sample(6)


def test_reply_ends_at_end_of_turn(tiny_dir):
    import torch

    policy = loaded_policy(tiny_dir)
    tokenizer = policy.tokenizer
    reply_ids = tokenizer("Up Left")["input_ids"] + tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])

    def fake_generate(input_ids, attention_mask, **options):
        return torch.cat([input_ids, torch.tensor([reply_ids] * len(input_ids))], dim=1)

    policy.model.generate = fake_generate
    generation = asyncio.run(policy.generate(ask("Where?")))
    assert generation.text == "Up Left"
    assert generation.completion_tokens == len(reply_ids) - 1
    assert generation.finish_reason == "stop"


def test_a_failed_batch_reaches_every_caller_and_the_next_batch_works(tiny_dir):
    policy = loaded_policy(tiny_dir)
    real_generate = policy.model.generate

    def failing_generate(*args, **kwargs):
        raise RuntimeError("out of memory")

    policy.model.generate = failing_generate
    replies = asyncio.run(gather_replies(policy, [ask("a"), ask("b"), ask("c")]))
    assert all(isinstance(reply, PolicyError) and reply.kind == "generate_error" for reply in replies)
    assert "out of memory" in str(replies[0])
    policy.model.generate = real_generate
    reply = asyncio.run(policy.generate(ask("d", temperature=0)))
    assert reply.text == greedy_reference(policy.model, policy.tokenizer, "d")


def test_missing_model_path_says_what_is_accepted(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model") as error:
        HFPolicy(model_path=str(missing))
    assert "config.json" in str(error.value) and "Hub id" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(ModelNotFoundError, match="folder without config.json"):
        HFPolicy(model_path=str(tmp_path))


def test_default_model_is_the_cached_tiny_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PETTINGLLMS_CACHE", str(tmp_path))
    policy = HFPolicy(device="cpu")
    generation = asyncio.run(policy.generate(ask("hello", max_tokens=2)))
    assert generation.prompt_text.startswith("<|im_start|>user\nhello")
    assert (tmp_path / TINY_MODEL_NAME / "config.json").is_file()


def test_a_cached_hub_id_loads_from_its_snapshot_folder(tiny_dir, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "models--tiny-org--tiny-qwen2"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    policy = HFPolicy(model_path="tiny-org/tiny-qwen2", device="cpu")
    assert policy.model_dir == str(snapshot)
    reply = asyncio.run(policy.generate(ask("hi", temperature=0)))
    local = loaded_policy(tiny_dir)
    assert reply.text == asyncio.run(local.generate(ask("hi", temperature=0))).text
    with pytest.raises(ModelNotFoundError, match="Hub id"):
        HFPolicy(model_path="tiny-org/not-downloaded")


@pytest.mark.slow
def test_a_lora_adapter_folder_is_loaded_on_its_base_model(tmp_path):
    """`policy.model_path=<output of pettingllms train>` collects with the fine-tuned model."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pettingllms.tiny_model import tiny_model_path

    base_dir = tiny_model_path()
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.fill_(0.05)  # B starts at zero; make the adapter change something
    peft_model.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp_path / "adapter")

    policy = HFPolicy(model_path=str(tmp_path / "adapter"), device="cpu")
    policy.load()
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    loaded = dict(policy.model.named_parameters())
    query = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(loaded[query], dict(base.named_parameters())[query])
    assert torch.equal(loaded["model.embed_tokens.weight"], dict(base.named_parameters())["model.embed_tokens.weight"])
    reply = asyncio.run(policy.generate(ask("hi", temperature=0)))
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(tmp_path / "adapter"))
    assert reply.text == greedy_reference(unmerged.eval(), policy.tokenizer, "hi")
    assert reply.prompt_text.startswith("<|im_start|>user")


def test_an_adapter_whose_base_does_not_fit_is_refused(tmp_path):
    """The base an adapter names may have been replaced since: the hf policy checks it as merge-lora does."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from pettingllms.exceptions import UserError
    from pettingllms.tiny_model import tiny_model_path

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_path()), LoraConfig(r=4, target_modules=["q_proj"])
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_path()).save_pretrained(tmp_path / "adapter")
    one_layer = AutoConfig.from_pretrained(tiny_model_path()).to_dict() | {"num_hidden_layers": 1, "layer_types": None}
    AutoModelForCausalLM.from_config(Qwen2Config(**one_layer)).save_pretrained(tmp_path / "base")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    config_file.write_text(
        json.dumps(json.loads(config_file.read_text()) | {"base_model_name_or_path": str(tmp_path / "base")})
    )

    with pytest.raises(UserError, match="does not fit base model .*the base has no module model.layers.1.self_attn"):
        HFPolicy(model_path=str(tmp_path / "adapter"), device="cpu").load()
