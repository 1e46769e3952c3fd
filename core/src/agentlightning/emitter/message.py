"""``emit_message``: a free-text log line recorded as a span."""

from __future__ import annotations

from typing import Any, Optional

from agentlightning.semconv import AGL_MESSAGE, LightningSpanAttributes
from agentlightning.types.tracer import Attributes, SpanCoreFields, TraceStatus

from ._common import resolve_tracer, span_attributes, span_name

__all__ = ["emit_message", "get_message_value"]


def emit_message(message: str, attributes: Optional[Attributes] = None, propagate: bool = True) -> SpanCoreFields:
    """Record ``message`` as an ``agentlightning.message`` span (body in ``agentlightning.message.body``)."""
    body = message if isinstance(message, str) else str(message)
    merged: Attributes = {**(attributes or {}), LightningSpanAttributes.MESSAGE_BODY: body}
    tracer = resolve_tracer(propagate, "emit_message()")
    return tracer.create_span(AGL_MESSAGE, attributes=merged, status=TraceStatus(status_code="OK"))


def get_message_value(span: Any) -> Optional[str]:
    """The body of a message span; ``None`` for any other span."""
    if span_name(span) != AGL_MESSAGE:
        return None
    body = span_attributes(span).get(LightningSpanAttributes.MESSAGE_BODY)
    return None if body is None else str(body)
