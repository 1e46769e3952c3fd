"""Agent Lightning: train any AI agent with RL, prompt optimization and fine-tuning.

``import agentlightning as agl`` gives the public API of the 0.3 line (minus the v0.1 stack).
Names are imported on first use (PEP 562), so ``import agentlightning`` and the ``agl`` CLI stay
fast and a plugin module can import ``agentlightning`` without pulling in the tracer or the store.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from .hookspecs import hookimpl

try:
    __version__ = version("agentlightning")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

# submodule -> the names it exports at the top level (tests check this against each __all__)
_EXPORTS: Dict[str, Tuple[str, ...]] = {
    "adapter": (
        "Adapter",
        "TraceAdapter",
        "OtelTraceAdapter",
        "TraceToTripletBase",
    ),
    "algorithm": (
        "Algorithm",
        "FastAlgorithm",
        "FunctionalAlgorithm",
        "Baseline",
        "algo",
        "APO",
        "VERL",
        "AlgorithmNotInstalledError",
        "algorithm_class",
    ),
    "emitter": (
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
        "OperationContext",
    ),
    "env_var": (
        "LightningEnvVar",
        "resolve_bool_env_var",
        "resolve_int_env_var",
        "resolve_str_env_var",
    ),
    "errors": (
        "AgentLightningError",
        "NotFoundError",
        "RolloutNotFoundError",
        "AttemptNotFoundError",
        "ResourcesNotFoundError",
        "InvalidStatusError",
        "InvalidTransitionError",
        "InvalidSpanError",
        "StoreClosedError",
        "UnknownStoreURIError",
        "ComponentResolutionError",
    ),
    "execution": (
        "ExecutionStrategy",
        "AlgorithmBundle",
        "RunnerBundle",
        "SharedMemoryExecutionStrategy",
    ),
    "litagent": (
        "LitAgent",
        "FunctionalLitAgent",
        "rollout",
        "llm_rollout",
        "prompt_rollout",
    ),
    "runner": (
        "Runner",
        "LitAgentRunner",
        "ExecutionEvent",
        "RolloutCancelled",
    ),
    "store": (
        "LightningStore",
        "LightningStoreCapabilities",
        "LightningStoreStatistics",
        "InMemoryLightningStore",
        "SqliteLightningStore",
        "StoreEngine",
        "StoreLockedError",
        "UNSET",
        "Unset",
        "is_finished",
        "is_queuing",
        "is_running",
        "open_store",
        "rollout_status_from_attempt",
    ),
    "tracer": (
        "Tracer",
        "OtelTracer",
        "AgentOpsTracer",
        "DummyTracer",
        "get_active_tracer",
        "set_active_tracer",
        "clear_active_tracer",
    ),
    "trainer": (
        "Trainer",
        "build_component",
    ),
    "types": (
        "Triplet",
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
        "ROLLOUT_STATUSES",
        "ATTEMPT_STATUSES",
        "TERMINAL_ROLLOUT_STATUSES",
        "QUEUING_ROLLOUT_STATUSES",
        "RUNNING_ROLLOUT_STATUSES",
        "TERMINAL_ATTEMPT_STATUSES",
        "Resource",
        "LLM",
        "ProxyLLM",
        "PromptTemplate",
        "ResourceUnion",
        "NamedResources",
        "ResourcesUpdate",
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
    ),
    "logging": (
        "setup_logging",
        "setup_module_logging",
    ),
    "plugins": (
        "PluginInfo",
        "list_plugins",
        "resolve_algorithm",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__: List[str] = ["hookimpl", "__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agentlightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"agentlightning.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from .adapter import *  # noqa: F403
    from .algorithm import *  # noqa: F403
    from .emitter import *  # noqa: F403
    from .env_var import *  # noqa: F403
    from .errors import *  # noqa: F403
    from .execution import *  # noqa: F403
    from .litagent import *  # noqa: F403
    from .logging import setup_logging, setup_module_logging  # noqa: F401
    from .plugins import PluginInfo, list_plugins, resolve_algorithm  # noqa: F401
    from .runner import *  # noqa: F403
    from .store import *  # noqa: F403
    from .tracer import *  # noqa: F403
    from .trainer import *  # noqa: F403
    from .types import *  # noqa: F403
