"""Agent Framework middleware and a tool wrapper that record agents, LLM calls and tool calls as spans.

Imports ``agent_framework``; only :mod:`agentlightning_agent_framework.instrumentor` imports this
module, and only once the framework is known to be installed.

Agent Framework already emits OpenTelemetry GenAI spans of its own (``invoke_agent``, ``chat``,
``execute_tool``) through the global TracerProvider; under a runner they reach the rollout like any
span of an instrumented library. What they lack for training (the agent on each LLM call, the
request and response in the OpenAI wire format, tool arguments and results unless sensitive data is
on) the adapter records from Agent Framework's own extension points, as spans the framework's spans
nest under:

* agent middleware, first in every agent's pipeline: ``invoke_agent <agent name>``, the current span
  while the agent runs (streamed runs included);
* chat middleware, last in every chat client's pipeline (so it sees the messages as sent):
  ``chat <model>`` with the request, the response (the provider's raw body when the client kept it),
  usage and the provider's response id (the key that joins the LLM proxy's span of the same call);
* ``FunctionTool.invoke``: ``execute_tool <tool>`` with arguments, call id, result or the exception.

Each LLM and tool span carries the agent's name (``gen_ai.agent.name``), so ``agent_match`` works.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from contextvars import ContextVar
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Mapping, Optional

from agent_framework import AgentContext, AgentMiddleware, ChatContext, ChatMiddleware, ResponseStream
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.tracer import span_tracer
from agentlightning.utils.otel import payload_json as _dumps

__all__ = ["FRAMEWORK_NAME", "AgentFrameworkRecorder", "LightningAgentMiddleware", "LightningChatMiddleware"]

logger = logging.getLogger(__name__)

FRAMEWORK_NAME = "agent_framework"
TRACER_NAME = "agentlightning.agent_framework"
# Chat options that are request parameters of the wire format, with their gen_ai.request.* attribute.
_REQUEST_PARAMS = {
    "temperature": GenAIAttributes.REQUEST_TEMPERATURE,
    "top_p": GenAIAttributes.REQUEST_TOP_P,
    "max_tokens": GenAIAttributes.REQUEST_MAX_TOKENS,
    "seed": GenAIAttributes.REQUEST_SEED,
}
_OTHER_PARAMS = ("frequency_penalty", "presence_penalty", "stop", "tool_choice", "logprobs", "top_logprobs")

# The agent running in this task (set while our agent span is current).
_current_agent: ContextVar[Optional[str]] = ContextVar("agentlightning_agent_framework_agent", default=None)


def _record_error(span: trace_api.Span, error: BaseException) -> None:
    span.set_attribute(GenAIAttributes.ERROR_TYPE, type(error).__qualname__)
    status_code = getattr(error, "status_code", None)
    if isinstance(status_code, int):
        span.set_attribute(LLMCallAttributes.HTTP_STATUS, status_code)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@contextlib.contextmanager
def _current(span: trace_api.Span, agent_name: Optional[str]) -> Iterator[None]:
    """``span`` current (and the agent named) for the code inside; attach and detach in one step."""
    otel_token = context_api.attach(trace_api.set_span_in_context(span))
    agent_token = _current_agent.set(agent_name) if agent_name is not None else None
    try:
        yield
    finally:
        if agent_token is not None:
            _current_agent.reset(agent_token)
        context_api.detach(otel_token)


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return _dumps(value if value is not None else {})


def openai_messages(messages: Any) -> List[Dict[str, Any]]:
    """Agent Framework messages in the OpenAI chat format (text, tool calls, tool results)."""
    converted: List[Dict[str, Any]] = []
    for message in messages or ():
        role = str(getattr(message, "role", "user"))
        texts: List[str] = []
        tool_calls: List[Dict[str, Any]] = []
        results: List[Dict[str, Any]] = []
        for content in getattr(message, "contents", None) or ():
            kind = getattr(content, "type", None)
            if kind == "text":
                texts.append(str(getattr(content, "text", "") or ""))
            elif kind == "function_call":
                tool_calls.append(
                    {
                        "id": getattr(content, "call_id", None),
                        "type": "function",
                        "function": {
                            "name": getattr(content, "name", None),
                            "arguments": _arguments(getattr(content, "arguments", None)),
                        },
                    }
                )
            elif kind == "function_result":
                result = getattr(content, "result", None)
                results.append(
                    {
                        "role": "tool",
                        "tool_call_id": getattr(content, "call_id", None),
                        "content": result if isinstance(result, str) else _dumps(result),
                    }
                )
            else:  # images, reasoning, ...: kept as Agent Framework describes them
                texts.append(_dumps(content.to_dict() if hasattr(content, "to_dict") else content))
        if results:
            converted.extend(results)
            continue
        item: Dict[str, Any] = {"role": role, "content": "".join(texts) if texts else None}
        if tool_calls:
            item["tool_calls"] = tool_calls
        author = getattr(message, "author_name", None)
        if author:
            item["name"] = author
        converted.append(item)
    return converted


def _tool_definitions(tools: Any) -> Optional[List[Dict[str, Any]]]:
    definitions: List[Dict[str, Any]] = []
    for tool in tools or ():
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            continue
        function: Dict[str, Any] = {"name": name, "description": getattr(tool, "description", None) or ""}
        parameters = getattr(tool, "parameters", None)
        if callable(parameters):
            try:
                function["parameters"] = parameters()
            except Exception:  # a tool that cannot describe itself: its name is enough
                pass
        definitions.append({"type": "function", "function": function})
    return definitions or None


def _response_body(response: Any) -> Dict[str, Any]:
    """The provider's body when the client kept it (a call that was not streamed); else rebuilt."""
    raw: Any = getattr(response, "raw_representation", None)
    if getattr(raw, "object", None) in ("chat.completion", "response") and hasattr(raw, "model_dump"):
        body = raw.model_dump()
        if isinstance(body, dict):
            return body
    assistant = [m for m in openai_messages(getattr(response, "messages", None)) if m.get("role") == "assistant"]
    message: Dict[str, Any] = {"role": "assistant", "content": None}
    for part in assistant:  # one message of the wire format: texts and tool calls together
        if part.get("content"):
            message["content"] = (message["content"] or "") + part["content"]
        if part.get("tool_calls"):
            message.setdefault("tool_calls", []).extend(part["tool_calls"])
    usage = getattr(response, "usage_details", None) or {}
    finish_reason = getattr(response, "finish_reason", None)
    return {
        "id": getattr(response, "response_id", None),
        "object": "chat.completion",
        "model": getattr(response, "model", None),
        "choices": [{"index": 0, "message": message, "finish_reason": str(finish_reason) if finish_reason else None}],
        "usage": {
            "prompt_tokens": usage.get("input_token_count"),
            "completion_tokens": usage.get("output_token_count"),
            "total_tokens": usage.get("total_token_count"),
        },
    }


class AgentFrameworkRecorder:
    """Starts and finishes the adapter's spans; one instance serves every rollout of the process.

    ``active`` is off while the adapter is not instrumented: middleware left in a pipeline an agent
    cached then just passes the call on.
    """

    def __init__(self, framework_name: str = FRAMEWORK_NAME) -> None:
        self.framework_name = framework_name
        self.active = False
        self._tracer = span_tracer(TRACER_NAME)
        self.agent_middleware = LightningAgentMiddleware(self)
        self.chat_middleware = LightningChatMiddleware(self)

    def start_span(self, name: str, attributes: Dict[str, Any]) -> trace_api.Span:
        attributes[FrameworkAttributes.FRAMEWORK] = self.framework_name
        agent_name = _current_agent.get()
        if agent_name is not None:
            attributes.setdefault(GenAIAttributes.AGENT_NAME, agent_name)
            attributes.setdefault(FrameworkAttributes.STEP_NAME, agent_name)
        return self._tracer.start_span(name, attributes={k: v for k, v in attributes.items() if v is not None})

    # -- tools ---------------------------------------------------------------------------------------

    def wrap_invoke(self, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``FunctionTool.invoke``: every tool call of the function-calling loop (and direct ones)."""

        @functools.wraps(original)
        async def invoke(tool: Any, *args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return await original(tool, *args, **kwargs)
            name = str(getattr(tool, "name", type(tool).__name__))
            call_id = kwargs.get("tool_call_id")
            span = self.start_span(
                f"{GenAIOperationNames.EXECUTE_TOOL} {name}",
                {
                    GenAIAttributes.OPERATION_NAME: GenAIOperationNames.EXECUTE_TOOL,
                    GenAIAttributes.TOOL_NAME: name,
                    GenAIAttributes.TOOL_CALL_ID: call_id if isinstance(call_id, str) else None,
                    GenAIAttributes.TOOL_CALL_ARGUMENTS: _arguments(kwargs.get("arguments")),
                },
            )
            try:
                with _current(span, None):
                    result = await original(tool, *args, **kwargs)
            except Exception as exc:
                _record_error(span, exc)
                span.end()
                raise
            try:
                span.set_attribute(GenAIAttributes.TOOL_CALL_RESULT, _tool_result_text(result))
            except Exception:  # a result we cannot render: the span still ends
                logger.debug("could not render the result of tool %s", name, exc_info=True)
            span.end()
            return result

        return invoke

    # -- LLM calls -----------------------------------------------------------------------------------

    def start_chat(self, context: ChatContext) -> trace_api.Span:
        options: Mapping[str, Any] = context.options or {}
        client_kwargs: Mapping[str, Any] = context.kwargs or {}
        model = client_kwargs.get("model") or options.get("model") or getattr(context.client, "model", None)
        # The client puts the agent's instructions first, as system messages, after all middleware.
        instructions = options.get("instructions")
        if isinstance(instructions, str):
            instructions = [instructions]
        system = [{"role": "system", "content": text} for text in instructions or () if isinstance(text, str)]
        request: Dict[str, Any] = {"model": model, "messages": [*system, *openai_messages(context.messages)]}
        tools = _tool_definitions(options.get("tools"))
        if tools:
            request["tools"] = tools
        attributes: Dict[str, Any] = {
            GenAIAttributes.OPERATION_NAME: GenAIOperationNames.CHAT,
            GenAIAttributes.PROVIDER_NAME: getattr(context.client, "OTEL_PROVIDER_NAME", None),
            GenAIAttributes.REQUEST_MODEL: model,
            LLMCallAttributes.STREAM: bool(context.stream),
        }
        for key, attribute in _REQUEST_PARAMS.items():
            value = options.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                request[key] = attributes[attribute] = value
        request.update({key: options[key] for key in _OTHER_PARAMS if options.get(key) is not None})
        if context.stream:
            request["stream"] = True
        attributes[LLMCallAttributes.REQUEST] = _dumps(request)
        return self.start_span(f"{GenAIOperationNames.CHAT} {model or ''}".strip(), attributes)

    @staticmethod
    def finish_chat(span: trace_api.Span, response: Any) -> None:
        try:
            body = _response_body(response)
            usage = getattr(response, "usage_details", None) or {}
            choices = body.get("choices") or []
            response_id = getattr(response, "response_id", None) or body.get("id")
            attributes = {
                LLMCallAttributes.RESPONSE: _dumps(body),
                GenAIAttributes.RESPONSE_ID: response_id if isinstance(response_id, str) else None,
                GenAIAttributes.RESPONSE_MODEL: getattr(response, "model", None) or body.get("model"),
                GenAIAttributes.RESPONSE_FINISH_REASONS: [
                    str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason")
                ]
                or None,
                GenAIAttributes.USAGE_INPUT_TOKENS: _int_or_none(usage.get("input_token_count")),
                GenAIAttributes.USAGE_OUTPUT_TOKENS: _int_or_none(usage.get("output_token_count")),
            }
            span.set_attributes({key: value for key, value in attributes.items() if value is not None})
        except Exception:  # a response we cannot read: the span still ends
            logger.debug("could not record an Agent Framework chat response", exc_info=True)
        finally:
            span.end()


def _tool_result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, list):  # list[Content]: the texts the model will see
        texts = [getattr(item, "text", None) for item in result]
        if texts and all(isinstance(text, str) for text in texts):
            return "".join(texts)  # type: ignore[arg-type]
        return _dumps([item.to_dict() if hasattr(item, "to_dict") else item for item in result])
    return _dumps(result)


def _end_with_stream(
    stream: Any, span: trace_api.Span, agent_name: Optional[str], finish: Callable[[trace_api.Span, Any], None]
) -> Any:
    """Keep ``span`` current while ``stream`` is pulled, and finish it when the stream is done."""
    state = {"open": True}

    def end_once(response: Any, error: Optional[BaseException]) -> None:
        if not state["open"]:
            return
        state["open"] = False
        if error is not None:
            _record_error(span, error)
            span.end()
        else:
            finish(span, response)

    async def on_cleanup() -> None:
        error = getattr(stream, "_stream_error", None)
        if isinstance(error, Exception):
            end_once(None, error)
            return
        try:
            response = await stream.get_final_response()
        except Exception as exc:
            end_once(None, exc)
        else:
            end_once(response, None)

    stream.with_pull_context_manager(lambda: _current(span, agent_name)).with_cleanup_hook(on_cleanup)
    weakref.finalize(stream, _end_if_open, state, span)  # a stream dropped unread still ends its span
    return stream


def _end_if_open(state: Dict[str, bool], span: trace_api.Span) -> None:
    if state["open"]:
        state["open"] = False
        span.end()


class LightningChatMiddleware(ChatMiddleware):
    """Chat middleware recording each LLM call (see the module docstring)."""

    def __init__(self, recorder: AgentFrameworkRecorder) -> None:
        self.recorder = recorder

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        if not self.recorder.active:
            await call_next()
            return
        span = self.recorder.start_chat(context)
        try:
            with _current(span, None):  # the framework's own chat span nests under ours
                await call_next()
        except Exception as exc:
            _record_error(span, exc)
            span.end()
            raise
        result = context.result
        if isinstance(result, ResponseStream):
            context.result = _end_with_stream(result, span, None, self.recorder.finish_chat)
        else:
            self.recorder.finish_chat(span, result)


class LightningAgentMiddleware(AgentMiddleware):
    """Agent middleware recording each agent run as the span its calls nest under."""

    def __init__(self, recorder: AgentFrameworkRecorder) -> None:
        self.recorder = recorder

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        if not self.recorder.active:
            await call_next()
            return
        agent = context.agent
        name = str(getattr(agent, "name", None) or getattr(agent, "id", None) or type(agent).__name__)
        span = self.recorder.start_span(
            f"{GenAIOperationNames.INVOKE_AGENT} {name}",
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT,
                GenAIAttributes.AGENT_NAME: name,
                FrameworkAttributes.STEP_NAME: name,
                FrameworkAttributes.RUN_ID: getattr(agent, "id", None),
            },
        )
        try:
            with _current(span, name):
                await call_next()
        except Exception as exc:
            _record_error(span, exc)
            span.end()
            raise
        result = context.result
        if isinstance(result, ResponseStream):
            context.result = _end_with_stream(result, span, name, lambda s, _response: s.end())
        else:
            span.end()
