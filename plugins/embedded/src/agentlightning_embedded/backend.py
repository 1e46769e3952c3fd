"""The serving backend ``"embedded"``: :class:`ModelServer` in this process, behind the ServingBackend protocol."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from agentlightning.serving import WeightsSource

from .server import ModelServer

__all__ = ["EmbeddedServingBackend", "share_base_weights", "start_embedded_backend"]


class EmbeddedServingBackend:
    """A :class:`ModelServer` on a free loopback port, served from a background thread.

    Weight updates take folders or in-memory state dicts (no file round trip); either is applied
    between two decoding batches, so no request sees a half-updated model.
    """

    accepts_state_dicts = True

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def model_name(self) -> str:
        return self.server.model_name

    @property
    def weights_version(self) -> int:
        return int(self.server.engine.weights_version)

    def load_weights(self, source: WeightsSource) -> int:
        return self.server.load_weights(source if isinstance(source, Mapping) else str(source))

    def load_lora(self, source: WeightsSource, config: Any = None) -> int:
        if isinstance(source, Mapping):
            if config is None:
                raise ValueError("a LoRA adapter given as a state dict needs its peft LoraConfig (config=...)")
            return self.server.load_lora_state_dict(source, config)
        return self.server.load_lora(str(source))

    def share_base_weights(self, tensors: Mapping[str, Any]) -> bool:
        """Serve from ``tensors`` (a trainer's frozen base weights) instead of this server's own copy.

        See :func:`share_base_weights`; the caller must never write them in place while serving.
        """
        return share_base_weights(self.server.engine.model, tensors)

    def request_extras(self) -> dict[str, Any]:
        return {}  # every response already carries token ids and logprobs

    def close(self) -> None:
        self.server.close()


def share_base_weights(model: Any, tensors: Mapping[str, Any]) -> bool:
    """Point ``model``'s parameters at ``tensors`` when every one matches in name, shape, dtype and
    device (tied weights stay tied: they are one parameter); returns whether it did.

    For a LoRA trainer of the same model, this halves the weights' memory (2 GB for a 0.5B model in
    float32): LoRA adapters are served as separate layers, so serving only reads the base tensors.
    """
    params = dict(model.named_parameters())
    for name, param in params.items():
        tensor = tensors.get(name)
        if (
            tensor is None
            or tensor.shape != param.shape
            or tensor.dtype != param.dtype
            or tensor.device != param.device
        ):
            return False
    for name, param in params.items():
        param.data = tensors[name]
    return True


def start_embedded_backend(
    model: str,
    *,
    served_model_name: Optional[str] = None,
    device: Optional[str] = None,
    dtype: str = "auto",
    max_batch_size: int = 16,
    **server_options: Any,
) -> EmbeddedServingBackend:
    """Load ``model`` (a folder or hub id) and serve it; ``device=None`` picks cuda when available, else cpu."""
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    server = ModelServer.from_pretrained(
        model,
        dtype=dtype,
        device=device,
        max_batch_size=max_batch_size,
        port=0,
        served_model_name=served_model_name,
        **server_options,
    )
    return EmbeddedServingBackend(server.start_in_thread())
