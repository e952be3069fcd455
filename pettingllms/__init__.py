"""pettingllms: collect multi-agent LLM trajectories, keep the successful ones, fine-tune on them."""

from pettingllms.envs import make, register

__version__ = "0.1.0"

__all__ = ["make", "register", "__version__"]
