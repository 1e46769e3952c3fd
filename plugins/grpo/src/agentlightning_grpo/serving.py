"""Serving the policy being trained: the embedded model server, updated in place after every step."""

from __future__ import annotations

from typing import Any, Optional

from agentlightning.model_server.server import ModelServer

from .policy import TrainablePolicy

__all__ = ["EmbeddedPolicyServer", "share_base_weights"]


def share_base_weights(model: Any, policy: TrainablePolicy) -> bool:
    """Point ``model``'s parameters at ``policy``'s frozen base tensors when every one matches in name,
    shape, dtype and device (tied weights stay tied: they are one parameter); returns whether it did.

    The serving model must then only read them: LoRA adapters are added as separate layers, and
    :meth:`EmbeddedPolicyServer.push` never writes base weights of a LoRA policy.
    """
    base = policy.frozen_base_weights()
    params = dict(model.named_parameters())
    for name, param in params.items():
        tensor = base.get(name)
        if (
            tensor is None
            or tensor.shape != param.shape
            or tensor.dtype != param.dtype
            or tensor.device != param.device
        ):
            return False
    for name, param in params.items():
        param.data = base[name]
    return True


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
        share_with: Optional[TrainablePolicy] = None,
    ) -> "EmbeddedPolicyServer":
        """Load ``model_path`` into a server in this process; with ``share_with`` (a LoRA policy of the same
        model, device and dtype) the server reads the policy's frozen base weights instead of keeping its
        own copy, which halves the weights' memory (2 GB for a 0.5B model in float32)."""
        from .policy import resolve_device

        server = ModelServer.from_pretrained(
            model_path,
            dtype=dtype,
            device=str(resolve_device(device)),
            max_batch_size=max_batch_size,
            port=0,
            served_model_name=model_name,
        )
        if share_with is not None and share_with.is_lora:
            share_base_weights(server.engine.model, share_with)
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
