"""Wrappers around AutoGen's agents, model client and tools that record them as OpenTelemetry spans.

Imports ``autogen_core``; only :mod:`agentlightning_autogen.instrumentor` imports this module, and only
once the framework is known to be installed.

What becomes a span:

* every turn of an AgentChat agent (``on_messages_stream``, which ``run``, ``run_stream``,
  ``on_messages`` and teams all go through): ``invoke_agent <agent name>``;
* every call of an OpenAI model client (``OpenAIChatCompletionClient``, ``AzureOpenAIChatCompletionClient``),
  ``create`` and ``create_stream``: ``chat <model>`` with the request as sent (wire messages, tools,
  parameters), the response (the raw chat completion for a call that is not streamed, as AutoGen logs
  it in its ``LLMCallEvent``; assembled from the stream otherwise), usage and the provider's response
  id (the key that joins the LLM proxy's span of the same call, which holds the token ids);
* every tool run (``BaseTool.run_json``): ``execute_tool <tool>`` with arguments, call id, result or
  the exception the tool raised.

Each LLM and tool span names the agent it runs under (``gen_ai.agent.name``, so ``agent_match``
selects agents of a team). The agent's span is the current OpenTelemetry span while the agent works,
so LLM and tool spans nest under it; AutoGen's own OpenTelemetry spans nest there too. The rollout
is the one whose trace context is current when a span starts: AutoGen runs teams in tasks that
inherit the caller's context.
"""

from __future__ import annotations

import functools
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Callable, Coroutine, Dict, Mapping, Optional

from autogen_core.logging import LLMCallEvent
from autogen_core.models import CreateResult
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import Status, StatusCode

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.tracer import span_tracer
from agentlightning.utils.otel import payload_json as _dumps

__all__ = ["FRAMEWORK_NAME", "AutoGenRecorder", "LLMEventFilter"]

logger = logging.getLogger(__name__)

FRAMEWORK_NAME = "autogen"
TRACER_NAME = "agentlightning.autogen"
# Request parameters that also have a gen_ai.request.* attribute.
_REQUEST_PARAMS = (
    ("temperature", GenAIAttributes.REQUEST_TEMPERATURE),
    ("top_p", GenAIAttributes.REQUEST_TOP_P),
    ("max_tokens", GenAIAttributes.REQUEST_MAX_TOKENS),
    ("seed", GenAIAttributes.REQUEST_SEED),
)


@dataclass
class _AgentTurn:
    name: str
    context: context_api.Context  # the turn's span is current in it


class _LLMCall:
    """One model client call while it runs: what the wrappers and the event filter learn about it."""

    __slots__ = ("completion", "params", "response_id", "response_model", "result", "span", "stream")

    def __init__(self, span: trace_api.Span, stream: bool) -> None:
        self.span = span
        self.stream = stream
        self.params: Any = None  # AutoGen's CreateParams: wire messages, tools, create args
        self.completion: Optional[Dict[str, Any]] = None  # the raw chat completion (not streamed)
        self.result: Optional[CreateResult] = None  # what a stream ended with
        self.response_id: Optional[str] = None  # a stream's, from its chunks
        self.response_model: Optional[str] = None


# The agent turn and the model call running in this task (AutoGen's runtime tasks inherit them).
_current_turn: ContextVar[Optional[_AgentTurn]] = ContextVar("agentlightning_autogen_turn", default=None)
_current_call: ContextVar[Optional[_LLMCall]] = ContextVar("agentlightning_autogen_call", default=None)


def _record_error(span: trace_api.Span, error: BaseException) -> None:
    span.set_attribute(GenAIAttributes.ERROR_TYPE, type(error).__qualname__)
    status_code = getattr(error, "status_code", None)
    if isinstance(status_code, int):
        span.set_attribute(LLMCallAttributes.HTTP_STATUS, status_code)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _streamed_body(call: _LLMCall) -> Optional[Dict[str, Any]]:
    """A chat-completion-shaped body for a streamed call, from the result AutoGen assembled."""
    result = call.result
    if result is None:
        return None
    message: Dict[str, Any] = {"role": "assistant", "content": None}
    if isinstance(result.content, str):
        message["content"] = result.content
    else:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.content
        ]
    if result.thought:
        message["reasoning_content"] = result.thought
    return {
        "id": call.response_id,
        "object": "chat.completion",
        "model": call.response_model,
        "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "total_tokens": result.usage.prompt_tokens + result.usage.completion_tokens,
        },
    }


class LLMEventFilter(logging.Filter):
    """Takes the raw chat completion from AutoGen's ``LLMCallEvent`` for the call running in this task.

    A filter on AutoGen's event logger rather than a handler: the instrumentor lowers that logger to
    INFO so the events are created at all, and the filter lets through only the records the logger's
    own level would have let through before, so handlers a user has see exactly what they saw.
    """

    def __init__(self, passes_from: int) -> None:
        super().__init__()
        self.passes_from = passes_from

    def filter(self, record: logging.LogRecord) -> bool:
        event = record.msg
        if isinstance(event, LLMCallEvent):
            call = _current_call.get()
            response = event.kwargs.get("response")
            if call is not None and isinstance(response, dict):
                call.completion = response
        return record.levelno >= self.passes_from


class AutoGenRecorder:
    """Builds the wrappers the instrumentor installs; one instance serves every rollout of the process.

    ``active`` is off while the adapter is not instrumented, so a wrapper left in place (a bound
    method taken before ``uninstrument()``) records nothing.
    """

    def __init__(self, framework_name: str = FRAMEWORK_NAME) -> None:
        self.framework_name = framework_name
        self.active = False
        self._tracer = span_tracer(TRACER_NAME)

    def _start_span(
        self, name: str, attributes: Dict[str, Any], parent: Optional[context_api.Context] = None
    ) -> trace_api.Span:
        attributes[FrameworkAttributes.FRAMEWORK] = self.framework_name
        clean = {key: value for key, value in attributes.items() if value is not None}
        return self._tracer.start_span(name, context=parent, attributes=clean)

    @staticmethod
    def _agent_attributes(attributes: Dict[str, Any]) -> Dict[str, Any]:
        turn = _current_turn.get()
        if turn is not None:
            attributes[GenAIAttributes.AGENT_NAME] = turn.name
            attributes[FrameworkAttributes.STEP_NAME] = turn.name
        return attributes

    # -- agents ------------------------------------------------------------------------------------

    def wrap_agent_stream(self, original: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., Any]:
        """``on_messages_stream`` of an AgentChat agent class."""

        @functools.wraps(original)
        def on_messages_stream(agent: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            steps = original(agent, *args, **kwargs)
            return self._agent_turn(agent, steps) if self.active else steps

        return on_messages_stream

    async def _agent_turn(self, agent: Any, steps: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        name = str(getattr(agent, "name", type(agent).__name__))
        span = self._start_span(
            f"{GenAIOperationNames.INVOKE_AGENT} {name}",
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.INVOKE_AGENT,
                GenAIAttributes.AGENT_NAME: name,
                FrameworkAttributes.STEP_NAME: name,
                FrameworkAttributes.RUN_ID: str(getattr(agent, "id", "")) or None,
            },
        )
        turn = _AgentTurn(name, trace_api.set_span_in_context(span))
        try:
            while True:
                # The turn is current only while the agent itself runs, never across our yield: the
                # consumer's context stays as it was (an async generator shares its caller's context).
                otel_token = context_api.attach(turn.context)
                turn_token = _current_turn.set(turn)
                try:
                    item = await steps.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    _current_turn.reset(turn_token)
                    context_api.detach(otel_token)
                yield item
        except Exception as exc:
            _record_error(span, exc)
            raise
        finally:
            await steps.aclose()
            span.end()

    # -- model calls -------------------------------------------------------------------------------

    def _start_call(self, client: Any, kwargs: Mapping[str, Any], stream: bool) -> _LLMCall:
        create_args: Mapping[str, Any] = getattr(client, "_create_args", None) or {}
        extra: Mapping[str, Any] = kwargs.get("extra_create_args") or {}
        model = extra.get("model") or create_args.get("model")
        attributes = self._agent_attributes(
            {
                GenAIAttributes.OPERATION_NAME: GenAIOperationNames.CHAT,
                GenAIAttributes.PROVIDER_NAME: "openai",
                GenAIAttributes.REQUEST_MODEL: model,
                LLMCallAttributes.STREAM: stream,
            }
        )
        turn = _current_turn.get()
        span = self._start_span(
            f"{GenAIOperationNames.CHAT} {model or ''}".strip(),
            attributes,
            turn.context if turn is not None else None,
        )
        return _LLMCall(span, stream)

    def _end_call(self, call: _LLMCall, error: Optional[BaseException]) -> None:
        span = call.span
        try:
            attributes: Dict[str, Any] = {}
            params = call.params
            if params is not None:
                request: Dict[str, Any] = dict(params.create_args)
                request["messages"] = params.messages
                if params.tools:
                    request["tools"] = params.tools
                if call.stream:
                    request["stream"] = True
                attributes[LLMCallAttributes.REQUEST] = _dumps(request)
                for key, attribute in _REQUEST_PARAMS:
                    value = params.create_args.get(key)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        attributes[attribute] = value
            body = call.completion if call.completion is not None else _streamed_body(call)
            if body is not None and error is None:
                usage = body.get("usage") or {}
                choices = body.get("choices") or []
                attributes.update(
                    {
                        LLMCallAttributes.RESPONSE: _dumps(body),
                        GenAIAttributes.RESPONSE_ID: body.get("id"),
                        GenAIAttributes.RESPONSE_MODEL: body.get("model"),
                        GenAIAttributes.RESPONSE_FINISH_REASONS: [
                            str(c["finish_reason"]) for c in choices if isinstance(c, dict) and c.get("finish_reason")
                        ]
                        or None,
                        GenAIAttributes.USAGE_INPUT_TOKENS: _int_or_none(usage.get("prompt_tokens")),
                        GenAIAttributes.USAGE_OUTPUT_TOKENS: _int_or_none(usage.get("completion_tokens")),
                    }
                )
            span.set_attributes({key: value for key, value in attributes.items() if value is not None})
            if error is not None:
                _record_error(span, error)
        except Exception:  # a call we cannot read must still end
            logger.debug("could not record an AutoGen model call", exc_info=True)
        finally:
            span.end()

    def wrap_process_create_args(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``BaseOpenAIChatCompletionClient._process_create_args``: the request as it goes on the wire."""

        @functools.wraps(original)
        def process_create_args(client: Any, *args: Any, **kwargs: Any) -> Any:
            params = original(client, *args, **kwargs)
            call = _current_call.get()
            if call is not None and call.params is None:
                call.params = params  # read when the call ends: streams add stream_options after this
            return params

        return process_create_args

    def wrap_create(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """``BaseOpenAIChatCompletionClient.create``."""

        @functools.wraps(original)
        async def create(client: Any, *args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return await original(client, *args, **kwargs)
            call = self._start_call(client, kwargs, stream=False)
            token = _current_call.set(call)
            try:
                result = await original(client, *args, **kwargs)
            except BaseException as exc:
                self._end_call(call, exc if isinstance(exc, Exception) else None)
                raise
            finally:
                _current_call.reset(token)
            self._end_call(call, None)
            return result

        return create

    def wrap_create_stream(self, original: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., Any]:
        """``BaseOpenAIChatCompletionClient.create_stream``."""

        @functools.wraps(original)
        def create_stream(client: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            chunks = original(client, *args, **kwargs)
            return self._streamed_call(client, kwargs, chunks) if self.active else chunks

        return create_stream

    async def _streamed_call(
        self, client: Any, kwargs: Mapping[str, Any], chunks: AsyncGenerator[Any, None]
    ) -> AsyncGenerator[Any, None]:
        call = self._start_call(client, kwargs, stream=True)
        error: Optional[BaseException] = None
        try:
            while True:
                token = _current_call.set(call)  # never across the yield (see _agent_turn)
                try:
                    item = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    _current_call.reset(token)
                if isinstance(item, CreateResult):
                    call.result = item
                yield item
        except Exception as exc:
            error = exc
            raise
        finally:
            await chunks.aclose()
            self._end_call(call, error)

    def wrap_stream_chunks(self, original: Callable[..., AsyncGenerator[Any, None]]) -> Callable[..., Any]:
        """``BaseOpenAIChatCompletionClient._create_stream_chunks``: the stream's response id and model."""

        @functools.wraps(original)
        def stream_chunks(client: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            chunks = original(client, *args, **kwargs)
            call = _current_call.get()  # create_stream asks for the chunks while its call is current
            return _noting_ids(chunks, call) if call is not None else chunks

        return stream_chunks

    # -- tools -------------------------------------------------------------------------------------

    def wrap_run_json(self, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
        """``BaseTool.run_json``: every tool an agent or workbench runs."""

        @functools.wraps(original)
        async def run_json(tool: Any, args: Mapping[str, Any], *rest: Any, **kwargs: Any) -> Any:
            if not self.active:
                return await original(tool, args, *rest, **kwargs)
            call_id = kwargs.get("call_id", rest[1] if len(rest) > 1 else None)
            name = str(getattr(tool, "name", type(tool).__name__))
            turn = _current_turn.get()
            span = self._start_span(
                f"{GenAIOperationNames.EXECUTE_TOOL} {name}",
                self._agent_attributes(
                    {
                        GenAIAttributes.OPERATION_NAME: GenAIOperationNames.EXECUTE_TOOL,
                        GenAIAttributes.TOOL_NAME: name,
                        GenAIAttributes.TOOL_CALL_ID: call_id if isinstance(call_id, str) else None,
                        GenAIAttributes.TOOL_CALL_ARGUMENTS: _dumps(dict(args)),
                    }
                ),
                turn.context if turn is not None else None,
            )
            token = context_api.attach(trace_api.set_span_in_context(span))
            try:
                result = await original(tool, args, *rest, **kwargs)
            except Exception as exc:
                _record_error(span, exc)
                raise
            else:
                try:
                    span.set_attribute(GenAIAttributes.TOOL_CALL_RESULT, tool.return_value_as_string(result))
                except Exception:  # a result the tool cannot render: the span still ends
                    logger.debug("could not render the result of tool %s", name, exc_info=True)
                return result
            finally:
                context_api.detach(token)
                span.end()

        return run_json


async def _noting_ids(chunks: AsyncGenerator[Any, None], call: _LLMCall) -> AsyncGenerator[Any, None]:
    try:
        async for chunk in chunks:
            if call.response_id is None and isinstance(getattr(chunk, "id", None), str) and chunk.id:
                call.response_id = chunk.id
            model = getattr(chunk, "model", None)
            if isinstance(model, str) and model:
                call.response_model = model
            yield chunk
    finally:
        await chunks.aclose()
