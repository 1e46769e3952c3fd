"""Serving the policy being trained: the embedded model server, updated in place after every step."""

from __future__ import annotations

from typing import Any, Optional

from agentlightning_embedded.server import ModelServer

from .policy import TrainablePolicy

__all__ = ["EmbeddedPolicyServer"]


class EmbeddedPolicyServer:
    """``agl serve-model`` in this process, on a free port, with the policy's weights pushed into it.

    With LoRA, only the adapter tensors are copied after each step (the server keeps its own base
    weights); with full fine-tuning the merged weights are loaded. Either is applied between two
    decoding batches, so no rollout sees a half-updated model.
    """

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    @classmethod
    def start(
        cls,
        model_path: str,
        *,
        model_name: str,
        max_batch_size: int = 16,
        dtype: str = "auto",
        device: Optional[str] = None,
    ) -> "EmbeddedPolicyServer":
        from .policy import resolve_device

        server = ModelServer.from_pretrained(
            model_path,
            dtype=dtype,
            device=str(resolve_device(device)),
            max_batch_size=max_batch_size,
            port=0,
            served_model_name=model_name,
        )
        return cls(server.start_in_thread())

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def weights_version(self) -> int:
        return int(self.server.engine.weights_version)

    def push(self, policy: TrainablePolicy) -> int:
        """Serve ``policy``'s current weights; returns the server's new weights version."""
        if policy.is_lora:
            model: Any = policy.model
            return self.server.load_lora_state_dict(policy.adapter_state_dict(), model.peft_config["default"])
        return self.server.load_weights(policy.merged_state_dict())

    def close(self) -> None:
        self.server.close()
