"""Conformance with the 0.3 API: every name and module path of the reference exists and behaves.

The names below were generated from the reference description of the 0.3 API
(``../shared/reference/agl-0.3-api.md``: section 1's export table, every ``Name(params)`` it writes,
section 2.1's store methods) by the parser in this file, and are checked in as data. Where the
reference file is present, ``test_the_checked_in_names_are_those_of_the_reference`` parses it again
and fails on any difference, so the data cannot drift from it.

Each name is checked for import (from its 0.3 module and from ``agentlightning``), signature (every
0.3 parameter name is a named parameter) and, in the behaviour tests further down, one behaviour.
A 0.3 name or parameter that is missing on purpose is listed in ``REMOVED_ON_PURPOSE``,
``FROM_PLUGINS`` or ``PARAMETER_DIFFERENCES`` with the reason; anything else missing fails.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple

import pytest

import agentlightning as agl
from agentlightning.store.base import LightningStore

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "agl-0.3-api.md"


def parse_exports(text: str) -> Dict[str, List[str]]:
    """Section 1's table: sub-module (``""`` for the extra top-level row) -> the names it exports."""
    section = text.split("## 1. Public API surface")[1].split("### 1.1")[0]
    exports: Dict[str, List[str]] = {}
    for line in section.splitlines():
        row = re.match(r"\| (`[\w.]+`|extra top-level) \| (.*) \|$", line)
        if row is None:
            continue
        module = "" if row.group(1) == "extra top-level" else row.group(1).strip("`")
        exported = re.sub(r"\(NOT exported:.*?\)", "", row.group(2))  # named there as not exported
        exports[module] = re.findall(r"`(\w+)`", exported)
    return exports


def _parameter_names(text: str) -> List[str]:
    depth, current, pieces = 0, "", []
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            pieces.append(current)
            current = ""
        else:
            current += char
    pieces.append(current)
    names = []
    for piece in (p.strip() for p in pieces):
        if not piece or piece.startswith("*") or piece in ("/", "..."):
            continue
        name = re.split(r"[:=\s|]", piece, maxsplit=1)[0]
        if re.fullmatch(r"[a-z_]\w*", name):
            names.append(name)
    return names


def parse_signatures(text: str, callables: Iterable[str]) -> Dict[str, List[str]]:
    """``Name(params)`` written anywhere in the reference, for the names given; the fullest wins."""
    wanted = set(callables)
    signatures: Dict[str, List[str]] = {}
    for match in re.finditer(r"`(\w+)(?:\[\w+\])?\(([^`]*?)\)(?: -> [^`]*)?`", text):
        name, parameters = match.group(1), _parameter_names(match.group(2))
        if name in wanted and len(parameters) > len(signatures.get(name, [])):
            signatures[name] = parameters
    return signatures


def parse_store_methods(text: str) -> List[str]:
    """The LightningStore methods section 2.1 lists with their parameters."""
    section = text.split("### 2.1")[1].split("### 2.2")[0]
    return sorted(set(re.findall(r"^- `(\w+)\(", section, re.MULTILINE)))


# -- the names, as generated from the reference by the functions above --------------------------------

EXPORTS_0_3: Dict[str, List[str]] = {
    "": [
        "AgentLightningClient",
        "DevTaskLoader",
        "AgentLightningServer",
        "configure_logger",
        "setup_logging",
        "setup_module_logging",
        "__version__",
    ],
    "adapter": [
        "Adapter",
        "TraceAdapter",
        "OtelTraceAdapter",
        "TraceToTripletBase",
        "TracerTraceToTriplet",
        "LlmProxyTraceToTriplet",
        "TraceToMessages",
    ],
    "algorithm": ["Algorithm", "algo", "FastAlgorithm", "Baseline", "APO", "VERL"],
    "config": ["lightning_cli"],
    "emitter": [
        "reward",
        "operation",
        "emit_reward",
        "emit_annotation",
        "emit_message",
        "emit_object",
        "emit_exception",
        "get_reward_value",
        "get_rewards_from_span",
        "is_reward_span",
        "find_reward_spans",
        "find_final_reward",
        "get_message_value",
        "get_object_value",
    ],
    "env_var": ["LightningEnvVar", "resolve_bool_env_var", "resolve_int_env_var", "resolve_str_env_var"],
    "execution": [
        "ExecutionStrategy",
        "SharedMemoryExecutionStrategy",
        "ClientServerExecutionStrategy",
        "ExecutionEvent",
        "ThreadingEvent",
        "MultiprocessingEvent",
    ],
    "litagent": ["LitAgent", "rollout", "llm_rollout", "prompt_rollout"],
    "llm_proxy": ["LLMProxy"],
    "runner": ["Runner", "LitAgentRunner", "LegacyAgentRunner"],
    "store": [
        "LightningStore",
        "LightningStoreCapabilities",
        "LightningStoreStatistics",
        "LightningStoreClient",
        "LightningStoreServer",
        "InMemoryLightningStore",
        "CollectionBasedLightningStore",
        "LightningStoreThreaded",
    ],
    "tracer": [
        "Tracer",
        "OtelTracer",
        "AgentOpsTracer",
        "DummyTracer",
        "get_active_tracer",
        "set_active_tracer",
        "clear_active_tracer",
    ],
    "trainer": ["Trainer", "build_component"],
    "types.core": [
        "Triplet",
        "Task",
        "TaskInput",
        "TaskIfAny",
        "RolloutLegacy",
        "RolloutRawResultLegacy",
        "RolloutRawResult",
        "RolloutMode",
        "GenericResponse",
        "ParallelWorkerBase",
        "Dataset",
        "AttemptStatus",
        "RolloutStatus",
        "RolloutConfig",
        "Rollout",
        "Attempt",
        "AttemptedRollout",
        "EnqueueRolloutRequest",
        "Hook",
        "Worker",
        "WorkerStatus",
        "PaginatedResult",
        "FilterOptions",
        "SortOptions",
        "FilterField",
    ],
    "types.resources": [
        "Resource",
        "LLM",
        "ProxyLLM",
        "PromptTemplate",
        "ResourceUnion",
        "NamedResources",
        "ResourcesUpdate",
    ],
    "types.tracer": [
        "Span",
        "SpanCoreFields",
        "SpanRecordingContext",
        "SpanContext",
        "TraceStatus",
        "Event",
        "Link",
        "OtelResource",
        "Attributes",
        "AttributeValue",
        "TraceState",
        "StatusCode",
        "SpanLike",
        "SpanNames",
        "SpanAttributeNames",
    ],
}
STORE_METHODS_0_3: List[str] = [
    "add_span",
    "dequeue_rollout",
    "enqueue_rollout",
    "get_next_span_sequence_id",
    "otlp_traces_endpoint",
    "query_attempts",
    "query_resources",
    "query_rollouts",
    "query_spans",
    "query_workers",
    "start_attempt",
    "start_rollout",
    "statistics",
    "update_attempt",
    "update_rollout",
    "wait_for_rollouts",
]
SIGNATURES_0_3: Dict[str, List[str]] = {
    "APO": [
        "async_openai_client",
        "gradient_model",
        "apply_edit_model",
        "diversity_temperature",
        "gradient_batch_size",
        "val_batch_size",
        "beam_width",
        "branch_factor",
        "beam_rounds",
        "rollout_batch_timeout",
        "run_initial_validation",
        "gradient_prompt_files",
        "apply_edit_prompt_files",
        "_poml_trace",
    ],
    "AgentOpsTracer": ["agentops_managed", "instrument_managed", "daemon"],
    "Attempt": [
        "rollout_id",
        "attempt_id",
        "sequence_id",
        "start_time",
        "end_time",
        "status",
        "worker_id",
        "last_heartbeat_time",
        "metadata",
    ],
    "Baseline": ["n_epochs", "train_split", "polling_interval", "max_queue_length", "span_verbosity"],
    "ClientServerExecutionStrategy": [
        "role",
        "server_host",
        "server_port",
        "n_runners",
        "graceful_timeout",
        "terminate_timeout",
        "main_process",
        "managed_store",
        "allowed_exit_codes",
    ],
    "CollectionBasedLightningStore": ["collections", "read_snapshot", "tracker", "scan_debounce_seconds"],
    "EnqueueRolloutRequest": ["input", "mode", "resources_id", "config", "metadata"],
    "FunctionalLitAgent": ["rollout_func", "strip_proxy"],
    "GenericResponse": ["status", "message", "data"],
    "InMemoryLightningStore": [
        "thread_safe",
        "eviction_memory_threshold",
        "safe_memory_threshold",
        "span_size_estimator",
        "tracker",
        "scan_debounce_seconds",
    ],
    "LLM": ["resource_type", "endpoint", "model", "api_key", "sampling_parameters"],
    "LLMProxy": [
        "port",
        "model_list",
        "store",
        "host",
        "litellm_config",
        "num_retries",
        "num_workers",
        "launch_mode",
        "launcher_args",
        "middlewares",
        "callbacks",
    ],
    "LightningStoreClient": [
        "server_address",
        "retry_delays",
        "health_retry_delays",
        "request_timeout",
        "connection_timeout",
    ],
    "LightningStoreServer": [
        "store",
        "host",
        "port",
        "cors_allow_origins",
        "launch_mode",
        "launcher_args",
        "n_workers",
        "tracker",
    ],
    "LightningStoreThreaded": ["store"],
    "LitAgent": ["trained_agents"],
    "LitAgentRunner": [
        "tracer",
        "max_rollouts",
        "poll_interval",
        "heartbeat_interval",
        "interval_jitter",
        "heartbeat_launch_mode",
        "heartbeat_include_gpu",
    ],
    "PaginatedResult": ["items", "limit", "offset", "total"],
    "PromptTemplate": ["resource_type", "template", "engine"],
    "ProxyLLM": ["resource_type"],
    "Resource": ["resource_type"],
    "ResourcesUpdate": ["resources_id", "create_time", "update_time", "version", "resources"],
    "Rollout": [
        "rollout_id",
        "input",
        "start_time",
        "end_time",
        "mode",
        "resources_id",
        "status",
        "config",
        "metadata",
    ],
    "RolloutConfig": ["timeout_seconds", "unresponsive_seconds", "max_attempts", "retry_condition"],
    "RolloutLegacy": ["rollout_id", "task", "final_reward", "triplets", "trace", "logs", "metadata"],
    "SharedMemoryExecutionStrategy": [
        "n_runners",
        "main_thread",
        "join_timeout",
        "graceful_delay",
        "poll_interval",
        "managed_store",
    ],
    "TaskIfAny": ["is_available", "task"],
    "TracerTraceToTriplet": [
        "repair_hierarchy",
        "llm_call_match",
        "agent_match",
        "exclude_llm_call_in_reward",
        "reward_match",
        "_skip_empty_token_spans",
    ],
    "Trainer": [
        "dev",
        "n_runners",
        "max_rollouts",
        "initial_resources",
        "tracer",
        "adapter",
        "store",
        "runner",
        "strategy",
        "port",
        "algorithm",
        "llm_proxy",
        "n_workers",
        "max_tasks",
        "daemon",
        "triplet_exporter",
        "hooks",
    ],
    "Triplet": ["prompt", "response", "reward", "metadata"],
    "VERL": ["config", "trainer_cls", "daemon_cls"],
    "Worker": [
        "worker_id",
        "status",
        "heartbeat_stats",
        "last_heartbeat_time",
        "last_dequeue_time",
        "last_busy_time",
        "last_idle_time",
        "current_rollout_id",
        "current_attempt_id",
    ],
    "add_span": ["span"],
    "build_component": [
        "spec",
        "expected_type",
        "spec_name",
        "default_factory",
        "allow_none",
        "optional_defaults",
        "dict_requires_type",
        "dict_default_cls",
        "registry",
    ],
    "dequeue_rollout": ["worker_id"],
    "emit_annotation": ["annotation", "propagate"],
    "emit_exception": ["exc", "attributes", "propagate"],
    "emit_message": ["message", "attributes", "propagate"],
    "emit_object": ["obj", "attributes", "propagate"],
    "emit_reward": ["reward", "primary_key", "attributes", "propagate"],
    "enqueue_rollout": ["input", "mode", "resources_id", "config", "metadata"],
    "find_final_reward": ["spans"],
    "get_message_value": ["span"],
    "get_next_span_sequence_id": ["rollout_id", "attempt_id"],
    "get_object_value": ["span"],
    "get_reward_value": ["span"],
    "get_rewards_from_span": ["span"],
    "query_attempts": ["rollout_id", "sort_by", "sort_order", "limit", "offset"],
    "query_resources": ["resources_id", "resources_id_contains", "sort_by", "sort_order", "limit", "offset"],
    "query_rollouts": [
        "status_in",
        "rollout_id_in",
        "rollout_id_contains",
        "filter_logic",
        "sort_by",
        "sort_order",
        "limit",
        "offset",
        "status",
        "rollout_ids",
    ],
    "query_spans": [
        "rollout_id",
        "attempt_id",
        "trace_id",
        "trace_id_contains",
        "span_id",
        "span_id_contains",
        "parent_id",
        "parent_id_contains",
        "name",
        "name_contains",
        "filter_logic",
        "limit",
        "offset",
        "sort_by",
        "sort_order",
    ],
    "query_workers": ["status_in", "worker_id_contains", "filter_logic", "sort_by", "sort_order", "limit", "offset"],
    "rollout": ["task", "resources", "rollout"],
    "start_attempt": ["rollout_id", "worker_id"],
    "start_rollout": ["input", "mode", "resources_id", "config", "metadata", "worker_id"],
    "update_attempt": ["rollout_id", "attempt_id", "status", "worker_id", "last_heartbeat_time", "metadata"],
    "update_rollout": ["rollout_id", "input", "mode", "resources_id", "status", "config", "metadata"],
    "wait_for_rollouts": ["rollout_ids", "timeout"],
}

# -- what differs on purpose ---------------------------------------------------------------------

REMOVED_ON_PURPOSE: Dict[str, str] = {
    # Reference section 11, item 2: the deprecated v0.1 client-server stack is not carried over.
    name: "the v0.1 stack (reference section 11.2)"
    for name in (
        "AgentLightningClient",
        "AgentLightningServer",
        "DevTaskLoader",
        "LegacyAgentRunner",
        "Task",
        "TaskInput",
        "TaskIfAny",
        "RolloutLegacy",
        "RolloutRawResultLegacy",
    )
}
FROM_PLUGINS = {"APO": "agentlightning-apo", "VERL": "agentlightning-verl"}
"""Algorithms that moved to plugin distributions; their parameters are the plugin's."""

PARAMETER_DIFFERENCES: Dict[Tuple[str, str], str] = {
    ("CollectionBasedLightningStore", "collections"): "no collection layer: it names StoreEngine, every backend's base",
    ("CollectionBasedLightningStore", "read_snapshot"): "no collection layer (see above)",
    ("CollectionBasedLightningStore", "tracker"): "no collection layer (see above)",
}
DEPRECATED_KEYWORDS: Dict[str, Dict[str, Any]] = {
    # Accepted with a DeprecationWarning and no effect (0.3 itself never used train_split, section 11.9).
    "Baseline": {"train_split": 0.5, "polling_interval": 1.0},
}
SIGNATURE_OWNERS = {"rollout": "agentlightning.litagent:LitAgent.rollout"}
"""The reference writes ``rollout(task, resources, rollout)`` for LitAgent's method of that name."""

ALL_EXPORTED = [(module, name) for module, names in EXPORTS_0_3.items() for name in names]


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def _signature_target(name: str) -> Any:
    if name in SIGNATURE_OWNERS:
        return _resolve(SIGNATURE_OWNERS[name])
    if name in STORE_METHODS_0_3:
        return getattr(LightningStore, name)
    return getattr(agl, name)


# -- names and signatures ------------------------------------------------------------------------


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the reference is not next to this checkout")
def test_the_checked_in_names_are_those_of_the_reference() -> None:
    text = REFERENCE.read_text()
    exports = parse_exports(text)
    store_methods = parse_store_methods(text)
    names = {name for exported in exports.values() for name in exported}
    extra = {"LightningStoreClient", "LightningStoreServer", "InMemoryLightningStore", "FunctionalLitAgent"}
    signatures = {k: v for k, v in parse_signatures(text, names | set(store_methods) | extra).items() if v}
    assert exports == EXPORTS_0_3
    assert store_methods == STORE_METHODS_0_3
    assert signatures == SIGNATURES_0_3


@pytest.mark.parametrize(("module", "name"), ALL_EXPORTED, ids=[f"{m or 'agl'}.{n}" for m, n in ALL_EXPORTED])
def test_every_0_3_name_imports_from_its_module_and_the_top_level(module: str, name: str) -> None:
    if name in REMOVED_ON_PURPOSE:
        with pytest.raises(AttributeError, match="v0.1 API, which is gone: "):
            getattr(agl, name)
        return
    if name in FROM_PLUGINS:
        from agentlightning.algorithm import AlgorithmNotInstalledError

        with pytest.raises(AlgorithmNotInstalledError, match=FROM_PLUGINS[name]):
            getattr(agl, name)(config={}) if name == "VERL" else getattr(agl, name)(None)
        return
    value = getattr(agl, name)
    if name == "reward" and inspect.ismodule(value):
        # Importing the deprecated module agentlightning.reward rebinds the package attribute to it
        # (as in 0.3); the module is callable as the decorator, so `@agl.reward` still works.
        assert callable(value)
        return
    if module:
        assert getattr(importlib.import_module(f"agentlightning.{module}"), name) is value


@pytest.mark.parametrize("name", sorted(SIGNATURES_0_3))
def test_every_0_3_parameter_name_is_accepted(name: str) -> None:
    if name in REMOVED_ON_PURPOSE or name in FROM_PLUGINS:
        pytest.skip(f"{name}: not in this package on purpose (see the name test)")
    parameters = inspect.signature(_signature_target(name)).parameters
    named = {p.name for p in parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    missing = [
        p
        for p in SIGNATURES_0_3[name]
        if p not in named and (name, p) not in PARAMETER_DIFFERENCES and p not in DEPRECATED_KEYWORDS.get(name, {})
    ]
    assert missing == [], f"{name} lacks the 0.3 parameters {missing}"


def test_deprecated_keywords_are_accepted_with_a_warning() -> None:
    for name, keywords in DEPRECATED_KEYWORDS.items():
        with pytest.warns(DeprecationWarning):
            getattr(agl, name)(**keywords)


# Module paths that the 0.3 examples import from (besides section 1's modules).
MODULE_PATHS_0_3 = {
    "agentlightning.utils.otel": [
        "get_tracer_provider",
        "get_tracer",
        "full_qualified_name",
        "make_tag_attributes",
        "extract_tags_from_attributes",
        "make_link_attributes",
        "extract_links_from_attributes",
        "query_linked_spans",
        "filter_attributes",
        "filter_and_unflatten_attributes",
        "flatten_attributes",
        "unflatten_attributes",
        "sanitize_attribute_value",
        "sanitize_attributes",
        "format_exception_attributes",
    ],
    "agentlightning.semconv": [
        "AGL_ANNOTATION",
        "AGL_MESSAGE",
        "AGL_OBJECT",
        "AGL_EXCEPTION",
        "AGL_OPERATION",
        "AGL_REWARD",
        "AGL_VIRTUAL",
        "LightningResourceAttributes",
        "LightningSpanAttributes",
        "RewardAttributes",
        "LinkAttributes",
        "RewardPydanticModel",
        "LinkPydanticModel",
    ],
    "agentlightning.llm_proxy": ["LLMProxy", "ModelConfig"],
    "agentlightning.store": [
        "LightningStore",
        "LightningStoreClient",
        "LightningStoreServer",
        "InMemoryLightningStore",
    ],
    "agentlightning.tracer": ["AgentOpsTracer", "OtelTracer", "DummyTracer", "Tracer"],
    "agentlightning.tracer.agentops": ["AgentOpsTracer"],
    "agentlightning.reward": ["reward", "find_final_reward"],
    "agentlightning.env_var": ["LightningEnvVar", "resolve_bool_env_var", "resolve_str_env_var", "resolve_int_env_var"],
    "agentlightning.litagent": ["LitAgent", "rollout"],
    "agentlightning.runner": ["LitAgentRunner", "Runner"],
    "agentlightning.types": ["Dataset", "Hook", "PromptTemplate", "Rollout", "LLM", "NamedResources", "Span"],
    "agentlightning.adapter": ["TraceToMessages", "LlmProxyTraceToTriplet", "TraceToTripletBase"],
    "agentlightning.algorithm": ["algo", "Algorithm"],
    "agentlightning.logging": ["setup_logging", "configure_logger"],
    "agentlightning.config": ["lightning_cli"],
    "agentlightning.utils.metrics": [
        "MetricsBackend",
        "ConsoleMetricsBackend",
        "PrometheusMetricsBackend",
        "MultiMetricsBackend",
    ],
}


@pytest.mark.parametrize("module", sorted(MODULE_PATHS_0_3))
def test_module_paths_of_0_3_code_import(module: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # agentlightning.reward warns on import, as in 0.3
        imported = importlib.import_module(module)
    missing = [name for name in MODULE_PATHS_0_3[module] if not hasattr(imported, name)]
    assert missing == []


def test_the_0_3_cli_forms_parse() -> None:
    from agentlightning.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["store", "--host", "127.0.0.1", "--port", "4800", "--cors-origin", "http://a"])
    assert (args.port, args.host, args.cors_origin) == (4800, "127.0.0.1", ["http://a"])
    assert args.handler.__name__ == "serve_or_help"
    args = parser.parse_args(["store", "--log-level", "INFO", "--n-workers", "1", "--backend", "memory"])
    assert args.log_level == "info"


# -- one behaviour per name ----------------------------------------------------------------------
# Each behaviour test below names the 0.3 names it exercises in COVERS; the last test checks that
# every exported name is covered, or is a type (alias, protocol, TypedDict, enum) with no behaviour.

COVERS: Dict[str, List[str]] = {}
TYPES_ONLY = {
    "RolloutRawResult", "RolloutMode", "Dataset", "AttemptStatus", "RolloutStatus", "WorkerStatus",
    "FilterOptions", "SortOptions", "FilterField", "ResourceUnion", "NamedResources", "Attributes",
    "AttributeValue", "TraceState", "StatusCode", "SpanLike", "LightningStoreCapabilities",
    "LightningStoreStatistics", "ExecutionEvent", "SpanRecordingContext", "__version__",
}  # fmt: skip


def covers(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(test: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            COVERS.setdefault(name, []).append(test.__name__)
        return test

    return register


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@covers("Triplet", "RolloutConfig", "Rollout", "Attempt", "AttemptedRollout", "EnqueueRolloutRequest", "Worker")
@covers("PaginatedResult", "GenericResponse")
def test_data_models_keep_their_0_3_fields_and_defaults() -> None:
    assert agl.Triplet(prompt={"token_ids": [1]}, response={"token_ids": [2]}).metadata == {}
    config = agl.RolloutConfig()
    assert (config.max_attempts, config.retry_condition, config.timeout_seconds) == (1, [], None)  # no retries
    with pytest.raises(ValueError):
        agl.RolloutConfig(max_attempts=0)
    rollout = agl.Rollout(rollout_id="ro-1", input={"q": 1}, start_time=1.0)
    assert (rollout.status, rollout.mode, rollout.config) == ("queuing", None, agl.RolloutConfig())
    attempt = agl.Attempt(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, start_time=1.0)
    assert attempt.status == "preparing"
    attempted = agl.AttemptedRollout(**rollout.model_dump(), attempt=attempt)
    assert attempted.attempt.attempt_id == "at-1"
    with pytest.raises(ValueError):
        agl.AttemptedRollout(**rollout.model_dump(), attempt=attempt.model_copy(update={"rollout_id": "ro-2"}))
    assert agl.EnqueueRolloutRequest(input=1).mode is None
    assert agl.Worker(worker_id="w").status == "unknown"
    page = agl.PaginatedResult(items=[1, 2, 3], limit=-1, offset=0, total=3)
    assert (len(page), page[1], list(page)) == (3, 2, [1, 2, 3])
    assert agl.GenericResponse().status == "success"


@covers("Resource", "LLM", "ProxyLLM", "PromptTemplate", "ResourcesUpdate")
def test_resources_behave_as_in_0_3() -> None:
    llm = agl.LLM(endpoint="http://h/v1", model="m")
    assert llm.resource_type == "llm" and llm.get_base_url() == "http://h/v1" and llm.sampling_parameters == {}
    proxy = agl.ProxyLLM(endpoint="http://h/v1/", model="m")
    assert proxy.get_base_url("ro-1", "at-1") == "http://h/rollout/ro-1/attempt/at-1/v1"
    assert proxy.get_base_url() == "http://h/v1/"
    with pytest.raises(ValueError):
        proxy.get_base_url("ro-1", None)
    template = agl.PromptTemplate(template="Hi {name}", engine="f-string")
    assert template.format(name="Ada") == "Hi Ada"
    assert isinstance(template, agl.Resource)
    update = agl.ResourcesUpdate(
        resources_id="rs-1", create_time=1.0, update_time=1.0, version=1, resources={"p": template}
    )
    assert update.resources["p"] == template


@covers("Span", "SpanCoreFields", "SpanContext", "TraceStatus", "Event", "Link", "OtelResource", "SpanNames")
@covers("SpanAttributeNames")
def test_span_types() -> None:
    span = agl.Span.from_attributes(rollout_id="ro", attempt_id="at", sequence_id=1, attributes={"k": "v"})
    assert span.attributes == {"k": "v"} and span.name == "agentlightning.virtual" and span.status.status_code == "OK"
    assert agl.Span.model_validate_json(span.model_dump_json()) == span
    assert isinstance(span.context, agl.SpanContext) and isinstance(span.resource, agl.OtelResource)
    assert agl.TraceStatus(status_code="ERROR").status_code == "ERROR"
    assert agl.Event(name="e", attributes={}, timestamp=1.0).name == "e"
    assert agl.Link(context=span.context, attributes=None).context == span.context
    assert agl.SpanCoreFields(name="n", attributes={}).name == "n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert agl.SpanNames.REWARD.value == "agentlightning.reward"
        assert agl.SpanAttributeNames.MESSAGE.value == "message"


@covers("emit_reward", "get_reward_value", "get_rewards_from_span", "is_reward_span", "find_reward_spans")
@covers("find_final_reward", "emit_annotation", "emit_message", "get_message_value", "emit_object")
@covers("get_object_value", "emit_exception", "operation", "reward", "DummyTracer")
def test_emitters_without_a_tracer_return_the_span_fields() -> None:
    fields = agl.emit_reward({"acc": 1, "eff": 0.5}, primary_key="acc", propagate=False)
    assert fields.attributes["agentlightning.reward.0.name"] == "acc"
    assert fields.attributes["agentlightning.reward.1.value"] == 0.5
    span = agl.Span.from_core_fields(fields, rollout_id="ro", attempt_id="at", sequence_id=1)
    assert agl.is_reward_span(span) and agl.get_reward_value(span) == 1.0
    assert [r.name for r in agl.get_rewards_from_span(span)] == ["acc", "eff"]
    other = agl.Span.from_attributes(rollout_id="ro", attempt_id="at", sequence_id=2, attributes={})
    assert agl.find_reward_spans([span, other]) == [span] and agl.find_final_reward([span, other]) == 1.0
    annotation = agl.emit_annotation({"a": {"b": 1}}, propagate=False)
    assert annotation.attributes["a.b"] == 1 and annotation.name == "agentlightning.annotation"
    with pytest.raises(RuntimeError):
        agl.emit_reward(1.0)  # propagate=True needs an active tracer, as in 0.3
    tracer = agl.DummyTracer()
    message = tracer.create_span("agentlightning.message", attributes={"agentlightning.message.body": "hi"})
    assert (
        agl.get_message_value(agl.Span.from_core_fields(message, rollout_id="r", attempt_id="a", sequence_id=1)) == "hi"
    )
    obj = agl.emit_object({"x": [1, 2]}, propagate=False)
    assert agl.get_object_value(agl.Span.from_core_fields(obj, rollout_id="r", attempt_id="a", sequence_id=1)) == {
        "x": [1, 2]
    }
    error = agl.emit_exception(ValueError("bad"), propagate=False)
    assert error.attributes["exception.type"] == "ValueError" and error.status.status_code == "ERROR"  # 0.3: OK
    agl.emit_message("hello", propagate=False)  # returns nothing, as in 0.3

    @agl.operation
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(RuntimeError, match="active tracer"):
        add(1, 2)  # as every emitter with propagate=True, it needs an active tracer
    with pytest.warns(DeprecationWarning):

        @agl.reward
        def score() -> float:
            return 0.5

    tracer = agl.OtelTracer()
    store = agl.InMemoryLightningStore()

    async def traced() -> List[Any]:
        rollout = await store.start_rollout(input=None)
        with tracer.lifespan(store):
            async with tracer.trace_context(rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id):
                assert add(1, 2) == 3
                assert score() == 0.5
        return list(await store.query_spans(rollout.rollout_id))

    spans = run(traced())
    operation_span = next(s for s in spans if s.name == "agentlightning.operation")
    assert operation_span.attributes["agentlightning.operation.input.a"] == 1
    assert operation_span.attributes["agentlightning.operation.output"] == 3
    assert agl.find_final_reward(spans) == 0.5


@covers("LightningEnvVar", "resolve_bool_env_var", "resolve_int_env_var", "resolve_str_env_var")
def test_env_var_resolvers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGL_MANAGED_STORE", "off")
    monkeypatch.setenv("AGL_SERVER_PORT", "4800")
    assert agl.resolve_bool_env_var(agl.LightningEnvVar.AGL_MANAGED_STORE, fallback=True) is False
    assert agl.resolve_int_env_var(agl.LightningEnvVar.AGL_SERVER_PORT) == 4800
    assert agl.resolve_str_env_var(agl.LightningEnvVar.AGL_CURRENT_ROLE, fallback="both") == "both"
    assert agl.resolve_bool_env_var(agl.LightningEnvVar.AGL_MANAGED_STORE, override=True) is True
    monkeypatch.setenv("AGL_MANAGED_STORE", "maybe")
    with pytest.raises(ValueError):
        agl.resolve_bool_env_var(agl.LightningEnvVar.AGL_MANAGED_STORE)


@agl.rollout
def _echo_reward(task: float, prompt_template: agl.PromptTemplate) -> float:
    return float(task)


@covers("LitAgent", "rollout", "llm_rollout", "prompt_rollout", "Runner", "LitAgentRunner", "Hook")
@covers("ParallelWorkerBase", "Tracer", "OtelTracer", "get_active_tracer", "set_active_tracer")
@covers("clear_active_tracer")
def test_runner_steps_an_agent_with_hooks() -> None:
    seen: List[str] = []

    class Recorder(agl.Hook):
        async def on_rollout_start(self, *, agent: Any, runner: Any, rollout: Any) -> None:
            seen.append("start")

        async def on_trace_start(self, *, agent: Any, runner: Any, tracer: Any, rollout: Any) -> None:
            seen.append("active" if agl.get_active_tracer() is tracer else "inactive")

        async def on_rollout_end(self, *, agent: Any, runner: Any, rollout: Any, spans: Any) -> None:
            seen.append("end")

    @agl.llm_rollout
    def uses_llm(task: str, llm: agl.LLM) -> float:
        return 1.0

    @agl.prompt_rollout
    def uses_prompt(task: str, prompt_template: agl.PromptTemplate) -> float:
        return 1.0

    assert isinstance(uses_llm, agl.LitAgent) and isinstance(uses_prompt, agl.LitAgent)
    assert isinstance(agl.LitAgentRunner(agl.OtelTracer()), agl.Runner)
    assert isinstance(agl.OtelTracer(), (agl.Tracer, agl.ParallelWorkerBase))
    store = agl.InMemoryLightningStore()
    runner = agl.LitAgentRunner[float](agl.OtelTracer())
    template = agl.PromptTemplate(template="{x}", engine="f-string")

    async def go() -> Any:
        with runner.run_context(agent=_echo_reward, store=store, hooks=[Recorder()]):
            return await runner.step(0.75, resources={"p": template})

    result = run(go())
    assert result.status == "succeeded" and seen == ["start", "active", "end"]
    assert agl.find_final_reward(run(store.query_spans(result.rollout_id))) == 0.75
    assert agl.get_active_tracer() is None
    tracer = agl.OtelTracer()
    agl.set_active_tracer(tracer)
    try:
        assert agl.get_active_tracer() is tracer
    finally:
        agl.clear_active_tracer()


@covers("Algorithm", "algo", "FastAlgorithm", "Baseline", "Trainer", "SharedMemoryExecutionStrategy")
@covers("ExecutionStrategy", "TraceAdapter", "Adapter", "TraceToTripletBase", "TracerTraceToTriplet")
def test_trainer_runs_an_algo_function_on_its_store() -> None:
    seen: Dict[str, Any] = {}

    @agl.algo
    async def one_task(*, store: agl.LightningStore, train_dataset: Any, initial_resources: Any) -> None:
        await store.add_resources(initial_resources)  # an @algo function gets what it declares
        rollout = await store.enqueue_rollout(input=train_dataset[0], mode="train")
        while not await store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=0.05):
            pass
        seen["reward"] = agl.find_final_reward(await store.query_spans(rollout.rollout_id))

    assert isinstance(one_task, agl.Algorithm) and issubclass(agl.Baseline, agl.FastAlgorithm)
    template = agl.PromptTemplate(template="{x}", engine="f-string")
    trainer = agl.Trainer(
        algorithm=one_task, store="memory://", strategy="shm", n_runners=1, initial_resources={"p": template}
    )
    assert isinstance(trainer.strategy, (agl.SharedMemoryExecutionStrategy, agl.ExecutionStrategy))
    trainer.fit(_echo_reward, [0.25])
    assert seen["reward"] == 0.25
    model = {"model_name": "m", "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://127.0.0.1:9/v1"}}
    with_proxy = agl.Trainer(
        algorithm=one_task, store="memory://", llm_proxy={"model_list": [model]}, initial_resources={"p": template}
    )
    assert isinstance(with_proxy.llm_proxy, agl.LLMProxy) and with_proxy.llm_proxy.store is None
    with_proxy.fit(_echo_reward, [0.5])
    assert seen["reward"] == 0.5
    assert with_proxy.llm_proxy.store is with_proxy.store  # the proxy writes to the run's store
    adapter = agl.TracerTraceToTriplet()
    assert isinstance(adapter, agl.TraceAdapter) and isinstance(adapter, agl.Adapter)
    assert adapter.adapt([]) == [] and issubclass(agl.TracerTraceToTriplet, agl.TraceToTripletBase)


@covers("LlmProxyTraceToTriplet", "TraceToMessages", "OtelTraceAdapter")
def test_other_adapters_take_spans() -> None:
    assert agl.LlmProxyTraceToTriplet().adapt([]) == []
    assert agl.TraceToMessages().adapt([]) == []
    assert issubclass(agl.OtelTraceAdapter, agl.Adapter)


@covers("build_component")
def test_build_component_spec_forms() -> None:
    store = agl.build_component("agentlightning.store:InMemoryLightningStore", LightningStore, "store")
    assert isinstance(store, agl.InMemoryLightningStore)
    built = agl.build_component({"type": agl.InMemoryLightningStore}, LightningStore, "store")
    assert isinstance(built, agl.InMemoryLightningStore)
    with pytest.raises(Exception, match="type"):
        agl.build_component(
            {}, LightningStore, "store", dict_default_cls=agl.InMemoryLightningStore, dict_requires_type=True
        )
    assert agl.build_component(None, LightningStore, "store", allow_none=True) is None


@covers("LightningStore", "InMemoryLightningStore", "CollectionBasedLightningStore", "LightningStoreThreaded")
@covers("LightningStoreServer", "LightningStoreClient")
def test_stores_wrap_serve_and_reach_each_other() -> None:
    async def go() -> None:
        store = agl.InMemoryLightningStore(thread_safe=True)
        assert isinstance(store, (agl.CollectionBasedLightningStore, agl.LightningStore))
        threaded = agl.LightningStoreThreaded(store)
        assert threaded.capabilities["thread_safe"]
        server = agl.LightningStoreServer(store, "127.0.0.1", 0)
        await server.start()
        try:
            client = agl.LightningStoreClient(server.endpoint)
            rollout = await client.enqueue_rollout(input={"q": 1})
            assert (await threaded.get_rollout_by_id(rollout.rollout_id)) is not None
            assert (await server.dequeue_rollout()).rollout_id == rollout.rollout_id  # type: ignore[union-attr]
            assert server.otlp_traces_endpoint() == f"{server.endpoint}/v1/traces"
            await client.close()
        finally:
            await server.stop()

    run(go())


@covers("AgentOpsTracer")
def test_agentops_tracer_is_a_deprecated_otel_tracer() -> None:
    with pytest.warns(DeprecationWarning, match="AgentOps"):
        tracer = agl.AgentOpsTracer(agentops_managed=True, instrument_managed=True, daemon=True)
    assert isinstance(tracer, agl.OtelTracer)


@covers("ClientServerExecutionStrategy", "ThreadingEvent", "MultiprocessingEvent")
def test_client_server_roles_talk_over_http() -> None:
    for event in (agl.ThreadingEvent(), agl.MultiprocessingEvent()):
        assert not event.is_set()
        event.set()
        assert event.is_set() and event.wait(0.01)
    store = agl.InMemoryLightningStore()
    algorithm_side = agl.ClientServerExecutionStrategy(role="algorithm", server_port=0)
    outcome: Dict[str, Any] = {}

    async def algorithm(store: agl.LightningStore, event: Any) -> None:
        rollout = await store.enqueue_rollout(input=0.5, mode="train")
        ready.set()
        while not await store.wait_for_rollouts(rollout_ids=[rollout.rollout_id], timeout=0.05):
            pass
        outcome["status"] = (await store.get_rollout_by_id(rollout.rollout_id)).status  # type: ignore[union-attr]

    async def runner(client: agl.LightningStore, worker_id: int, event: Any) -> None:
        attempted = None
        while attempted is None:
            attempted = await client.dequeue_rollout(worker_id="remote")
        await client.update_attempt(attempted.rollout_id, attempted.attempt.attempt_id, status="succeeded")

    ready = threading.Event()
    thread = threading.Thread(target=algorithm_side.execute, args=(algorithm, None, store))
    thread.start()
    assert ready.wait(30)
    assert algorithm_side.port != 0  # the port actually bound
    agl.ClientServerExecutionStrategy(role="runner", server_port=algorithm_side.port).execute(None, runner, None)  # type: ignore[arg-type]
    thread.join(30)
    assert outcome["status"] == "succeeded"


@covers("LLMProxy")
def test_llm_proxy_takes_a_0_3_model_list() -> None:
    from agentlightning.llm_proxy import ModelConfig

    entry: ModelConfig = {"model_name": "m", "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://h:1/v1"}}
    proxy = agl.LLMProxy(port=0, model_list=[entry], store=agl.InMemoryLightningStore())
    (backend,) = proxy.backends
    assert (backend.base_url, backend.request_extras, backend.upstream_model) == (
        "http://h:1/v1",
        {"return_token_ids": True},
        "m",
    )
    proxy.update_model_list([{"model_name": "g", "litellm_params": {"model": "openai/gpt-x"}}])
    assert [b.models for b in proxy.backends] == [["g"]] and not proxy.is_running()
    with pytest.raises(ValueError, match="OpenAI-compatible"):
        proxy.update_model_list([{"model_name": "c", "litellm_params": {"model": "anthropic/claude"}}])


@covers("lightning_cli")
def test_lightning_cli_builds_objects_from_options() -> None:
    class Settings:
        def __init__(self, rate: float, steps: int = 2, name: str = "x") -> None:
            self.rate, self.steps, self.name = rate, steps, name

    settings = agl.lightning_cli(Settings, argv=["--settings.rate", "0.5", "--settings.steps", "4"])
    assert (settings.rate, settings.steps, settings.name) == (0.5, 4, "x")


@covers("setup_logging", "setup_module_logging", "configure_logger")
def test_logging_setup_forms(restore_logging: None) -> None:
    import logging

    agl.setup_logging("DEBUG", apply_to=["agl-test-app"])
    app = logging.getLogger("agl-test-app")
    assert app.level == logging.DEBUG and len(app.handlers) == 1
    agl.setup_logging("INFO", apply_to=["agl-test-app"])  # a second call replaces, never doubles, the output
    assert app.level == logging.INFO and len(app.handlers) == 1
    assert agl.setup_module_logging("WARNING", name="agl-test-module").level == logging.WARNING
    with pytest.warns(DeprecationWarning):
        assert agl.configure_logger(logging.INFO, name="agl-test-old").level == logging.INFO


def test_semconv_keys_are_str_enums_with_value() -> None:
    from agentlightning.semconv import LightningResourceAttributes, LightningSpanAttributes, RewardAttributes

    assert LightningSpanAttributes.REWARD.value == "agentlightning.reward" == LightningSpanAttributes.REWARD
    assert f"{LightningSpanAttributes.TAG}.0" == "agentlightning.tag.0"
    assert {"agentlightning.rollout_id": 1}[LightningResourceAttributes.ROLLOUT_ID] == 1
    assert json.dumps({RewardAttributes.VALUE: 1}) == '{"value": 1}'


def test_every_exported_name_has_a_behaviour_test() -> None:
    uncovered = [
        name
        for _, name in ALL_EXPORTED
        if name not in COVERS and name not in TYPES_ONLY and name not in REMOVED_ON_PURPOSE and name not in FROM_PLUGINS
    ]
    assert uncovered == []
    assert all(name in globals() for tests in COVERS.values() for name in tests)
