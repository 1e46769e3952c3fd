"""Wrappers around the SDK's model and tool calls that report what its span data lacks.

The SDK's spans leave out the Responses model's name and request, the id of a non-streamed chat
completion, the exception of a failed call (tool errors are redacted to a generic message) and the
tool call id. These wrappers run inside the SDK span of the call (the SDK makes it current) and hand
those to :class:`~agentlightning_openai_agents.processor.LightningTracingProcessor`. They never change
what the SDK does: each calls the original and returns or raises what it returns or raises.

Imports ``agents``; only the instrumentor's ``_instrument()`` imports this module.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Coroutine, Optional

from .processor import LightningTracingProcessor

__all__ = ["wrap_fetch_response", "wrap_from_agent_context", "wrap_tool_failure"]


def wrap_fetch_response(
    original: Callable[..., Coroutine[Any, Any, Any]], processor: LightningTracingProcessor
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``OpenAIChatCompletionsModel._fetch_response`` / ``OpenAIResponsesModel._fetch_response``."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def fetch_response(model: Any, *args: Any, **kwargs: Any) -> Any:
        run = processor.current_run() if processor.active else None
        if run is not None:
            try:
                arguments = signature.bind(model, *args, **kwargs).arguments
            except TypeError:  # a signature this adapter does not know: record what the span has
                arguments = {}
            name = getattr(model, "model", None)
            processor.note_model_request(run, str(name) if name is not None else None, arguments)
        try:
            result = await original(model, *args, **kwargs)
        except Exception as exc:
            if run is not None:
                run.exception = exc
            raise
        if run is not None and getattr(result, "object", None) in ("chat.completion", "response"):
            # The SDK's chat span keeps only the message (not the id, nor vendor fields); its Responses
            # span keeps nothing when sensitive data is off. Streams are read from the span data.
            run.result = result
        return result

    return fetch_response


def wrap_tool_failure(
    original: Callable[..., Coroutine[Any, Any, Any]], processor: LightningTracingProcessor
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``agents.tool.maybe_invoke_function_tool_failure_error_function``: the exception a tool raised."""

    @functools.wraps(original)
    async def on_tool_failure(*args: Any, **kwargs: Any) -> Any:
        run = processor.current_run() if processor.active else None
        error: Optional[BaseException] = kwargs.get("error")
        if run is not None and run.kind == "function" and isinstance(error, BaseException):
            run_config = getattr(kwargs.get("context"), "run_config", None)
            # Respect the run's choice to keep tool data out of traces: the type, not the message.
            if run_config is None or getattr(run_config, "trace_include_sensitive_data", True):
                run.exception = error
        return await original(*args, **kwargs)

    return on_tool_failure


def wrap_from_agent_context(original: Any, processor: LightningTracingProcessor) -> Any:
    """``ToolContext.from_agent_context`` (a classmethod): the SDK builds it with the tool call id."""
    function = original.__func__

    @functools.wraps(function)
    def from_agent_context(cls: Any, context: Any, tool_call_id: str, *args: Any, **kwargs: Any) -> Any:
        run = processor.current_run() if processor.active else None
        if run is not None and run.kind == "function" and isinstance(tool_call_id, str):
            run.tool_call_id = tool_call_id
        return function(cls, context, tool_call_id, *args, **kwargs)

    return classmethod(from_agent_context)
