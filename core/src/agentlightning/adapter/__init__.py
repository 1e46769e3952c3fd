"""Span adapters."""

from .base import Adapter, OtelTraceAdapter, TraceAdapter, TraceToTripletBase

__all__ = ["Adapter", "TraceAdapter", "OtelTraceAdapter", "TraceToTripletBase"]
