"""The ``agentlightning`` entry point of this distribution: registers the OpenAI Agents SDK instrumentor."""

from __future__ import annotations

from typing import Any, Callable

from agentlightning import hookimpl

from .instrumentor import INSTRUMENTOR


@hookimpl
def agl_register_instrumentors(register: Callable[[str, Any], None]) -> None:
    register(INSTRUMENTOR.name, INSTRUMENTOR)
