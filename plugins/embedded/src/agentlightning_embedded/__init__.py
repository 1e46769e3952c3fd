"""An embedded OpenAI-compatible model server: a Hugging Face causal LM on CPU (or GPU) with transformers.

``agl serve-model`` runs it from the command line. From Python::

    from agentlightning_embedded import ModelServer

    with ModelServer.from_pretrained("path/or/hf-id", port=0) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        ...
        server.load_lora("checkpoints/step-10")  # new weights, no restart

Every response carries the exact prompt and completion token ids and per-token logprobs (vLLM's
``return_token_ids`` format), concurrent requests are decoded in one batch, and weights or a LoRA adapter
can be swapped between two batches. As a plugin it registers the serving backend ``"embedded"`` and
``agl serve-model`` (:mod:`agentlightning_embedded.plugin`).

The names below are imported on first use, so ``import agentlightning_embedded`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4749
"""Where ``agl serve-model`` listens by default (the store server is on 4747, the LLM proxy on 4750)."""

if TYPE_CHECKING:
    from agentlightning_embedded.default_model import DefaultModelMissingError, ensure_default_model
    from agentlightning_embedded.engine import GenerationEngine, GenerationResult, TokenStep
    from agentlightning_embedded.protocol import SamplingParams
    from agentlightning_embedded.server import ModelServer
    from agentlightning_embedded.text import ParsedToolCall, parse_tool_calls

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DefaultModelMissingError",
    "GenerationEngine",
    "GenerationResult",
    "ModelServer",
    "ParsedToolCall",
    "SamplingParams",
    "TokenStep",
    "ensure_default_model",
    "parse_tool_calls",
]

_HOMES = {
    "DefaultModelMissingError": "default_model",
    "ensure_default_model": "default_model",
    "GenerationEngine": "engine",
    "GenerationResult": "engine",
    "TokenStep": "engine",
    "SamplingParams": "protocol",
    "ModelServer": "server",
    "ParsedToolCall": "text",
    "parse_tool_calls": "text",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
