"""Policy backends, built from config: `hf`, `openai`, `expert`.

Each backend lives in its own module and is imported only when asked for, so listing
environments or printing help never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pettingllms.policies.base import Generation, GenerationRequest, Policy, SamplingParams

if TYPE_CHECKING:
    from pettingllms.config import AgentConfig, PolicyConfig


def build_policy(name: str, config: PolicyConfig, seed: int = 0) -> Policy:
    """The backend `config.backend` names, called `name` in the records."""
    if config.backend == "expert":
        from pettingllms.policies.expert import ExpertPolicy

        return ExpertPolicy(name, error_rate=config.error_rate, seed=seed)
    if config.backend == "hf":
        from pettingllms.policies.hf import HFPolicy

        return HFPolicy(
            name,
            config.model_path,
            device=config.device,
            dtype=config.dtype,
            max_batch_size=config.max_batch_size,
            torch_threads=config.torch_threads,
            seed=seed,
        )
    if config.backend == "openai":
        from pettingllms.policies.openai import OpenAIPolicy

        return OpenAIPolicy.from_config(name, config)
    raise ValueError(f"unknown backend {config.backend!r}")  # validate() has already said so


def sampling_for(policy: PolicyConfig, agent: AgentConfig | None) -> SamplingParams:
    """The policy's sampling settings, with the agent's own overrides on top."""
    sampling = SamplingParams(policy.temperature, policy.top_p, policy.max_tokens, list(policy.stop))
    if agent is not None:
        for name in ("temperature", "top_p", "max_tokens", "stop"):
            value = getattr(agent, name)
            if value is not None:
                setattr(sampling, name, value)
    return sampling


__all__ = ["Generation", "GenerationRequest", "Policy", "SamplingParams", "build_policy", "sampling_for"]
