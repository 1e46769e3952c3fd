"""The plugin module (entry point ``agentlightning``): registers the ``ray`` execution strategy.

Importing it imports neither Ray nor the strategy: ``Trainer(strategy="ray")`` loads them.
"""

from __future__ import annotations

from collections.abc import Callable

from agentlightning.hookspecs import ExecutionStrategyFactory, hookimpl
from agentlightning.plugins import LazyObject

__all__ = ["agl_register_execution_strategies"]


@hookimpl
def agl_register_execution_strategies(register: Callable[[str, ExecutionStrategyFactory], None]) -> None:
    register("ray", LazyObject("agentlightning_ray.strategy:RayExecutionStrategy"))
