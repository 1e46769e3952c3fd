"""The plugin shipped with agentlightning: registers the built-in components, each as a
:class:`~agentlightning.plugins.LazyObject` so that loading the plugin imports none of them.
(``baseline`` is the core's own ``agentlightning.algorithms`` entry point.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentlightning.hookspecs import AddCommand, ExecutionStrategyFactory, StoreFactory, hookimpl
from agentlightning.plugins import LazyObject

__all__ = [
    "agl_register_adapters",
    "agl_register_commands",
    "agl_register_execution_strategies",
    "agl_register_span_exporters",
    "agl_register_store_backends",
    "agl_register_tracers",
]


@hookimpl
def agl_register_store_backends(register: Callable[[str, StoreFactory], None]) -> None:
    register("memory", LazyObject("agentlightning.store.memory:InMemoryLightningStore.from_uri"))
    register("sqlite", LazyObject("agentlightning.store.sqlite:SqliteLightningStore.from_uri"))
    # A store server (`agl store serve`); https:// for one behind a TLS-terminating proxy.
    register("http", LazyObject("agentlightning.store.client:HttpLightningStore.from_uri"))
    register("https", LazyObject("agentlightning.store.client:HttpLightningStore.from_uri"))


@hookimpl
def agl_register_tracers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("otel", LazyObject("agentlightning.tracer.otel:OtelTracer"))
    register("dummy", LazyObject("agentlightning.tracer.dummy:DummyTracer"))


@hookimpl
def agl_register_span_exporters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    # Prints spans to stdout; ships with opentelemetry-sdk, a core dependency.
    register("console", LazyObject("opentelemetry.sdk.trace.export:ConsoleSpanExporter"))


@hookimpl
def agl_register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("triplets", LazyObject("agentlightning.adapter.triplet:TracerTraceToTriplet"))
    register("proxy-triplets", LazyObject("agentlightning.adapter.triplet:LlmProxyTraceToTriplet"))
    register("token-sequences", LazyObject("agentlightning.adapter.triplet:TraceToTokenSequences"))
    register("messages", LazyObject("agentlightning.adapter.triplet:TraceToMessages"))


@hookimpl
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    register("plugins", LazyObject("agentlightning.cli.plugins:add_parser"))
    register("proxy", LazyObject("agentlightning.cli.proxy:add_parser"))
    register("store", LazyObject("agentlightning.cli.store:add_parser"))


@hookimpl
def agl_register_execution_strategies(register: Callable[[str, ExecutionStrategyFactory], None]) -> None:
    in_process = LazyObject("agentlightning.execution.shared_memory:SharedMemoryExecutionStrategy")
    processes = LazyObject("agentlightning.execution.processes:ProcessesExecutionStrategy")
    register("shm", in_process)
    register("in-process", in_process)
    register("processes", processes)
    register("client-server", processes)
    register("cs", LazyObject("agentlightning.execution.client_server:ClientServerExecutionStrategy"))
