"""The serving backend ``"vllm"``: a :class:`VLLMServer` behind the ServingBackend protocol.

vLLM loads weights and LoRA adapters from folders, so :attr:`accepts_state_dicts` is False: an
algorithm saves them first (PEFT's / transformers' ``save_pretrained`` layout) and passes the folder.
A LoRA adapter is served under its own name (``<served name>-lora``), replaced in place on every
update; :attr:`model_name` switches to it once one is loaded, so requests use the newest adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from agentlightning.serving import WeightsSource

from .server import VLLMServer

__all__ = ["VLLMServingBackend", "start_vllm_backend"]


class VLLMServingBackend:
    """Weight updates of a running :class:`VLLMServer`, counted in :attr:`weights_version`."""

    accepts_state_dicts = False

    def __init__(self, server: VLLMServer) -> None:
        self.server = server
        self.weights_version = 0
        self._lora_name: Optional[str] = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def model_name(self) -> str:
        return self._lora_name or self.server.model_name

    def _folder(self, source: WeightsSource, what: str) -> str:
        if isinstance(source, Mapping):
            raise TypeError(f"vLLM loads {what} from a folder, not a state dict: save it first (save_pretrained)")
        return str(source)

    def load_weights(self, source: WeightsSource) -> int:
        self.server.reload_weights(self._folder(source, "weights"))
        self.weights_version += 1
        return self.weights_version

    def load_lora(self, source: WeightsSource, config: Any = None) -> int:
        name = self._lora_name or f"{self.server.model_name}-lora"
        self.server.load_lora_adapter(name, self._folder(source, "LoRA adapters"))
        self._lora_name = name
        self.weights_version += 1
        return self.weights_version

    def request_extras(self) -> dict[str, Any]:
        return self.server.request_extras()

    def close(self) -> None:
        self.server.stop()


def start_vllm_backend(
    model: str, *, served_model_name: Optional[str] = None, enable_lora: bool = True, **options: Any
) -> VLLMServingBackend:
    """Launch vLLM on ``model`` (options: those of :class:`VLLMServer`) and wait until it answers."""
    server = VLLMServer(model, served_model_name=served_model_name, enable_lora=enable_lora, **options)
    return VLLMServingBackend(server.start())
