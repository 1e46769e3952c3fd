"""The Agents SDK tracing processor that turns the SDK's spans into OpenTelemetry spans of the running rollout.

Imports ``agents``: only :mod:`agentlightning_openai_agents.instrumentor` imports this module, and only
once the framework is known to be installed.

Which SDK spans become spans:

* ``agent``: ``invoke_agent <agent>`` (``gen_ai.agent.name``);
* ``generation`` (a chat-completions model) and ``response`` (a Responses API model):
  ``chat <model>`` with the request, the response, usage and the provider's response id (the key that
  joins the LLM proxy's span of the same call, which holds the token ids);
* ``function``: ``execute_tool <tool>`` with arguments, result, call id or error;
* ``handoff``: ``handoff <from> -> <to>``; ``guardrail``: ``guardrail <name>`` (and whether it tripped).

Other spans (the task, turns, custom spans) are transparent: their children hang from the nearest
recorded ancestor. A turn names the step of the spans under it (``agentlightning.step.name`` is the
agent, ``agentlightning.step.index`` the turn number), and every span under an agent carries that
agent's name, so ``agent_match`` selects agents, handoffs included.

What the SDK's span data lacks comes from the wrappers in :mod:`agentlightning_openai_agents.hooks`,
which the instrumentor installs around the SDK's model and tool calls: the Responses model's name and request, the raw chat
completion (its id, the body as the server sent it), the exception of a failed call, and the tool
call id. Spans are parented explicitly from the SDK's span ids and attributed to the rollout by the
tracer's context variable when they start; the SDK calls processors in the caller's task.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional

from agents.tracing import Span as SdkSpan
from agents.tracing import Trace, TracingProcessor, get_current_span
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode

from agentlightning.proxy.records import responses_finish_reasons
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.tracer import span_tracer
from agentlightning.utils.otel import payload_json as _dumps
from agentlightning.utils.otel import to_jsonable

__all__ = ["FRAMEWORK_NAME", "HANDOFF_FROM", "HANDOFF_TO", "GUARDRAIL_TRIGGERED", "LightningTracingProcessor"]

logger = logging.getLogger(__name__)

FRAMEWORK_NAME = "openai_agents"
TRACER_NAME = "agentlightning.openai_agents"
HANDOFF_FROM = "agentlightning.openai_agents.handoff.from_agent"
HANDOFF_TO = "agentlightning.openai_agents.handoff.to_agent"
GUARDRAIL_TRIGGERED = "agentlightning.openai_agents.guardrail.triggered"
# ModelSettings fields that are request parameters of the chat-completions wire format.
_CHAT_PARAMS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "tool_choice", "max_tokens")


class _Run:
    """One SDK span: the OpenTelemetry span it became (None when transparent) and what its children inherit."""

    __slots__ = (
        "_child_context",
        "agent_name",
        "exception",
        "kind",
        "model",
        "parent_context",
        "result",
        "request",
        "span",
        "step_index",
        "step_name",
        "stream",
        "tool_call_id",
    )

    def __init__(
        self,
        kind: str,
        span: Optional[trace_api.Span],
        parent_context: Optional[context_api.Context],
        agent_name: Optional[str],
        step_name: Optional[str],
        step_index: Optional[int],
    ) -> None:
        self.kind = kind
        self.span = span
        self.parent_context = parent_context
        self.agent_name = agent_name
        self.step_name = step_name
        self.step_index = step_index
        # Filled in by the hooks while the SDK span is open.
        self.model: Optional[str] = None
        self.request: Optional[Dict[str, Any]] = None
        self.stream = False
        self.result: Any = None  # the ChatCompletion / Response of a call that was not streamed
        self.exception: Optional[BaseException] = None
        self.tool_call_id: Optional[str] = None
        self._child_context: Optional[context_api.Context] = None

    def context_for_children(self) -> Optional[context_api.Context]:
        if self.span is None:
            return self.parent_context
        if self._child_context is None:  # built on demand: LLM and tool spans have no children
            self._child_context = trace_api.set_span_in_context(self.span, self.parent_context)
        return self._child_context


def _as_dict(value: Any) -> Optional[Dict[str, Any]]:
    """An OpenAI SDK object as the JSON the server sent (fields it did not send left out)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        try:
            result = to_dict(mode="json")
            return result if isinstance(result, dict) else None
        except Exception:  # an object that is not quite an OpenAI model
            pass
    converted = to_jsonable(value)
    return converted if isinstance(converted, dict) else None


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number_or_none(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _usage(usage: Any) -> tuple[Optional[int], Optional[int]]:
    usage = _as_dict(usage) or {}
    return (
        _int_or_none(usage.get("input_tokens", usage.get("prompt_tokens"))),
        _int_or_none(usage.get("output_tokens", usage.get("completion_tokens"))),
    )


def _streamed_response_id(output: List[Dict[str, Any]]) -> Optional[str]:
    """A streamed chat completion's id: the SDK keeps it in each output item's ``provider_data``."""
    for item in output:
        provider_data = item.get("provider_data") if isinstance(item, dict) else None
        response_id = provider_data.get("response_id") if isinstance(provider_data, dict) else None
        if isinstance(response_id, str):
            return response_id
    return None


def _record_error(
    span: trace_api.Span, sdk_error: Optional[Mapping[str, Any]], exception: Optional[BaseException]
) -> None:
    if exception is not None:
        description = f"{type(exception).__name__}: {exception}"
        span.set_attribute(GenAIAttributes.ERROR_TYPE, type(exception).__qualname__)
        status_code = getattr(exception, "status_code", None)
        if isinstance(status_code, int):
            span.set_attribute(LLMCallAttributes.HTTP_STATUS, status_code)
        span.record_exception(exception)
    else:
        assert sdk_error is not None
        message = str(sdk_error.get("message") or "error")
        data = sdk_error.get("data")
        description = f"{message}: {_dumps(data)}" if data else message
        span.set_attribute(GenAIAttributes.ERROR_TYPE, "_OTHER")
    span.set_status(Status(StatusCode.ERROR, description))


def _describe(kind: str, data: Any) -> Optional[tuple[str, Dict[str, Any]]]:
    """The span name and attributes an SDK span of this kind starts with; None for a transparent one."""
    if kind == "agent":
        return f"{GenAIOperationNames.INVOKE_AGENT} {data.name}", {
            GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT
        }
    if kind == "generation":
        config = data.model_config or {}
        return f"{GenAIOperationNames.CHAT} {data.model or ''}".strip(), {
            GenAIAttributes.OPERATION_NAME: GenAIOperationNames.CHAT,
            GenAIAttributes.REQUEST_MODEL: data.model,
            GenAIAttributes.REQUEST_TEMPERATURE: _number_or_none(config.get("temperature")),
            GenAIAttributes.REQUEST_TOP_P: _number_or_none(config.get("top_p")),
            GenAIAttributes.REQUEST_MAX_TOKENS: _int_or_none(config.get("max_tokens")),
        }
    if kind == "response":  # the Responses model's name arrives from the hooks, just after this
        return GenAIOperationNames.CHAT, {GenAIAttributes.OPERATION_NAME: GenAIOperationNames.CHAT}
    if kind == "function":
        return f"{GenAIOperationNames.EXECUTE_TOOL} {data.name}", {
            GenAIAttributes.OPERATION_NAME: GenAIOperationNames.EXECUTE_TOOL,
            GenAIAttributes.TOOL_NAME: data.name,
        }
    if kind == "handoff":  # named once the target is known, at its end
        return "handoff", {HANDOFF_FROM: data.from_agent}
    if kind == "guardrail":
        return f"guardrail {data.name}", {}
    return None  # the task, turns, custom spans


class LightningTracingProcessor(TracingProcessor):
    """Records the Agents SDK's spans as OpenTelemetry spans (see the module docstring).

    One instance serves every rollout of the process: runs are keyed by the SDK's span ids, and each
    span lands in the rollout whose trace context is current when it starts. ``active`` is off while
    the adapter is not instrumented, so a processor left registered records nothing.
    """

    def __init__(self, framework_name: str = FRAMEWORK_NAME) -> None:
        self.framework_name = framework_name
        self.active = False
        self._tracer = span_tracer(TRACER_NAME)
        # Single dict operations are atomic in CPython: callbacks from several threads need no lock.
        self._runs: Dict[str, _Run] = {}

    @property
    def open_runs(self) -> int:
        """SDK spans started and not yet ended (for tests and diagnostics)."""
        return len(self._runs)

    def current_run(self) -> Optional[_Run]:
        """The run of the SDK span current in this task (the one a model or tool call happens in)."""
        span = get_current_span()
        return self._runs.get(span.span_id) if span is not None else None

    # -- TracingProcessor ---------------------------------------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        pass

    def on_trace_end(self, trace: Trace) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass

    def on_span_start(self, span: SdkSpan[Any]) -> None:
        if not self.active:
            return
        try:
            self._start(span)
        except Exception:  # tracing must never break the agent
            logger.debug("could not record the start of SDK span %s", span.span_id, exc_info=True)

    def on_span_end(self, span: SdkSpan[Any]) -> None:
        run = self._runs.pop(span.span_id, None)
        if run is None or run.span is None:
            return
        try:
            self._finish(span, run)
        except Exception:  # a span we cannot read must still end
            logger.debug("could not record the end of SDK span %s", span.span_id, exc_info=True)
        finally:
            run.span.end()

    # -- starting spans -----------------------------------------------------------------------------

    def _start(self, span: SdkSpan[Any]) -> None:
        data = span.span_data
        kind = data.type
        parent = self._runs.get(span.parent_id) if span.parent_id else None
        parent_context = parent.context_for_children() if parent is not None else None
        agent_name = parent.agent_name if parent is not None else None
        step_name = parent.step_name if parent is not None else None
        step_index = parent.step_index if parent is not None else None
        described = _describe(kind, data)
        if described is None:  # transparent; a turn names the step of the spans under it
            if kind == "turn":
                step_name = getattr(data, "agent_name", None) or agent_name
                step_index = _int_or_none(getattr(data, "turn", None))
            self._runs[span.span_id] = _Run(kind, None, parent_context, agent_name, step_name, step_index)
            return
        name, attributes = described
        if kind == "agent":
            agent_name, step_name, step_index = data.name, None, None
        attributes[FrameworkAttributes.FRAMEWORK] = self.framework_name
        attributes[FrameworkAttributes.RUN_ID] = span.span_id
        attributes[GenAIAttributes.AGENT_NAME] = agent_name
        attributes[FrameworkAttributes.STEP_NAME] = step_name
        attributes[FrameworkAttributes.STEP_INDEX] = step_index
        clean = {key: value for key, value in attributes.items() if value is not None}
        # Without a recorded parent the current context is used, so a run nests under the caller's span.
        otel_span = self._tracer.start_span(name, context=parent_context, attributes=clean)
        self._runs[span.span_id] = _Run(kind, otel_span, parent_context, agent_name, step_name, step_index)

    # -- ending spans -------------------------------------------------------------------------------

    def _finish(self, span: SdkSpan[Any], run: _Run) -> None:
        assert run.span is not None
        otel_span = run.span
        data = span.span_data
        if run.kind == "generation":
            self._finish_generation(otel_span, run, data)
        elif run.kind == "response":
            self._finish_response(otel_span, run, data)
        elif run.kind == "function":
            otel_span.set_attributes(
                {
                    key: value
                    for key, value in {
                        GenAIAttributes.TOOL_CALL_ID: run.tool_call_id,
                        GenAIAttributes.TOOL_CALL_ARGUMENTS: data.input,
                        GenAIAttributes.TOOL_CALL_RESULT: (
                            None
                            if data.output is None
                            else data.output
                            if isinstance(data.output, str)
                            else _dumps(data.output)
                        ),
                    }.items()
                    if value is not None
                }
            )
        elif run.kind == "handoff":
            otel_span.update_name(f"handoff {data.from_agent} -> {data.to_agent}")
            if data.to_agent:
                otel_span.set_attribute(HANDOFF_TO, data.to_agent)
        elif run.kind == "guardrail":
            otel_span.set_attribute(GUARDRAIL_TRIGGERED, bool(data.triggered))
        if span.error is not None or run.exception is not None:
            _record_error(otel_span, span.error, run.exception)

    def _finish_generation(self, otel_span: trace_api.Span, run: _Run, data: Any) -> None:
        """A chat-completions call: the raw completion when the hooks saw it, else the SDK's output."""
        config = data.model_config or {}
        # The SDK leaves the input out when the run keeps sensitive data out of traces: so do we.
        withheld = data.input is None
        request: Dict[str, Any] = {"model": data.model, "messages": data.input or []}
        request.update({key: config[key] for key in _CHAT_PARAMS if config.get(key) is not None})
        if run.stream:
            request["stream"] = True
        response_id: Optional[str] = None
        response_model: Optional[str] = None
        finish_reasons: Optional[List[str]] = None
        completion = _as_dict(run.result)
        body: Any
        if completion is not None:  # a non-streamed call: the body as the server sent it
            body = completion
            response_id = completion.get("id")
            response_model = completion.get("model")
            choices = completion.get("choices") or []
            finish_reasons = [
                str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason")
            ]
        else:
            output = data.output or []
            first = output[0] if output and isinstance(output[0], dict) else None
            if first is not None and isinstance(first.get("output"), list):
                # A streamed call: the SDK's Responses-shaped summary, whose own id is a placeholder.
                response_id = _streamed_response_id(first["output"])
                body = {**first, "id": response_id}
                finish_reasons = responses_finish_reasons(first)
            else:
                body = {"choices": [{"index": 0, "message": message} for message in output]}
        input_tokens, output_tokens = _usage(data.usage)
        self._set_llm_result(
            otel_span,
            run,
            request,
            None if withheld else body,
            response_id,
            response_model,
            finish_reasons,
            input_tokens,
            output_tokens,
        )

    def _finish_response(self, otel_span: trace_api.Span, run: _Run, data: Any) -> None:
        """A Responses API call: the SDK keeps the whole response object."""
        response = _as_dict(data.response)
        # The SDK sets the input only on success and only when the run lets sensitive data into traces.
        request = run.request if run.request is not None and data.input is not None else {"model": run.model}
        response_id = (response or {}).get("id") or getattr(run.result, "id", None)
        response_model = (response or {}).get("model")
        if run.model is None and isinstance(response_model, str):
            otel_span.update_name(f"{GenAIOperationNames.CHAT} {response_model}")
            otel_span.set_attribute(GenAIAttributes.REQUEST_MODEL, response_model)
        input_tokens, output_tokens = _usage(data.usage or (response or {}).get("usage"))
        finish_reasons = responses_finish_reasons(response) if response is not None else None
        self._set_llm_result(
            otel_span, run, request, response, response_id, response_model, finish_reasons, input_tokens, output_tokens
        )

    @staticmethod
    def _set_llm_result(
        otel_span: trace_api.Span,
        run: _Run,
        request: Any,
        body: Any,
        response_id: Any,
        response_model: Any,
        finish_reasons: Optional[List[str]],
        input_tokens: Optional[int],
        output_tokens: Optional[int],
    ) -> None:
        attributes: Dict[str, Any] = {
            LLMCallAttributes.REQUEST: _dumps(request),
            LLMCallAttributes.STREAM: run.stream,
            GenAIAttributes.RESPONSE_ID: response_id if isinstance(response_id, str) else None,
            GenAIAttributes.RESPONSE_MODEL: response_model if isinstance(response_model, str) else None,
            GenAIAttributes.RESPONSE_FINISH_REASONS: finish_reasons or None,
            GenAIAttributes.USAGE_INPUT_TOKENS: input_tokens,
            GenAIAttributes.USAGE_OUTPUT_TOKENS: output_tokens,
        }
        if body is not None and run.exception is None:
            attributes[LLMCallAttributes.RESPONSE] = _dumps(body)
        otel_span.set_attributes({key: value for key, value in attributes.items() if value is not None})

    # -- what the hooks report -----------------------------------------------------------------

    def note_model_request(self, run: _Run, model: Optional[str], arguments: Mapping[str, Any]) -> None:
        """A model call is about to be sent (the SDK span of the call is ``run``)."""
        run.stream = bool(arguments.get("stream"))
        if run.kind != "response" or run.span is None:
            return
        run.model = model
        if model:
            run.span.update_name(f"{GenAIOperationNames.CHAT} {model}")
            run.span.set_attribute(GenAIAttributes.REQUEST_MODEL, model)
        request: Dict[str, Any] = {"model": model}
        if arguments.get("system_instructions"):
            request["instructions"] = arguments["system_instructions"]
        request["input"] = arguments.get("input")
        settings = arguments.get("model_settings")
        for key in ("temperature", "top_p"):
            value = _number_or_none(getattr(settings, key, None))
            if value is not None:
                request[key] = value
                run.span.set_attribute(
                    GenAIAttributes.REQUEST_TEMPERATURE if key == "temperature" else GenAIAttributes.REQUEST_TOP_P,
                    value,
                )
        max_tokens = _int_or_none(getattr(settings, "max_tokens", None))
        if max_tokens is not None:
            request["max_output_tokens"] = max_tokens
            run.span.set_attribute(GenAIAttributes.REQUEST_MAX_TOKENS, max_tokens)
        if run.stream:
            request["stream"] = True
        run.request = request
