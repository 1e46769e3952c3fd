"""Plugin hook specifications (every name starts with ``agl_``; ``docs/plugin-hooks.md`` documents each).

Registration hooks receive a ``register`` callback and call it once per thing they provide;
notification hooks are called once per event, never per span or token. Return values are ignored,
and an implementation's exception is logged and recorded, never propagated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import pluggy

if TYPE_CHECKING:
    import argparse

    from agentlightning.execution.base import ExecutionStrategy
    from agentlightning.serving import ServingBackendFactory
    from agentlightning.store.base import LightningStore
    from agentlightning.types import Attempt, Rollout

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME"]

PROJECT_NAME = "agentlightning"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

StoreFactory = Callable[[str], "LightningStore"]
AddCommand = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
ExecutionStrategyFactory = Callable[..., "ExecutionStrategy"]


@hookspec
def agl_register_store_backends(register: Callable[[str, StoreFactory], None]) -> None:
    """Register store backends by URI scheme: ``register("sqlite", factory)``, ``factory(uri) -> LightningStore``;
    a plugin's registration of a scheme replaces the built-in one."""


@hookspec
def agl_register_tracers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register tracer classes by name, used by ``Trainer(tracer="<name>")``."""


@hookspec
def agl_register_span_exporters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register span exporter factories by name (``factory() -> SpanExporter``): the tracer attaches the
    ones named in ``AGL_SPAN_EXPORTERS`` next to its store writer."""


@hookspec
def agl_register_algorithms(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register algorithm classes by name (cheap ones; the ``agentlightning.algorithms`` entry point group
    imports an algorithm only when its name is asked for)."""


@hookspec
def agl_register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register trace adapter classes by name, used by ``Trainer(adapter="<name>")``."""


@hookspec
def agl_register_instrumentors(register: Callable[[str, Any], None]) -> None:
    """Register framework instrumentors (:class:`~agentlightning.instrumentation.Instrumentor`):
    runners instrument every one whose framework is installed when they start, and undo it when they stop."""


@hookspec
def agl_register_serving_backends(register: Callable[[str, "ServingBackendFactory"], None]) -> None:
    """Register serving backends by name: ``factory(model, *, served_model_name=None, **options)`` starts
    a model server and returns a ready :class:`~agentlightning.serving.ServingBackend`."""


@hookspec
def agl_register_tokenizers(register: Callable[[str, Callable[[str], Any]], None]) -> None:
    """Register tokenizer loaders of the LLM proxy: ``factory(name_or_path)`` returns a
    :class:`~agentlightning.proxy.CallTokenizer`; ``ProxyBackend(tokenizer="<name or path>")`` and
    ``agl proxy --tokenizer`` use the one registered as ``huggingface``."""


@hookspec
def agl_register_execution_strategies(register: Callable[[str, ExecutionStrategyFactory], None]) -> None:
    """Register execution strategies by name: ``Trainer(strategy="<name>")`` calls the factory with the
    options given (plus ``n_runners`` when it accepts it)."""


@hookspec
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    """Register ``agl`` subcommands: ``add_parser(subparsers)`` adds the sub-parser ``name`` with a
    ``handler`` default; keep its module light (heavy imports in the handler)."""


@hookspec
def agl_register_server_routes(register: Callable[[str, Any], None]) -> None:
    """Register routes of the store server (a :class:`~agentlightning.server.ServerRoutes`), mounted when
    the first store server's app of the process is built."""


@hookspec
def agl_on_rollout_start(rollout: "Rollout", attempt: "Attempt", worker_id: Optional[str]) -> None:
    """Called once when a runner starts executing an attempt, before the agent runs."""


@hookspec
def agl_on_rollout_end(
    rollout: "Rollout", attempt: "Attempt", worker_id: Optional[str], status: str, error: Optional[BaseException]
) -> None:
    """Called once when a runner finishes an attempt, after the store knows its status.

    ``status`` is the attempt's final status; ``error`` the exception the agent raised, if any.
    """
