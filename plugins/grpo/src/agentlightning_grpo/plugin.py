"""The plugin module (entry point ``agentlightning``): the ``agl quickstart`` command.

The GRPO algorithm itself is the ``grpo`` entry point of ``agentlightning.algorithms``, imported
only when asked for; this module imports neither torch nor the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable

from agentlightning import hookimpl
from agentlightning.hookspecs import AddCommand
from agentlightning.plugins import LazyObject

__all__ = ["agl_register_commands"]


@hookimpl
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    register("quickstart", LazyObject("agentlightning_grpo.cli:add_parser"))
