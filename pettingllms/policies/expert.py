"""The `expert` backend: the environment's own solver writes the reply.

It lets a user (and the tests) run the whole pipeline without a model. With
`error_rate > 0` the expert plays that share of episodes wrong, chosen by a hash of the
episode id, so the same run always fails the same episodes whatever the scheduling.
"""

from __future__ import annotations

import hashlib

from pettingllms.policies.base import Generation, GenerationRequest, Policy


class ExpertPolicy(Policy):
    needs_expert = True

    def __init__(self, name: str = "expert", error_rate: float = 0.0, seed: int = 0):
        super().__init__(name)
        self.error_rate = error_rate
        self.seed = seed

    def plays_wrong(self, episode_id: str) -> bool:
        """Whether this episode is one of the `error_rate` share played wrong."""
        digest = hashlib.sha256(f"{self.seed}:{episode_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.error_rate

    async def generate(self, request: GenerationRequest) -> Generation:
        if request.expert is None:
            raise ValueError("the expert policy needs GenerationRequest.expert (the environment's solver)")
        text = request.expert(self.plays_wrong(request.episode_id))
        return Generation(text=text)
