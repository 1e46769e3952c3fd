"""What every emitter shares: finding the tracer to record with."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from agentlightning.tracer.base import Tracer, get_active_tracer
from agentlightning.tracer.dummy import DummyTracer

__all__ = ["resolve_tracer", "span_attributes", "span_name"]

# Shared by every propagate=False call; it never enters a trace context, so it keeps nothing.
_detached_tracer = DummyTracer()


def resolve_tracer(propagate: bool, what: str) -> Tracer:
    if not propagate:
        return _detached_tracer
    tracer = get_active_tracer()
    if tracer is None:
        raise RuntimeError(
            f"{what} needs an active tracer, and there is none: call it inside "
            "`async with tracer.trace_context(...)` (runners do this around every rollout), set a process-wide "
            "tracer with agentlightning.set_active_tracer(tracer), or pass propagate=False to only build the span."
        )
    return tracer


def span_attributes(span: Any) -> Mapping[str, Any]:
    """Attributes of a stored Span, an OpenTelemetry ReadableSpan or SpanCoreFields."""
    attributes: Optional[Mapping[str, Any]] = getattr(span, "attributes", None)
    return attributes if attributes is not None else {}


def span_name(span: Any) -> Optional[str]:
    name = getattr(span, "name", None)
    return name if isinstance(name, str) else None
