"""The top-level API: the 0.3 names are there, imported lazily, and the export table is accurate."""

from __future__ import annotations

import subprocess
import sys

import agentlightning as agl

# Names that 0.3 user code imports from the top level (reference §1), minus the removed v0.1 stack.
NAMES_FROM_0_3 = """
Adapter TraceAdapter OtelTraceAdapter TraceToTripletBase Algorithm algo FastAlgorithm Baseline APO
VERL reward operation emit_reward emit_annotation emit_message emit_object emit_exception
get_reward_value get_rewards_from_span is_reward_span find_reward_spans find_final_reward
get_message_value get_object_value LightningEnvVar resolve_bool_env_var resolve_int_env_var
resolve_str_env_var ExecutionStrategy SharedMemoryExecutionStrategy LitAgent rollout llm_rollout
prompt_rollout Runner LitAgentRunner LightningStore LightningStoreCapabilities
LightningStoreStatistics InMemoryLightningStore Tracer OtelTracer AgentOpsTracer DummyTracer
get_active_tracer set_active_tracer clear_active_tracer Trainer build_component Triplet
RolloutRawResult RolloutMode GenericResponse ParallelWorkerBase Dataset AttemptStatus RolloutStatus
RolloutConfig Rollout Attempt AttemptedRollout EnqueueRolloutRequest Hook Worker WorkerStatus
PaginatedResult FilterOptions SortOptions FilterField Resource LLM ProxyLLM PromptTemplate
ResourceUnion NamedResources ResourcesUpdate Span SpanCoreFields SpanRecordingContext SpanContext
TraceStatus Event Link OtelResource Attributes AttributeValue TraceState StatusCode SpanLike
SpanNames SpanAttributeNames setup_logging TracerTraceToTriplet LlmProxyTraceToTriplet TraceToMessages LLMProxy
""".split()  # noqa: SIM905 - a list of names reads best as words


def test_every_0_3_name_is_importable_from_the_top_level() -> None:
    missing = [name for name in NAMES_FROM_0_3 if not hasattr(agl, name)]
    assert missing == []


def test_star_import_exports_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from agentlightning import *", namespace)
    assert set(NAMES_FROM_0_3) <= set(namespace)
    assert namespace["Trainer"] is agl.Trainer


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        agl.DoesNotExist  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_is_lazy() -> None:
    code = (
        "import sys, agentlightning as agl; "
        "heavy = [m for m in ('agentlightning.tracer', 'agentlightning.store', 'agentlightning.trainer', "
        "'opentelemetry.sdk.trace') if m in sys.modules]; "
        "print(heavy); agl.Trainer; print('agentlightning.trainer' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
