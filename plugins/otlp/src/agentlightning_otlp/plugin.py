"""The plugin module (entry point ``agentlightning``): the store server's ``/v1/traces`` route.

The registration is lazy: loading the plugin imports neither FastAPI nor opentelemetry-proto.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentlightning import hookimpl
from agentlightning.plugins import LazyObject

__all__ = ["agl_register_server_routes"]


@hookimpl
def agl_register_server_routes(register: Callable[[str, Any], None]) -> None:
    register("otlp", LazyObject("agentlightning_otlp.routes:ROUTES"))
