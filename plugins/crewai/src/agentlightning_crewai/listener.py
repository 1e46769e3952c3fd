"""The CrewAI event-bus listener that turns crews, agents, LLM calls and tool calls into OpenTelemetry spans.

Imports ``crewai``: only :mod:`agentlightning_crewai.instrumentor` imports this module, and only once the
framework is known to be installed.

Which events become spans:

* a crew's kickoff: ``invoke_agent <crew>``;
* an agent executing a task (``Crew`` processes, delegation in hierarchical crews) or an
  ``Agent.kickoff``: ``invoke_agent <role>``, with the task as ``agentlightning.step.name`` and its
  position in the crew as ``agentlightning.step.index``;
* every LLM call: ``chat <model>`` with the request (the OpenAI wire messages, tools, sampling
  parameters), the response (text or tool calls), usage and the provider's response id (the key that
  joins the LLM proxy's span of the same call, which holds the token ids);
* every tool call: ``execute_tool <tool>`` with arguments, result or error, and the tool call id the
  model gave it.

The listener is not one of the bus's handlers: the bus hands events to those on other threads (its
synchronous handlers on a pool of ten threads, where a "completed" event can overtake its "started"
one; its async handlers on its own event-loop thread), and that hand-off cost more than the spans
themselves (about 1 ms per LLM call). The instrumentor wraps the bus's ``emit`` instead, so
:meth:`LightningCrewListener.deliver` sees each event right after the bus has given it its ids, in the
emitting thread, in emission order and in that thread's context: each span lands in the rollout that
emitted the event, and has ended by the time the ``kickoff`` that emitted it returns.
"""

from __future__ import annotations

import ast
import logging
import re
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from crewai.events import (
    AgentExecutionCompletedEvent,
    AgentExecutionErrorEvent,
    AgentExecutionStartedEvent,
    CrewKickoffCompletedEvent,
    CrewKickoffFailedEvent,
    CrewKickoffStartedEvent,
    LiteAgentExecutionCompletedEvent,
    LiteAgentExecutionErrorEvent,
    LiteAgentExecutionStartedEvent,
    LLMCallCompletedEvent,
    LLMCallFailedEvent,
    LLMCallStartedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskStartedEvent,
    ToolUsageErrorEvent,
    ToolUsageFinishedEvent,
    ToolUsageStartedEvent,
)
from crewai.events.base_events import BaseEvent
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.tracer.otel import span_tracer
from agentlightning.utils.otel import payload_json as _dumps
from agentlightning.utils.otel import to_jsonable

__all__ = ["FRAMEWORK_NAME", "LightningCrewListener"]

logger = logging.getLogger(__name__)

FRAMEWORK_NAME = "crewai"
TRACER_NAME = "agentlightning.crewai"
# Keys CrewAI adds to its messages that are not part of the OpenAI wire format.
_INTERNAL_MESSAGE_KEYS = frozenset({"cache_breakpoint"})
_LONG_NAME = 120  # a task without a name is named by its description; keep step names readable

Handler = Callable[[Any, Any], None]


class _Run:
    """An open span (or a transparent task scope) and what the spans under it inherit."""

    __slots__ = (
        "agent_id",
        "agent_name",
        "ancestor_span",
        "kind",
        "span",
        "step_index",
        "step_name",
        "stream",
        "tasks_seen",
    )

    def __init__(
        self,
        kind: str,
        span: Optional[trace_api.Span],
        agent_name: Optional[str],
        step_name: Optional[str],
        step_index: Optional[int],
        agent_id: Optional[str] = None,
    ) -> None:
        self.kind = kind
        self.span = span
        self.agent_name = agent_name
        self.step_name = step_name
        self.step_index = step_index
        self.agent_id = agent_id
        self.stream = False
        self.tasks_seen = 0
        # A task scope has no span: the spans under it hang from its crew's.
        self.ancestor_span: Optional[trace_api.Span] = None

    @property
    def span_for_children(self) -> Optional[trace_api.Span]:
        return self.span if self.span is not None else self.ancestor_span


def _short(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= _LONG_NAME else text[: _LONG_NAME - 1] + "…"


def _unquote(value: Any) -> Any:
    """Undo CrewAI's event serialization, which ``repr()``s strings nested five levels deep."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        if isinstance(parsed, str):
            return parsed
    return value


def _wire_messages(messages: Any) -> Any:
    """The event's messages in the OpenAI wire format (the request the provider was sent)."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, list):
        return messages
    cleaned: List[Any] = []
    for message in messages:
        if not isinstance(message, Mapping):
            cleaned.append(message)
            continue
        wire = {key: value for key, value in message.items() if key not in _INTERNAL_MESSAGE_KEYS}
        tool_calls = wire.get("tool_calls")
        if isinstance(tool_calls, list):
            wire["tool_calls"] = [_unquote_tool_call(call) for call in tool_calls]
        cleaned.append(wire)
    return cleaned


def _unquote_tool_call(call: Any) -> Any:
    if not isinstance(call, Mapping):
        return call
    function = call.get("function")
    if not isinstance(function, Mapping):
        return call
    return {**call, "function": {key: _unquote(value) for key, value in function.items()}}


def _tool_key(name: str) -> str:
    # CrewAI sends tool names sanitized ("Delegate work to coworker" -> "delegate_work_to_coworker").
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number_or_none(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _error(span: trace_api.Span, error_type: str, message: Any) -> None:
    description = str(message)
    span.set_attribute(GenAIAttributes.ERROR_TYPE, error_type)
    span.add_event("exception", {"exception.type": error_type, "exception.message": description})
    span.set_status(Status(StatusCode.ERROR, description))


class LightningCrewListener:
    """Records CrewAI runs as OpenTelemetry spans (see the module docstring).

    One instance serves every rollout of the process: spans are keyed by CrewAI's unique event and
    call ids, and each lands in the rollout whose trace context was current where the event was
    emitted. The instrumentor calls :meth:`deliver` with every event the bus emits.
    """

    def __init__(self, framework_name: str = FRAMEWORK_NAME) -> None:
        self.framework_name = framework_name
        # Scoped spans: the bus hands handlers a copy of the emitting thread's context, which holds the
        # rollout's trace scope, so the spans go straight into the rollout's buffer.
        self._tracer = span_tracer(TRACER_NAME)
        self._lock = threading.Lock()
        self._runs: Dict[str, _Run] = {}  # by the "started" event id (LLM calls: by call id)
        self._agents: Dict[str, List[_Run]] = {}  # open agent runs by CrewAI agent id, innermost last
        self._tool_call_ids: Dict[Tuple[Optional[str], str], List[str]] = {}  # (agent id, tool) -> ids
        self._handlers: List[Tuple[type, Handler]] = [
            (CrewKickoffStartedEvent, self._crew_started),
            (CrewKickoffCompletedEvent, self._crew_ended),
            (CrewKickoffFailedEvent, self._crew_ended),
            (TaskStartedEvent, self._task_started),
            (TaskCompletedEvent, self._task_ended),
            (TaskFailedEvent, self._task_ended),
            (AgentExecutionStartedEvent, self._agent_started),
            (AgentExecutionCompletedEvent, self._agent_ended),
            (AgentExecutionErrorEvent, self._agent_ended),
            (LiteAgentExecutionStartedEvent, self._agent_started),
            (LiteAgentExecutionCompletedEvent, self._agent_ended),
            (LiteAgentExecutionErrorEvent, self._agent_ended),
            (LLMCallStartedEvent, self._llm_started),
            (LLMCallCompletedEvent, self._llm_completed),
            (LLMCallFailedEvent, self._llm_failed),
            (ToolUsageStartedEvent, self._tool_started),
            (ToolUsageFinishedEvent, self._tool_finished),
            (ToolUsageErrorEvent, self._tool_failed),
        ]
        self._by_type: Dict[type, Handler] = dict(self._handlers)

    # -- the bus -----------------------------------------------------------------------------------

    @property
    def event_types(self) -> List[type]:
        return [event_type for event_type, _ in self._handlers]

    def deliver(self, source: Any, event: Any) -> None:
        """Record one event the bus emitted (called in the emitting thread, after the bus set its ids)."""
        handler = self._by_type.get(type(event))  # by exact class, as the bus itself dispatches
        if handler is None:
            return
        try:
            handler(source, event)
        except Exception:  # the agent must not fail because a span could not be recorded
            logger.warning("could not record CrewAI event %s", type(event).__name__, exc_info=True)

    @property
    def open_runs(self) -> int:
        """Spans started and not yet ended (for tests and diagnostics)."""
        with self._lock:
            return sum(1 for run in self._runs.values() if run.span is not None)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _parent(self, event: BaseEvent, agent_id: Optional[str] = None) -> Optional[_Run]:
        with self._lock:
            parent = self._runs.get(event.parent_event_id) if event.parent_event_id else None
            if parent is None and agent_id is not None:
                # LLM and tool events hang from the agent executor's internal flow, which emits no
                # event we record: attach them to the innermost open run of their agent.
                stack = self._agents.get(agent_id)
                parent = stack[-1] if stack else None
            return parent

    def _open(
        self,
        key: str,
        kind: str,
        parent: Optional[_Run],
        span_name: str,
        attributes: Dict[str, Any],
        *,
        agent_name: Optional[str],
        step_name: Optional[str],
        step_index: Optional[int],
        run_id: str,
        agent_id: Optional[str] = None,
    ) -> _Run:
        attributes[FrameworkAttributes.FRAMEWORK] = self.framework_name
        attributes[FrameworkAttributes.RUN_ID] = run_id
        attributes[GenAIAttributes.AGENT_NAME] = agent_name
        attributes[FrameworkAttributes.STEP_NAME] = step_name
        attributes[FrameworkAttributes.STEP_INDEX] = step_index
        clean = {name: value for name, value in attributes.items() if value is not None}
        # Without a recorded parent the emitting thread's context is current (the bus copied it), so
        # a root span nests under the caller's own span.
        parent_span = parent.span_for_children if parent is not None else None
        parent_context = trace_api.set_span_in_context(parent_span) if parent_span is not None else None
        span = self._tracer.start_span(span_name, context=parent_context, attributes=clean)
        run = _Run(kind, span, agent_name, step_name, step_index, agent_id)
        with self._lock:
            self._runs[key] = run
            if kind == "agent" and agent_id is not None:
                self._agents.setdefault(agent_id, []).append(run)
        return run

    def _close(self, key: Optional[str], kind: str) -> Optional[_Run]:
        if not key:
            return None
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.kind != kind:  # a stray or repeated end event: not ours to close
                return None
            del self._runs[key]
            if kind == "agent" and run.agent_id is not None:
                stack = self._agents.get(run.agent_id, [])
                if run in stack:
                    stack.remove(run)
                if not stack:
                    self._agents.pop(run.agent_id, None)
            return run

    # -- crews and tasks ---------------------------------------------------------------------------

    def _crew_started(self, source: Any, event: CrewKickoffStartedEvent) -> None:
        name = event.crew_name or "crew"
        self._open(
            event.event_id,
            "crew",
            self._parent(event),
            f"{GenAIOperationNames.INVOKE_AGENT} {name}",
            {GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT},
            agent_name=name,
            step_name=None,
            step_index=None,
            run_id=event.event_id,
        )

    def _crew_ended(self, source: Any, event: BaseEvent) -> None:
        run = self._close(event.started_event_id, "crew")
        if run is None or run.span is None:
            return
        if isinstance(event, CrewKickoffFailedEvent):
            _error(run.span, "CrewKickoffFailed", event.error)
        run.span.end()

    def _task_started(self, source: Any, event: TaskStartedEvent) -> None:
        # A task is a step of its crew, not a span: its agent's span names it.
        parent = self._parent(event)
        index: Optional[int] = None
        if parent is not None:
            with self._lock:  # events reach the listener on every thread that emits them
                index = parent.tasks_seen
                parent.tasks_seen += 1
        task = _Run("task", None, parent.agent_name if parent else None, _short(event.task_name), index)
        task.ancestor_span = parent.span_for_children if parent is not None else None
        with self._lock:
            self._runs[event.event_id] = task

    def _task_ended(self, source: Any, event: BaseEvent) -> None:
        self._close(event.started_event_id, "task")

    # -- agents ------------------------------------------------------------------------------------

    def _agent_started(self, source: Any, event: BaseEvent) -> None:
        if isinstance(event, AgentExecutionStartedEvent):
            agent = event.agent
            role = getattr(agent, "role", None) or "agent"
            agent_id = str(getattr(agent, "id", "")) or None
        else:
            info: Mapping[str, Any] = getattr(event, "agent_info", None) or {}
            role = str(info.get("role") or "agent")
            agent_id = str(info.get("id")) if info.get("id") else event.agent_id
        parent = self._parent(event)
        step_name = parent.step_name if parent is not None else None
        step_index = parent.step_index if parent is not None else None
        self._open(
            event.event_id,
            "agent",
            parent,
            f"{GenAIOperationNames.INVOKE_AGENT} {role}",
            {GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT},
            agent_name=role,
            step_name=step_name,
            step_index=step_index,
            run_id=agent_id or event.event_id,
            agent_id=agent_id,
        )

    def _agent_ended(self, source: Any, event: BaseEvent) -> None:
        run = self._close(event.started_event_id, "agent")
        if run is None or run.span is None:
            return
        error = getattr(event, "error", None)
        if error is not None:
            _error(run.span, type(event).__name__.replace("Event", ""), error)
        run.span.end()

    # -- LLM calls ---------------------------------------------------------------------------------

    def _llm_started(self, source: Any, event: LLMCallStartedEvent) -> None:
        parent = self._parent(event, event.agent_id)
        model = event.model or getattr(source, "model", None) or ""
        request: Dict[str, Any] = {"model": model, "messages": _wire_messages(event.messages)}
        if event.tools:
            request["tools"] = event.tools
        params = {
            "temperature": event.temperature,
            "top_p": event.top_p,
            "max_tokens": event.max_tokens,
            "seed": event.seed,
            "stop": event.stop_sequences,
            "frequency_penalty": event.frequency_penalty,
            "presence_penalty": event.presence_penalty,
            "n": event.n,
            "stream": event.stream,
        }
        request.update({key: value for key, value in params.items() if value is not None})
        run = self._open(
            event.call_id,
            "llm",
            parent,
            f"{GenAIOperationNames.CHAT} {model}".strip(),
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.CHAT,
                GenAIAttributes.REQUEST_MODEL: model or None,
                GenAIAttributes.REQUEST_TEMPERATURE: _number_or_none(event.temperature),
                GenAIAttributes.REQUEST_TOP_P: _number_or_none(event.top_p),
                GenAIAttributes.REQUEST_MAX_TOKENS: _int_or_none(event.max_tokens),
                GenAIAttributes.REQUEST_SEED: _int_or_none(event.seed),
                LLMCallAttributes.REQUEST: _dumps(request),
            },
            agent_name=event.agent_role or (parent.agent_name if parent else None),
            step_name=_short(event.task_name) or (parent.step_name if parent else None),
            step_index=parent.step_index if parent is not None else None,
            run_id=event.call_id,
        )
        run.agent_id = event.agent_id
        run.stream = bool(event.stream)

    def _llm_completed(self, source: Any, event: LLMCallCompletedEvent) -> None:
        run = self._close(event.call_id, "llm")
        if run is None or run.span is None:
            return
        try:
            self._record_response(run, event)
        except Exception:  # a response we cannot read must still end its span
            logger.debug("could not read the LLM response of call %s", event.call_id, exc_info=True)
        run.span.end()

    def _record_response(self, run: _Run, event: LLMCallCompletedEvent) -> None:
        assert run.span is not None
        message: Dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(event.response, list):
            message["tool_calls"] = [_unquote_tool_call(call) for call in event.response]
            self._expect_tool_calls(run.agent_id, message["tool_calls"])
        else:
            message["content"] = event.response if isinstance(event.response, str) else to_jsonable(event.response)
        usage: Mapping[str, Any] = event.usage or {}
        input_tokens = _int_or_none(usage.get("prompt_tokens"))
        output_tokens = _int_or_none(usage.get("completion_tokens"))
        body = {
            "id": event.response_id,
            "model": event.model,
            "choices": [{"index": 0, "message": message, "finish_reason": event.finish_reason}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
        }
        attributes: Dict[str, Any] = {
            GenAIAttributes.RESPONSE_ID: event.response_id,
            GenAIAttributes.RESPONSE_MODEL: event.model,
            GenAIAttributes.RESPONSE_FINISH_REASONS: [event.finish_reason] if event.finish_reason else None,
            GenAIAttributes.USAGE_INPUT_TOKENS: input_tokens,
            GenAIAttributes.USAGE_OUTPUT_TOKENS: output_tokens,
            LLMCallAttributes.RESPONSE: _dumps(body),
            LLMCallAttributes.STREAM: run.stream,
        }
        run.span.set_attributes({key: value for key, value in attributes.items() if value is not None})

    def _expect_tool_calls(self, agent_id: Optional[str], tool_calls: Sequence[Any]) -> None:
        # Tool events carry no call id: remember the ids the model gave, per agent and tool, in order.
        with self._lock:
            for call in tool_calls:
                function = call.get("function") if isinstance(call, Mapping) else None
                name = function.get("name") if isinstance(function, Mapping) else None
                call_id = call.get("id") if isinstance(call, Mapping) else None
                if isinstance(name, str) and isinstance(call_id, str):
                    self._tool_call_ids.setdefault((agent_id, _tool_key(name)), []).append(call_id)

    def _llm_failed(self, source: Any, event: LLMCallFailedEvent) -> None:
        # CrewAI may report one failure twice; the second finds no open call.
        run = self._close(event.call_id, "llm")
        if run is None or run.span is None:
            return
        run.span.set_attribute(LLMCallAttributes.STREAM, run.stream)
        _error(run.span, "LLMCallFailed", event.error)
        run.span.end()

    # -- tools -------------------------------------------------------------------------------------

    def _tool_started(self, source: Any, event: ToolUsageStartedEvent) -> None:
        parent = self._parent(event, event.agent_id)
        key = (event.agent_id, _tool_key(event.tool_name))
        with self._lock:
            pending = self._tool_call_ids.get(key)
            call_id = pending.pop(0) if pending else None
            if pending is not None and not pending:
                self._tool_call_ids.pop(key, None)
        arguments = event.tool_args if isinstance(event.tool_args, str) else _dumps(event.tool_args)
        self._open(
            event.event_id,
            "tool",
            parent,
            f"{GenAIOperationNames.EXECUTE_TOOL} {event.tool_name}",
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.EXECUTE_TOOL,
                GenAIAttributes.TOOL_NAME: event.tool_name,
                GenAIAttributes.TOOL_CALL_ID: call_id,
                GenAIAttributes.TOOL_CALL_ARGUMENTS: arguments,
            },
            agent_name=event.agent_role or (parent.agent_name if parent else None),
            step_name=_short(event.task_name) or (parent.step_name if parent else None),
            step_index=parent.step_index if parent is not None else None,
            run_id=event.event_id,
        )

    def _tool_finished(self, source: Any, event: ToolUsageFinishedEvent) -> None:
        run = self._close(event.started_event_id, "tool")
        if run is None or run.span is None:
            return
        output = event.output
        run.span.set_attribute(GenAIAttributes.TOOL_CALL_RESULT, output if isinstance(output, str) else _dumps(output))
        if event.failure is not None:  # the tool returned, saying it did not do the work
            _error(run.span, "ToolFailure", getattr(event.failure, "message", event.failure))
        run.span.end()

    def _tool_failed(self, source: Any, event: ToolUsageErrorEvent) -> None:
        run = self._close(event.started_event_id, "tool")
        if run is None or run.span is None:
            return
        error = event.error
        error_type = type(error).__qualname__ if isinstance(error, BaseException) else "ToolUsageError"
        _error(run.span, error_type, error)
        run.span.end()
