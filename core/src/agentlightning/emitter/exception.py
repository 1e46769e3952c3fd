"""``emit_exception``: record an exception the agent handled (or is about to raise)."""

from __future__ import annotations

from typing import Optional

from agentlightning.semconv import AGL_EXCEPTION
from agentlightning.types.tracer import Attributes, SpanCoreFields, TraceStatus
from agentlightning.utils.otel import format_exception_attributes

from ._common import resolve_tracer

__all__ = ["emit_exception"]


def emit_exception(
    exc: BaseException, attributes: Optional[Attributes] = None, propagate: bool = True
) -> SpanCoreFields:
    """Record ``exc`` as an ``agentlightning.exception`` span with status ERROR.

    Attributes follow the OpenTelemetry conventions: ``exception.type``, ``exception.message``,
    ``exception.stacktrace`` and ``exception.escaped``.
    """
    if not isinstance(exc, BaseException):
        raise TypeError(f"emit_exception expects an exception, got {type(exc).__name__}")
    merged: Attributes = {**(attributes or {}), **format_exception_attributes(exc)}
    status = TraceStatus(status_code="ERROR", description=str(exc) or type(exc).__name__)
    tracer = resolve_tracer(propagate, "emit_exception()")
    return tracer.create_span(AGL_EXCEPTION, attributes=merged, status=status)
