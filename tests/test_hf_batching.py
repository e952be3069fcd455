"""The hf policy's batching: callers that come back at slightly different moments share one batch."""

from __future__ import annotations

import asyncio
import time

from pettingllms.policies.base import Generation, GenerationRequest
from pettingllms.policies.hf import HFPolicy


def test_callers_returning_one_by_one_are_served_in_full_batches():
    policy = HFPolicy(max_batch_size=8)
    policy.model = object()  # no model: the generate below stands in for it
    sizes: list[int] = []

    def fake_generate(prompts, sampling, seed):
        sizes.append(len(prompts))
        time.sleep(0.05)
        return [Generation(text="ok") for _ in prompts]

    policy._generate_batch = fake_generate
    policy.render_prompt = lambda messages: messages[0]["content"]

    async def episode(index: int) -> None:
        for _ in range(4):
            await policy.generate(GenerationRequest([{"role": "user", "content": f"ask {index}"}]))
            await asyncio.sleep(0.001 * index)  # an env step, quicker for some episodes than others

    async def run() -> None:
        await asyncio.gather(*(episode(index) for index in range(8)))
        await policy.close()

    asyncio.run(run())
    assert sizes[1:] == [8] * (len(sizes) - 1) and sum(sizes) == 32
