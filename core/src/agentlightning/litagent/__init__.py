"""Agents as the runner sees them."""

from .decorator import FunctionalLitAgent, llm_rollout, prompt_rollout, rollout
from .litagent import LitAgent

__all__ = ["LitAgent", "FunctionalLitAgent", "rollout", "llm_rollout", "prompt_rollout"]
