"""The plugin module (entry point ``agentlightning``): the ``agl export`` command (prompts and resources
of a past run). The APO algorithm is the ``apo`` entry point of ``agentlightning.algorithms``."""

from __future__ import annotations

from collections.abc import Callable

from agentlightning import hookimpl
from agentlightning.hookspecs import AddCommand
from agentlightning.plugins import LazyObject

__all__ = ["agl_register_commands"]


@hookimpl
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    register("export", LazyObject("agentlightning_apo.export:add_parser"))
