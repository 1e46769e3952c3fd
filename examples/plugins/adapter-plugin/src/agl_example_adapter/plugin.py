"""The plugin module named by the ``agentlightning`` entry point: registers the adapter by name.

Registering a ``LazyObject`` keeps loading the plugin cheap: the adapter module is imported the first
time someone asks for ``"span-counts"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentlightning import hookimpl
from agentlightning.plugins import LazyObject


@hookimpl
def agl_register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("span-counts", LazyObject("agl_example_adapter.adapter:SpanCounts"))
