"""The plugin module (entry point ``agentlightning``): the serving backend ``vllm``.

The registration is lazy; vLLM itself is only ever run as a subprocess, never imported.
"""

from __future__ import annotations

from collections.abc import Callable

from agentlightning import hookimpl
from agentlightning.plugins import LazyObject
from agentlightning.serving import ServingBackendFactory

__all__ = ["agl_register_serving_backends"]


@hookimpl
def agl_register_serving_backends(register: Callable[[str, ServingBackendFactory], None]) -> None:
    register("vllm", LazyObject("agentlightning_vllm.backend:start_vllm_backend"))
