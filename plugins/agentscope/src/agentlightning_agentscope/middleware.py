"""The AgentScope middleware that turns replies, model calls and tool calls into OpenTelemetry spans.

Imports ``agentscope``: only :mod:`agentlightning_agentscope.instrumentor` imports this module, and only
once the framework is known to be installed.

Which hooks become spans:

* ``on_reply``: ``invoke_agent <agent name>`` for each reply, with AgentScope's reply id as the run id;
* ``on_model_call``: ``chat <model>`` with the request (the messages in the OpenAI wire format, as the
  model's formatter sends them, tools, sampling parameters), the response (text, tool calls), usage and
  the provider's response id (the key that joins the LLM proxy's span of the same call, which holds the
  token ids). A streamed call's span ends when its stream does;
* ``on_acting``: ``execute_tool <tool>`` with the call id, arguments and result, ERROR when the tool
  failed;
* ``on_check_permission``: inside a rollout, a tool call that would wait for a permission answer (or
  an external execution) gets an ERROR ``execute_tool`` span and is denied, so the reply goes on with
  the denial as the tool's result instead of parking the rollout with "waiting for your permission".

Middleware runs in the caller's task, so each span lands in the rollout whose trace context is current;
model and tool spans hang from their agent's open reply span.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, AsyncGenerator, Awaitable, Callable, Dict, List, Optional

from agentscope.event import ReplyEndEvent, ReplyStartEvent, RequireExternalExecutionEvent
from agentscope.message import TextBlock, ThinkingBlock, ToolCallBlock
from agentscope.middleware import MiddlewareBase
from agentscope.model import ChatResponse
from agentscope.permission import PermissionBehavior, PermissionDecision
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.tracer import get_active_tracer
from agentlightning.tracer.otel import span_tracer
from agentlightning.utils.otel import payload_json as _dumps
from agentlightning.utils.otel import to_jsonable

__all__ = ["FRAMEWORK_NAME", "PERMISSION_ERROR_TYPE", "LightningMiddleware"]

logger = logging.getLogger(__name__)

FRAMEWORK_NAME = "agentscope"
TRACER_NAME = "agentlightning.agentscope"
PERMISSION_ERROR_TYPE = "PermissionRequired"
"""``error.type`` of a tool call that would have waited for a permission answer during a rollout."""
_WAITING = (PermissionBehavior.ASK, PermissionBehavior.PASSTHROUGH)


def _error(span: trace_api.Span, error_type: str, message: Any) -> None:
    description = str(message)
    span.set_attribute(GenAIAttributes.ERROR_TYPE, error_type)
    span.add_event("exception", {"exception.type": error_type, "exception.message": description})
    span.set_status(Status(StatusCode.ERROR, description))


def _text_of(content: Any) -> str:
    """The text of a tool result: a string, or the text of its blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.text if isinstance(block, TextBlock) else _dumps(to_jsonable(block)) for block in content)
    return _dumps(to_jsonable(content))


def _assistant_message(response: ChatResponse) -> Dict[str, Any]:
    """A ChatResponse as an OpenAI assistant message."""
    texts: List[str] = []
    reasoning: List[str] = []
    tool_calls: List[Dict[str, Any]] = []
    for block in response.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolCallBlock):
            tool_calls.append(
                {"id": block.id, "type": "function", "function": {"name": block.name, "arguments": block.input}}
            )
    message: Dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


class LightningMiddleware(MiddlewareBase):
    """Records AgentScope agents as OpenTelemetry spans (see the module docstring).

    One instance serves every agent and rollout of the process; the instrumentor adds it to every
    ``Agent``. It can also be passed by hand: ``Agent(..., middlewares=[LightningMiddleware()])``.
    """

    def __init__(self, framework_name: str = FRAMEWORK_NAME) -> None:
        self.framework_name = framework_name
        self._tracer = span_tracer(TRACER_NAME)
        self._lock = threading.Lock()
        self._replies: Dict[int, List[trace_api.Span]] = {}  # open reply spans by id(agent), innermost last

    # -- spans -------------------------------------------------------------------------------------

    def _start(self, agent: Any, name: str, attributes: Dict[str, Any], run_id: Optional[str]) -> trace_api.Span:
        attributes[FrameworkAttributes.FRAMEWORK] = self.framework_name
        attributes[FrameworkAttributes.RUN_ID] = run_id
        attributes[GenAIAttributes.AGENT_NAME] = getattr(agent, "name", None)
        clean = {key: value for key, value in attributes.items() if value is not None}
        with self._lock:
            stack = self._replies.get(id(agent))
            parent = stack[-1] if stack else None
        # Without an open reply of this agent the caller's context is current: the span nests under it.
        context = trace_api.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(name, context=context, attributes=clean)

    @staticmethod
    def _step_index(agent: Any) -> Optional[int]:
        # The reasoning-acting round of the reply, counted from 0.
        state = getattr(agent, "state", None)
        value = getattr(state, "cur_iter", None)
        return value if isinstance(value, int) else None

    # -- replies -----------------------------------------------------------------------------------

    async def on_reply(
        self, agent: Any, input_kwargs: dict, next_handler: Callable[..., AsyncGenerator]
    ) -> AsyncGenerator:
        name = getattr(agent, "name", None) or "agent"
        span = self._start(
            agent,
            f"{GenAIOperationNames.INVOKE_AGENT} {name}",
            {GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT},
            run_id=None,
        )
        key = id(agent)
        with self._lock:
            self._replies.setdefault(key, []).append(span)
        try:
            async for item in next_handler(**input_kwargs):
                if isinstance(item, ReplyStartEvent):
                    span.set_attribute(FrameworkAttributes.RUN_ID, item.reply_id)
                elif isinstance(item, ReplyEndEvent) and item.error is not None:
                    _error(span, "ReplyError", item.error)
                elif isinstance(item, RequireExternalExecutionEvent):
                    names = ", ".join(call.name for call in item.tool_calls)
                    _error(span, "ExternalExecutionRequired", f"the reply waits for the external execution of {names}")
                yield item
        except GeneratorExit:  # the consumer stopped reading: not an error of the agent
            raise
        except BaseException as exc:
            _error(span, type(exc).__qualname__, exc)
            raise
        finally:
            with self._lock:
                stack = self._replies.get(key, [])
                if span in stack:
                    stack.remove(span)
                if not stack:
                    self._replies.pop(key, None)
            span.end()

    # -- model calls -------------------------------------------------------------------------------

    async def on_model_call(
        self,
        agent: Any,
        input_kwargs: dict,
        next_handler: Callable[..., Awaitable[Any]],
    ) -> Any:
        model = input_kwargs.get("current_model")
        model_name = str(getattr(model, "model", "") or "")
        stream = bool(getattr(model, "stream", False))
        parameters = getattr(model, "parameters", None)
        temperature = getattr(parameters, "temperature", None)
        top_p = getattr(parameters, "top_p", None)
        max_tokens = getattr(parameters, "max_tokens", None)
        request: Dict[str, Any] = {
            "model": model_name,
            "messages": await self._wire_messages(model, input_kwargs.get("messages") or []),
            "stream": stream,
        }
        tools = input_kwargs.get("tools")
        if tools:
            request["tools"] = tools
        optional = {
            "tool_choice": input_kwargs.get("tool_choice"),
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
        }
        request.update({key: value for key, value in optional.items() if value is not None})
        span = self._start(
            agent,
            f"{GenAIOperationNames.CHAT} {model_name}".strip(),
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.CHAT,
                GenAIAttributes.REQUEST_MODEL: model_name or None,
                GenAIAttributes.REQUEST_TEMPERATURE: temperature,
                GenAIAttributes.REQUEST_TOP_P: top_p,
                GenAIAttributes.REQUEST_MAX_TOKENS: max_tokens,
                FrameworkAttributes.STEP_INDEX: self._step_index(agent),
                LLMCallAttributes.REQUEST: _dumps(request),
                LLMCallAttributes.STREAM: stream,
            },
            run_id=None,
        )
        try:
            result = await next_handler(**input_kwargs)
        except BaseException as exc:
            _error(span, type(exc).__qualname__, exc)
            span.end()
            raise
        if isinstance(result, ChatResponse):
            self._record_response(span, result, model_name)
            span.end()
            return result
        return self._watch_stream(span, result, model_name)

    async def _watch_stream(self, span: trace_api.Span, stream: Any, model_name: str) -> AsyncGenerator:
        """The model's stream, passed through; the span records the last (complete) response and ends with it."""
        last: Optional[ChatResponse] = None
        try:
            async for response in stream:
                last = response
                yield response
        except GeneratorExit:  # the consumer stopped reading: not an error of the agent
            raise
        except BaseException as exc:
            _error(span, type(exc).__qualname__, exc)
            raise
        finally:
            if last is not None:
                try:
                    self._record_response(span, last, model_name)
                except Exception:  # a response we cannot read must still end its span
                    logger.debug("could not read a streamed AgentScope response", exc_info=True)
            span.end()

    @staticmethod
    async def _wire_messages(model: Any, messages: List[Any]) -> Any:
        """The messages as the model's formatter sends them (the OpenAI wire format for OpenAI models)."""
        formatter = getattr(model, "formatter", None)
        if formatter is not None:
            try:
                return await formatter.format(messages)
            except Exception:  # fall back to AgentScope's own message dump
                logger.debug("could not format the messages with %r", formatter, exc_info=True)
        return [to_jsonable(message) for message in messages]

    @staticmethod
    def _record_response(span: trace_api.Span, response: ChatResponse, model_name: str) -> None:
        message = _assistant_message(response)
        finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
        if str(response.finished_reason) == "interrupted":
            finish_reason = "interrupted"
        usage = response.usage
        input_tokens = usage.input_tokens if usage is not None else None
        output_tokens = usage.output_tokens if usage is not None else None
        body = {
            "id": response.id,
            "model": model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
        }
        attributes: Dict[str, Any] = {
            GenAIAttributes.RESPONSE_ID: response.id,
            GenAIAttributes.RESPONSE_MODEL: model_name or None,
            GenAIAttributes.RESPONSE_FINISH_REASONS: [finish_reason],
            GenAIAttributes.USAGE_INPUT_TOKENS: input_tokens,
            GenAIAttributes.USAGE_OUTPUT_TOKENS: output_tokens,
            LLMCallAttributes.RESPONSE: _dumps(body),
        }
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})

    # -- tools -------------------------------------------------------------------------------------

    def _start_tool(self, agent: Any, tool_call: Any) -> trace_api.Span:
        name = str(getattr(tool_call, "name", "") or "tool")
        return self._start(
            agent,
            f"{GenAIOperationNames.EXECUTE_TOOL} {name}",
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.EXECUTE_TOOL,
                GenAIAttributes.TOOL_NAME: name,
                GenAIAttributes.TOOL_CALL_ID: getattr(tool_call, "id", None),
                GenAIAttributes.TOOL_CALL_ARGUMENTS: getattr(tool_call, "input", None),
                FrameworkAttributes.STEP_INDEX: self._step_index(agent),
            },
            run_id=getattr(tool_call, "id", None),
        )

    async def on_acting(
        self, agent: Any, input_kwargs: dict, next_handler: Callable[..., AsyncGenerator]
    ) -> AsyncGenerator:
        span = self._start_tool(agent, input_kwargs.get("tool_call"))
        final: Any = None
        try:
            async for chunk in next_handler(**input_kwargs):
                final = chunk
                yield chunk
        except GeneratorExit:  # the consumer stopped reading: not an error of the agent
            raise
        except BaseException as exc:
            _error(span, type(exc).__qualname__, exc)
            raise
        finally:
            if final is not None:
                result = _text_of(getattr(final, "content", final))
                span.set_attribute(GenAIAttributes.TOOL_CALL_RESULT, result)
                state = str(getattr(final, "state", "success"))
                if state != "success":
                    _error(span, f"Tool{state.capitalize()}", result)
            span.end()

    # -- permissions -------------------------------------------------------------------------------

    async def on_check_permission(
        self, agent: Any, input_kwargs: dict, next_handler: Callable[..., Awaitable[PermissionDecision]]
    ) -> PermissionDecision:
        decision = await next_handler(**input_kwargs)
        if decision.behavior not in _WAITING or get_active_tracer() is None:
            return decision
        # Nobody answers a permission prompt during a rollout: the reply would end "waiting for your
        # permission" and the rollout would look like a silent, empty run.
        tool_call = input_kwargs.get("tool_call")
        name = getattr(tool_call, "name", "tool")
        message = (
            f"tool {name!r} needs a permission answer ({decision.message}), which nobody gives during a "
            "rollout; allow it (FunctionTool(..., permission=PermissionDecision(behavior=ALLOW, ...)) or "
            "PermissionMode.BYPASS) to let the agent use it"
        )
        span = self._start_tool(agent, tool_call)
        _error(span, PERMISSION_ERROR_TYPE, message)
        span.end()
        logger.warning("denied %s's call of %s during a rollout: %s", getattr(agent, "name", "agent"), name, message)
        return PermissionDecision(behavior=PermissionBehavior.DENY, message=message)
