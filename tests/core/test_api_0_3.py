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

import importlib
import inspect
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

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
    assert args.handler.__name__ == "run_legacy_serve"
    args = parser.parse_args(["store", "--log-level", "INFO", "--n-workers", "1", "--backend", "memory"])
    assert args.log_level == "info"
