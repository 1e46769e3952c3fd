"""Adapters turn what the store holds (spans) into what an algorithm learns from."""

from __future__ import annotations

from typing import Generic, List, Sequence, TypeVar

from opentelemetry.sdk.trace import ReadableSpan

from agentlightning.types import Span, Triplet

__all__ = ["Adapter", "TraceAdapter", "OtelTraceAdapter", "TraceToTripletBase"]

T_from = TypeVar("T_from")
T_to = TypeVar("T_to")


class Adapter(Generic[T_from, T_to]):
    """Callable converter: ``adapter(source)`` is ``adapter.adapt(source)``."""

    def __call__(self, source: T_from, /) -> T_to:
        return self.adapt(source)

    def adapt(self, source: T_from, /) -> T_to:
        raise NotImplementedError(f"{type(self).__name__} does not implement adapt()")


class TraceAdapter(Adapter[Sequence[Span], T_to], Generic[T_to]):
    """Adapts the stored spans of one rollout attempt."""


class OtelTraceAdapter(Adapter[Sequence[ReadableSpan], T_to], Generic[T_to]):
    """Adapts raw OpenTelemetry spans."""


class TraceToTripletBase(TraceAdapter[List[Triplet]]):
    """Spans -> one :class:`~agentlightning.Triplet` per trained LLM call."""

    def adapt(self, source: Sequence[Span], /) -> List[Triplet]:  # pragma: no cover - abstract
        raise NotImplementedError
