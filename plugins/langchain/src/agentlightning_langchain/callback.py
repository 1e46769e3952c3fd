"""The LangChain callback handler that turns runs into OpenTelemetry spans.

Imports ``langchain_core``: only :mod:`agentlightning_langchain.instrumentor` imports this module, and only
once the framework is known to be installed.

Which runs become spans:

* the root run (a graph, an agent, a chain called directly): ``invoke_agent <name>``;
* with ``node_spans=True``, every LangGraph node: ``invoke_agent <node>``. Either way every span
  under a node carries the node as ``gen_ai.agent.name`` (so ``agent_match`` can select nodes) and
  ``agentlightning.step.name``, and the superstep as ``agentlightning.step.index``;
* every chat model / LLM call: ``chat <model>`` / ``text_completion <model>`` with the request, the
  response, usage and the provider's response id (the key that joins the LLM proxy's span of the
  same call, which holds the token ids);
* every tool call: ``execute_tool <tool>`` with arguments, result or error.

Other runs (sequences, lambdas, LangGraph's internal writers) are transparent: their children hang
from the nearest recorded ancestor. Spans are parented explicitly from LangChain's run ids, so they
nest correctly across threads, and are attributed to the rollout by the tracer's context variable
when they start.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, convert_to_openai_messages
from langchain_core.outputs import LLMResult
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.tracer import span_tracer
from agentlightning.utils.otel import payload_json as _dumps
from agentlightning.utils.otel import to_jsonable

__all__ = ["FRAMEWORK_NAME", "LightningCallbackHandler"]

logger = logging.getLogger(__name__)

FRAMEWORK_NAME = "langchain"
TRACER_NAME = "agentlightning.langchain"
# LangGraph tags its internal runnables (channel writes, branches) with this tag.
_HIDDEN_TAG = "langsmith:hidden"
# LangGraph control flow travels as exceptions (interrupts, Command(graph=PARENT)); not errors.
_CONTROL_FLOW_ERRORS = frozenset({"GraphBubbleUp", "GraphInterrupt", "NodeInterrupt", "ParentCommand"})
# Invocation parameters that describe LangChain's wrapper rather than the request.
_NOT_REQUEST_PARAMS = frozenset({"_type", "model_name", "stream", "messages", "prompt", "prompts"})


class _Run:
    """What a child run needs from its ancestors, and the span of this run if it has one."""

    __slots__ = (
        "_child_context",
        "agent_name",
        "parent_context",
        "requested_stream",
        "span",
        "step_index",
        "step_name",
        "stream_response_id",
        "streamed",
    )

    def __init__(
        self,
        span: Optional[trace_api.Span],
        parent_context: Optional[context_api.Context],
        agent_name: Optional[str],
        step_name: Optional[str],
        step_index: Optional[int],
    ) -> None:
        self.span = span
        self.parent_context = parent_context
        self.agent_name = agent_name
        self.step_name = step_name
        self.step_index = step_index
        self.requested_stream = False
        self.streamed = False
        self.stream_response_id: Optional[str] = None
        self._child_context: Optional[context_api.Context] = None

    def context_for_children(self) -> Optional[context_api.Context]:
        if self.span is None:  # a transparent run: its children hang from its nearest recorded ancestor
            return self.parent_context
        if self._child_context is None:  # built on demand: most LLM and tool runs have no children
            self._child_context = trace_api.set_span_in_context(self.span, self.parent_context)
        return self._child_context


def _run_name(serialized: Optional[Mapping[str, Any]], kwargs: Mapping[str, Any], fallback: str) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        serialized_name = serialized.get("name")
        if isinstance(serialized_name, str) and serialized_name:
            return serialized_name
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return fallback


def _openai_messages(messages: Sequence[BaseMessage]) -> Any:
    try:
        return convert_to_openai_messages(list(messages))
    except Exception:  # an exotic message type: keep what LangChain has rather than nothing
        return [to_jsonable(message) for message in messages]


def _is_control_flow(error: BaseException) -> bool:
    return any(klass.__name__ in _CONTROL_FLOW_ERRORS for klass in type(error).__mro__)


def _record_error(span: trace_api.Span, error: BaseException) -> None:
    description = f"{type(error).__name__}: {error}"
    span.set_attribute(GenAIAttributes.ERROR_TYPE, type(error).__qualname__)
    status_code = getattr(error, "status_code", None)
    if isinstance(status_code, int):
        span.set_attribute(LLMCallAttributes.HTTP_STATUS, status_code)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, description))


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class LightningCallbackHandler(BaseCallbackHandler):
    """Records LangChain / LangGraph runs as OpenTelemetry spans (see the module docstring).

    One instance serves every rollout of the process: runs are keyed by LangChain's unique run ids,
    and each span lands in the rollout whose trace context is current when it starts. Get it with
    :func:`agentlightning_langchain.handler` (the instance the global hook uses, so passing it in
    ``callbacks=[...]`` as well never records a call twice).
    """

    # Called in the caller's thread and task even for async runs: the rollout's context is visible.
    run_inline = True
    raise_error = False

    def __init__(self, framework_name: str = FRAMEWORK_NAME, *, node_spans: bool = False) -> None:
        super().__init__()
        self.framework_name = framework_name
        # Off by default: a span per LangGraph node costs as much as the LLM span itself, and LLM and
        # tool spans name their node anyway (as agent and step).
        self.node_spans = node_spans
        self._tracer = span_tracer(TRACER_NAME)
        # Single dict operations (get/set/pop) are atomic in CPython, so callbacks from LangGraph's
        # worker threads need no lock here.
        self._runs: Dict[UUID, _Run] = {}

    # -- bookkeeping -------------------------------------------------------------------------------

    def _parent(self, parent_run_id: Optional[UUID]) -> Optional[_Run]:
        return self._runs.get(parent_run_id) if parent_run_id is not None else None

    def _open(
        self,
        run_id: UUID,
        parent: Optional[_Run],
        span_name: str,
        attributes: Dict[str, Any],
        *,
        agent_name: Optional[str],
        step_name: Optional[str],
        step_index: Optional[int],
    ) -> _Run:
        attributes[FrameworkAttributes.FRAMEWORK] = self.framework_name
        attributes[FrameworkAttributes.RUN_ID] = str(run_id)
        if agent_name:
            attributes[GenAIAttributes.AGENT_NAME] = agent_name
        if step_name:
            attributes[FrameworkAttributes.STEP_NAME] = step_name
        if step_index is not None:
            attributes[FrameworkAttributes.STEP_INDEX] = step_index
        clean = {key: value for key, value in attributes.items() if value is not None}
        # Without a recorded parent the current context is used, so a root run nests under the
        # caller's own span (an agl.operation, for instance).
        parent_context = parent.context_for_children() if parent is not None else None
        span = self._tracer.start_span(span_name, context=parent_context, attributes=clean)
        run = _Run(span, parent_context, agent_name, step_name, step_index)
        self._runs[run_id] = run
        return run

    def _transparent(self, run_id: UUID, parent: Optional[_Run]) -> None:
        if parent is None:
            self._runs[run_id] = _Run(None, None, None, None, None)
        else:
            self._runs[run_id] = _Run(
                None, parent.context_for_children(), parent.agent_name, parent.step_name, parent.step_index
            )

    def _close(self, run_id: UUID) -> Optional[_Run]:
        return self._runs.pop(run_id, None)

    @property
    def open_runs(self) -> int:
        """Runs started and not yet ended (for tests and diagnostics)."""
        return len(self._runs)

    # -- chains, graphs and nodes ------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: Optional[Dict[str, Any]],
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        parent = self._parent(parent_run_id)
        name = _run_name(serialized, kwargs, "chain")
        metadata = metadata or {}
        node = metadata.get("langgraph_node")
        is_node = isinstance(node, str) and node == name
        is_root = parent is None
        if (tags and _HIDDEN_TAG in tags) or not (is_root or is_node):
            self._transparent(run_id, parent)
            return
        step_index = _int_or_none(metadata.get("langgraph_step")) if is_node else None
        if is_node and not is_root and not self.node_spans:
            # The node still names the agent and step of everything under it.
            self._runs[run_id] = _Run(None, parent.context_for_children() if parent else None, name, name, step_index)
            return
        self._open(
            run_id,
            parent,
            f"{GenAIOperationNames.INVOKE_AGENT} {name}",
            {GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT},
            agent_name=name,
            step_name=name if is_node else None,
            step_index=step_index,
        )

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._close(run_id)
        if run is not None and run.span is not None:
            run.span.end()

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._close(run_id)
        if run is None or run.span is None:
            return
        if not _is_control_flow(error):
            _record_error(run.span, error)
        run.span.end()

    # -- model calls -------------------------------------------------------------------------------

    def _open_llm(
        self,
        operation: str,
        run_id: UUID,
        parent_run_id: Optional[UUID],
        metadata: Optional[Dict[str, Any]],
        kwargs: Mapping[str, Any],
        request_body: Dict[str, Any],
    ) -> None:
        parent = self._parent(parent_run_id)
        metadata = metadata or {}
        params: Mapping[str, Any] = kwargs.get("invocation_params") or {}
        model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name") or ""
        request = {"model": model, **request_body}
        request.update({key: value for key, value in params.items() if key not in _NOT_REQUEST_PARAMS})
        attributes: Dict[str, Any] = {
            GenAIAttributes.OPERATION_NAME: operation,
            GenAIAttributes.REQUEST_MODEL: model or None,
            GenAIAttributes.PROVIDER_NAME: metadata.get("ls_provider"),
            GenAIAttributes.REQUEST_TEMPERATURE: params.get("temperature", metadata.get("ls_temperature")),
            GenAIAttributes.REQUEST_TOP_P: params.get("top_p"),
            GenAIAttributes.REQUEST_MAX_TOKENS: params.get("max_tokens", metadata.get("ls_max_tokens")),
            GenAIAttributes.REQUEST_SEED: params.get("seed"),
            LLMCallAttributes.REQUEST: _dumps(request),
        }
        # Sampling values must be numbers to be attributes; anything else stays in the request JSON.
        for key in (GenAIAttributes.REQUEST_TEMPERATURE, GenAIAttributes.REQUEST_TOP_P):
            if not isinstance(attributes[key], (int, float)):
                attributes[key] = None
        for key in (GenAIAttributes.REQUEST_MAX_TOKENS, GenAIAttributes.REQUEST_SEED):
            attributes[key] = _int_or_none(attributes[key])
        run = self._open(
            run_id,
            parent,
            f"{operation} {model}".strip(),
            attributes,
            agent_name=parent.agent_name if parent is not None else None,
            step_name=parent.step_name if parent is not None else None,
            step_index=parent.step_index if parent is not None else None,
        )
        run.requested_stream = bool(params.get("stream") or params.get("streaming"))

    def on_chat_model_start(
        self,
        serialized: Optional[Dict[str, Any]],
        messages: List[List[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        conversation = messages[0] if messages else []
        body = {"messages": _openai_messages(conversation)}
        self._open_llm(GenAIOperationNames.CHAT, run_id, parent_run_id, metadata, kwargs, body)

    def on_llm_start(
        self,
        serialized: Optional[Dict[str, Any]],
        prompts: List[str],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        # Chat models also call on_llm_start when a handler lacks on_chat_model_start; ours has it.
        if run_id in self._runs:
            return
        body: Dict[str, Any] = {"prompt": prompts[0] if len(prompts) == 1 else prompts}
        self._open_llm(GenAIOperationNames.TEXT_COMPLETION, run_id, parent_run_id, metadata, kwargs, body)

    def on_llm_new_token(
        self,
        token: Union[str, List[Union[str, Dict[str, Any]]]],
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        run.streamed = True
        if run.stream_response_id is None and chunk is not None:
            message = getattr(chunk, "message", None)
            response_metadata = getattr(message, "response_metadata", None) or {}
            candidate = response_metadata.get("id") or (getattr(chunk, "generation_info", None) or {}).get("id")
            if isinstance(candidate, str) and candidate:
                run.stream_response_id = candidate

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._close(run_id)
        if run is None or run.span is None:
            return
        span = run.span
        try:
            self._record_response(span, run, response)
        except Exception:  # a response we cannot read must still end its span
            logger.debug("could not read the LLM response of run %s", run_id, exc_info=True)
        span.end()

    def _record_response(self, span: trace_api.Span, run: _Run, response: LLMResult) -> None:
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        message = getattr(generation, "message", None)
        response_metadata: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
        generation_info: Mapping[str, Any] = getattr(generation, "generation_info", None) or {}
        llm_output: Mapping[str, Any] = response.llm_output or {}
        response_id = response_metadata.get("id") or llm_output.get("id") or run.stream_response_id
        model_name = response_metadata.get("model_name") or llm_output.get("model_name")
        finish_reason = response_metadata.get("finish_reason") or generation_info.get("finish_reason")
        input_tokens, output_tokens = self._usage(message, llm_output)
        if message is not None:
            converted = _openai_messages([message])
            output_message = converted[0] if isinstance(converted, list) and converted else converted
        else:
            output_message = {"role": "assistant", "content": getattr(generation, "text", None)}
        body: Dict[str, Any] = {
            "id": response_id,
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": output_message,
                    "finish_reason": finish_reason,
                    "logprobs": response_metadata.get("logprobs") or generation_info.get("logprobs"),
                }
            ],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
        }
        attributes: Dict[str, Any] = {
            GenAIAttributes.RESPONSE_ID: response_id if isinstance(response_id, str) else None,
            GenAIAttributes.RESPONSE_MODEL: model_name if isinstance(model_name, str) else None,
            GenAIAttributes.RESPONSE_FINISH_REASONS: [finish_reason] if isinstance(finish_reason, str) else None,
            GenAIAttributes.USAGE_INPUT_TOKENS: input_tokens,
            GenAIAttributes.USAGE_OUTPUT_TOKENS: output_tokens,
            LLMCallAttributes.RESPONSE: _dumps(body),
            LLMCallAttributes.STREAM: run.streamed or run.requested_stream,
        }
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})

    @staticmethod
    def _usage(message: Any, llm_output: Mapping[str, Any]) -> tuple[Optional[int], Optional[int]]:
        usage = getattr(message, "usage_metadata", None)
        if isinstance(usage, Mapping):
            return _int_or_none(usage.get("input_tokens")), _int_or_none(usage.get("output_tokens"))
        token_usage = llm_output.get("token_usage") or llm_output.get("usage")
        if isinstance(token_usage, Mapping):
            return _int_or_none(token_usage.get("prompt_tokens")), _int_or_none(token_usage.get("completion_tokens"))
        return None, None

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._close(run_id)
        if run is None or run.span is None:
            return
        run.span.set_attribute(LLMCallAttributes.STREAM, run.streamed or run.requested_stream)
        _record_error(run.span, error)
        run.span.end()

    # -- tools -------------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: Optional[Dict[str, Any]],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        inputs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        parent = self._parent(parent_run_id)
        name = _run_name(serialized, kwargs, "tool")
        tool_call_id = kwargs.get("tool_call_id")
        arguments = _dumps(inputs) if inputs is not None else input_str
        self._open(
            run_id,
            parent,
            f"{GenAIOperationNames.EXECUTE_TOOL} {name}",
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.EXECUTE_TOOL,
                GenAIAttributes.TOOL_NAME: name,
                GenAIAttributes.TOOL_CALL_ID: tool_call_id if isinstance(tool_call_id, str) else None,
                GenAIAttributes.TOOL_CALL_ARGUMENTS: arguments,
            },
            agent_name=parent.agent_name if parent is not None else None,
            step_name=parent.step_name if parent is not None else None,
            step_index=parent.step_index if parent is not None else None,
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._close(run_id)
        if run is None or run.span is None:
            return
        span = run.span
        content = getattr(output, "content", output)  # a ToolMessage, or the tool's raw return value
        span.set_attribute(GenAIAttributes.TOOL_CALL_RESULT, content if isinstance(content, str) else _dumps(content))
        tool_call_id = getattr(output, "tool_call_id", None)
        if isinstance(tool_call_id, str):
            span.set_attribute(GenAIAttributes.TOOL_CALL_ID, tool_call_id)
        if getattr(output, "status", None) == "error":
            # A tool error the framework turned into a message for the model.
            span.set_attribute(GenAIAttributes.ERROR_TYPE, "ToolError")
            span.set_status(Status(StatusCode.ERROR, content if isinstance(content, str) else "tool error"))
        span.end()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._close(run_id)
        if run is None or run.span is None:
            return
        tool_call_id = kwargs.get("tool_call_id")
        if isinstance(tool_call_id, str):
            run.span.set_attribute(GenAIAttributes.TOOL_CALL_ID, tool_call_id)
        if _is_control_flow(error):
            run.span.end()
            return
        _record_error(run.span, error)
        run.span.end()
