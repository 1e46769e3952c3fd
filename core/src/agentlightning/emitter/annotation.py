"""``emit_annotation``: attach arbitrary structured data to a rollout as one span."""

from __future__ import annotations

from typing import Any, Mapping

from agentlightning.semconv import AGL_ANNOTATION
from agentlightning.types.tracer import SpanCoreFields, TraceStatus
from agentlightning.utils.otel import flatten_attributes, sanitize_attributes

from ._common import resolve_tracer

__all__ = ["emit_annotation"]


def emit_annotation(annotation: Mapping[str, Any], propagate: bool = True) -> SpanCoreFields:
    """Record ``annotation`` as an ``agentlightning.annotation`` span (status OK, zero duration).

    Nested values are flattened to dotted keys (``{"a": [{"b": 1}]}`` -> ``a.0.b``), values
    OpenTelemetry cannot hold become JSON text, ``None`` values are dropped. ``TypeError`` for a
    non-mapping, ``ValueError`` for clashing keys, ``RuntimeError`` when ``propagate`` finds no tracer.
    """
    if not isinstance(annotation, Mapping):
        raise TypeError(f"emit_annotation expects a mapping, got {type(annotation).__name__}")
    attributes = sanitize_attributes(flatten_attributes(annotation))
    tracer = resolve_tracer(propagate, "emit_annotation()")
    return tracer.create_span(AGL_ANNOTATION, attributes=attributes, status=TraceStatus(status_code="OK"))
