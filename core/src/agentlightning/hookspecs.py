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
    """Register store backends by URI scheme.

    Call ``register(scheme, factory)`` where ``factory(uri) -> LightningStore`` builds a store from
    the full URI (for example ``register("sqlite", open_sqlite)``). A later registration of the same
    scheme replaces an earlier one, so a plugin can override a built-in backend.
    """


@hookspec
def agl_register_tracers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register tracer classes by name: ``register("otel", OtelTracer)``.

    ``Trainer(tracer="<name>")`` resolves the name through this hook.
    """


@hookspec
def agl_register_span_exporters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register OpenTelemetry span exporter factories by name.

    ``register(name, factory)`` where ``factory() -> opentelemetry.sdk.trace.export.SpanExporter``.
    The tracer attaches the exporters named in ``AGL_SPAN_EXPORTERS`` (comma separated) next to
    its store writer, so spans can also go to Jaeger, a file, etc.
    """


@hookspec
def agl_register_algorithms(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register algorithm classes by name: ``register("apo", APO)``.

    Prefer the ``agentlightning.algorithms`` entry point group for heavy algorithms: it is imported
    only when the name is asked for. This hook is for algorithms cheap to import.
    """


@hookspec
def agl_register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register trace adapter classes by name, used by ``Trainer(adapter="<name>")``."""


@hookspec
def agl_register_instrumentors(register: Callable[[str, Any], None]) -> None:
    """Register framework instrumentors: ``register(name, instrumentor)``.

    ``instrumentor`` has ``instrument()`` and ``uninstrument()`` (both idempotent); subclass
    :class:`agentlightning.instrumentation.Instrumentor`. Runners call ``instrument()`` on every
    registered instrumentor whose framework is installed when they start (zero-code enablement,
    :func:`agentlightning.instrumentation.auto_instrument`), and ``uninstrument()`` when they stop.
    ``AGL_DISABLE_INSTRUMENTORS=name1,name2`` skips some.
    """


@hookspec
def agl_register_serving_backends(register: Callable[[str, "ServingBackendFactory"], None]) -> None:
    """Register serving backends by name: ``register("vllm", start_vllm)``.

    ``factory(model, *, served_model_name=None, **options)`` starts a model server for ``model`` (a
    folder or hub id), waits until it answers and returns a
    :class:`~agentlightning.serving.ServingBackend`: its ``base_url`` for the proxy, ``load_weights``
    / ``load_lora`` for new weights, ``request_extras()`` for the proxy's token-id fields, ``close()``.
    Algorithms ask for one by name (``GRPO(serving="vllm")``).
    """


@hookspec
def agl_register_execution_strategies(register: Callable[[str, ExecutionStrategyFactory], None]) -> None:
    """Register execution strategies by name: ``register("ray", RayExecutionStrategy)``.

    ``Trainer(strategy="<name>")`` (or ``{"type": "<name>", ...}`` with options) builds it; the factory
    is called with the options given, plus ``n_runners`` when it accepts that keyword, and returns an
    :class:`~agentlightning.execution.ExecutionStrategy`. The core registers ``shm``, ``processes``
    and the 0.3 names; a plugin registering a taken name replaces it.
    """


@hookspec
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    """Register ``agl`` subcommands: ``register("serve-model", add_parser)``.

    ``add_parser(subparsers)`` adds one sub-parser called ``name`` to the ``agl`` parser and sets
    ``handler`` (``(argparse.Namespace) -> int``, the exit code) as its default; a handler raises
    :class:`agentlightning.cli.CLIError` for an expected failure. Keep the module light: heavy imports
    belong in the handler, so ``agl --help`` stays fast.
    """


@hookspec
def agl_register_server_routes(register: Callable[[str, Any], None]) -> None:
    """Register routes of the store server: ``register("dashboard", routes)``.

    ``routes`` is a :class:`~agentlightning.server.ServerRoutes` (or a ``LazyObject`` naming one):
    routers mounted under ``/v1/agl`` and at the root, and the paths served without the token. They are
    mounted once per process, when the first store server's app is built; routes that fail to load are
    left out with a warning.
    """


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
