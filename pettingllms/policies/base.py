"""The policy interface: chat messages in, assistant text out, asynchronously.

The rollout runner keeps many episodes in flight and each of them awaits
`policy.generate(request)`. A backend that gains from batching (the local `hf` model)
gathers the requests that are pending at the same moment into one call; a server backend
sends them concurrently, bounded.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to sample one reply; each agent may have its own."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)


@dataclass
class GenerationRequest:
    """One reply to write."""

    messages: list[dict[str, str]]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    agent: str = ""
    episode_id: str = ""
    expert: Callable[[bool], str] | None = None
    """The environment's solver for this turn, `expert(wrong)`, given to policies that ask for it
    (`Policy.needs_expert`); model backends never see the environment."""


@dataclass
class Generation:
    """One written reply, with what the backend knows about it."""

    text: str
    prompt_text: str | None = None
    """The exact prompt the model saw, when the backend rendered the chat template itself."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class Policy(abc.ABC):
    """A named source of replies; `name` is the `policy_name` written into records."""

    needs_expert: bool = False
    """True for policies that play the environment's own solver (`GenerationRequest.expert`)."""

    def __init__(self, name: str):
        self.name = name

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation:
        """Write one reply. Raises `PolicyError` when the backend could not answer."""

    async def close(self) -> None:
        """Release connections, threads or memory."""
