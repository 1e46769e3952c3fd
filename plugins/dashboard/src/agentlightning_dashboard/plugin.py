"""The plugin module (entry point ``agentlightning``): the dashboard's routes and ``agl dashboard``.

Registrations are lazy: loading the plugin imports neither FastAPI nor the routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentlightning import hookimpl
from agentlightning.hookspecs import AddCommand
from agentlightning.plugins import LazyObject

__all__ = ["agl_register_commands", "agl_register_server_routes"]


@hookimpl
def agl_register_server_routes(register: Callable[[str, Any], None]) -> None:
    register("dashboard", LazyObject("agentlightning_dashboard.routes:ROUTES"))


@hookimpl
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    register("dashboard", LazyObject("agentlightning_dashboard.cli:add_parser"))
