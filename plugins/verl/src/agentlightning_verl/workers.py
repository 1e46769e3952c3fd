"""What the step loop asks of verl's workers: the actor (and its reference) and the rollout servers.

On GPUs this is :class:`agentlightning_verl.gpu.VerlRayWorkers` (verl's FSDP actor worker group and its
vLLM rollout replicas, built the way verl's own trainer builds them). Anything with these methods
works, e.g. a stand-in that runs the same verl loss functions on CPU in tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Protocol

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from verl import DataProto

__all__ = ["PolicyWorkers", "WorkersFactory"]


class PolicyWorkers(Protocol):
    """The actor, its reference policy and the OpenAI-compatible servers that sample from it."""

    @property
    def server_urls(self) -> List[str]:
        """Base URLs (``http://host:port/v1``) of the rollout servers serving the current weights."""
        ...

    @property
    def served_model(self) -> str:
        """The model name those servers answer to."""
        ...

    @property
    def pad_token_id(self) -> int: ...

    def compute_log_prob(self, batch: "DataProto") -> "DataProto":
        """``old_log_probs`` (and ``entropys``) ``[B, R]`` of the batch's responses under the actor."""
        ...

    def compute_ref_log_prob(self, batch: "DataProto") -> "DataProto":
        """``ref_log_prob`` ``[B, R]`` under the reference policy (used by the KL loss or KL-in-reward)."""
        ...

    def update_actor(self, batch: "DataProto") -> Dict[str, Any]:
        """One PPO update (verl's mini-batches and epochs) on a batch with ``advantages``; its metrics."""
        ...

    def pause_servers(self) -> None:
        """Free the rollout servers' device memory for training (verl's ``sleep_replicas``)."""
        ...

    def sync_weights(self, step: int) -> None:
        """Load the actor's current weights into the rollout servers and resume them."""
        ...

    def close(self) -> None: ...


WorkersFactory = Callable[["DictConfig"], PolicyWorkers]
"""Builds the workers of a run from its validated verl config."""
