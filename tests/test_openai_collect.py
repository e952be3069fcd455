"""Collection through a real OpenAI-compatible server: `transformers serve` on the tiny model.

The server starts once for this module's tests (session fixture), offline, on a free port
of 127.0.0.1, and its process group is killed at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (no __init__.py there), so the helpers import by name.
from servers import transformers_serve

from pettingllms.collect import collect
from pettingllms.config import load_config
from pettingllms.policies import GenerationRequest, SamplingParams
from pettingllms.policies.openai import OpenAIPolicy

pytestmark = pytest.mark.slow

SECRET_KEY = "sk-test-never-written-4f9c2a"


@pytest.fixture(scope="session")
def served_model(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, model folder) of a running `transformers serve` with the tiny model."""
    from pettingllms.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path_factory.mktemp("served_model") / "tiny")
    with transformers_serve(model_dir, tmp_path_factory.mktemp("transformers_serve")) as base_url:
        yield base_url, str(model_dir)


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_both_endpoints_answer(served_model, mode):
    base_url, model_dir = served_model
    policy = OpenAIPolicy("tiny", [base_url], model_dir, mode=mode, tokenizer_path=model_dir)

    async def ask():
        try:
            request = GenerationRequest([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4))
            return await policy.generate(request)
        finally:
            await policy.close()

    generation = asyncio.run(ask())
    assert isinstance(generation.text, str)
    assert generation.prompt_tokens > 0 and generation.completion_tokens > 0
    assert generation.finish_reason in ("stop", "length")
    assert (generation.prompt_text is not None) == (mode == "completions")


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_collection_through_transformers_serve(served_model, mode, tmp_path, monkeypatch):
    base_url, model_dir = served_model
    monkeypatch.setenv("PETTINGLLMS_TEST_API_KEY", SECRET_KEY)
    result = collect(
        load_config(
            [
                "policy=openai",
                f"policy.base_url={base_url}",
                f"policy.model={model_dir}",
                f"policy.mode={mode}",
                f"policy.model_path={model_dir}",
                "policy.api_key_env=PETTINGLLMS_TEST_API_KEY",
                "policy.max_tokens=16",
                "env.max_turns=1",
                "training.sft_num_episodes=20",
                "training.only_success=false",
                f"training.sft_data_dir={tmp_path}",
                "training.run_name=served",
            ]
        )
    )
    assert result.stats["errors"] == {}
    assert result.stats["total_episodes"] == 20
    episodes = [json.loads(line) for line in result.files.rollouts.read_text().splitlines()]
    assert len({episode["episode_id"] for episode in episodes}) == 20
    turns = [turn for episode in episodes for turn in episode["turns"]]
    assert turns and all(turn["prompt_tokens"] > 0 and turn["finish_reason"] for turn in turns)
    if mode == "completions":
        assert_prompts_are_the_rendered_template(turns, model_dir)
    assert_secret_not_written(tmp_path)


def assert_prompts_are_the_rendered_template(turns: list[dict], model_dir: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for turn in turns:
        expected = tokenizer.apply_chat_template(turn["messages"], tokenize=False, add_generation_prompt=True)
        assert turn["prompt_text"] == expected


def assert_secret_not_written(directory: Path) -> None:
    files = [path for path in directory.rglob("*") if path.is_file()]
    assert files
    for path in files:
        assert SECRET_KEY.encode() not in path.read_bytes(), f"API key written to {path}"
