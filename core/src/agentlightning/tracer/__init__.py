"""Tracers: record what an agent does during a rollout attempt and deliver the spans to the store."""

from __future__ import annotations

from .agentops import AgentOpsTracer
from .base import Tracer, clear_active_tracer, get_active_tracer, set_active_tracer
from .dummy import DummyTracer
from .otel import OtelTracer, span_tracer

__all__ = [
    "Tracer",
    "OtelTracer",
    "AgentOpsTracer",
    "DummyTracer",
    "get_active_tracer",
    "set_active_tracer",
    "clear_active_tracer",
    "span_tracer",
]
