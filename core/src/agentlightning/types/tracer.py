"""Span model: a JSON-friendly copy of an OpenTelemetry span plus rollout/attempt/sequence ids."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from opentelemetry.sdk.trace import ReadableSpan
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Span",
    "SpanCoreFields",
    "SpanRecordingContext",
    "SpanContext",
    "TraceStatus",
    "Event",
    "Link",
    "OtelResource",
    "Attributes",
    "AttributeValue",
    "TraceState",
    "StatusCode",
    "SpanLike",
    "SpanNames",
    "SpanAttributeNames",
]

AttributeValue = Union[str, bool, int, float, Sequence[Union[str, bool, int, float, None]], None]
Attributes = Dict[str, Any]
TraceState = Dict[str, str]
StatusCode = str  # "UNSET" | "OK" | "ERROR"

_STATUS_NAMES = ("UNSET", "OK", "ERROR")


def _hex_trace_id(value: int) -> str:
    return format(value, "032x")


def _hex_span_id(value: int) -> str:
    return format(value, "016x")


def _seconds(ns: Optional[int]) -> Optional[float]:
    if ns is None:
        return None
    # OpenTelemetry uses epoch nanoseconds; stored spans use epoch seconds.
    return ns / 1e9 if ns > 1e12 else float(ns)


class SpanContext(BaseModel):
    trace_id: str
    span_id: str
    is_remote: bool = False
    trace_state: TraceState = Field(default_factory=dict)


class TraceStatus(BaseModel):
    status_code: StatusCode = "UNSET"
    description: Optional[str] = None


class Event(BaseModel):
    name: str
    attributes: Attributes = Field(default_factory=dict)
    timestamp: Optional[float] = None


class Link(BaseModel):
    context: SpanContext
    attributes: Optional[Attributes] = None


class OtelResource(BaseModel):
    attributes: Attributes = Field(default_factory=dict)
    schema_url: str = ""


class SpanCoreFields(BaseModel):
    """The fields an emitter decides: name, attributes, timing and status."""

    name: str
    attributes: Attributes = Field(default_factory=dict)
    start_time: Optional[float] = None
    end_time: Optional[float] = None
    status: TraceStatus = Field(default_factory=TraceStatus)


class Span(BaseModel):
    """A stored span. ``(rollout_id, attempt_id, span_id)`` is unique; ``sequence_id`` orders spans in a rollout."""

    model_config = ConfigDict(extra="allow")

    rollout_id: str
    attempt_id: str
    sequence_id: int
    trace_id: str
    span_id: str
    parent_id: Optional[str] = None
    name: str
    status: TraceStatus = Field(default_factory=TraceStatus)
    attributes: Attributes = Field(default_factory=dict)
    events: List[Event] = Field(default_factory=list)
    links: List[Link] = Field(default_factory=list)
    start_time: Optional[float] = None
    end_time: Optional[float] = None
    context: Optional[SpanContext] = None
    parent: Optional[SpanContext] = None
    resource: OtelResource = Field(default_factory=OtelResource)

    @classmethod
    def from_opentelemetry(cls, src: ReadableSpan, rollout_id: str, attempt_id: str, sequence_id: int) -> "Span":
        ctx = src.get_span_context()
        trace_id = _hex_trace_id(ctx.trace_id) if ctx is not None else secrets.token_hex(16)
        span_id = _hex_span_id(ctx.span_id) if ctx is not None else secrets.token_hex(8)
        parent = src.parent
        status_code = _STATUS_NAMES[src.status.status_code.value] if src.status is not None else "UNSET"
        return cls(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            trace_id=trace_id,
            span_id=span_id,
            parent_id=_hex_span_id(parent.span_id) if parent is not None else None,
            name=src.name,
            status=TraceStatus(status_code=status_code, description=src.status.description if src.status else None),
            attributes=dict(src.attributes or {}),
            events=[
                Event(name=e.name, attributes=dict(e.attributes or {}), timestamp=_seconds(e.timestamp))
                for e in src.events
            ],
            links=[
                Link(
                    context=SpanContext(
                        trace_id=_hex_trace_id(link.context.trace_id), span_id=_hex_span_id(link.context.span_id)
                    ),
                    attributes=dict(link.attributes or {}),
                )
                for link in src.links
            ],
            start_time=_seconds(src.start_time),
            end_time=_seconds(src.end_time),
            context=SpanContext(
                trace_id=trace_id,
                span_id=span_id,
                is_remote=bool(ctx.is_remote) if ctx is not None else False,
                trace_state=dict(ctx.trace_state) if ctx is not None and ctx.trace_state else {},
            ),
            parent=(
                SpanContext(
                    trace_id=_hex_trace_id(parent.trace_id),
                    span_id=_hex_span_id(parent.span_id),
                    is_remote=bool(parent.is_remote),
                )
                if parent is not None
                else None
            ),
            resource=OtelResource(
                attributes=dict(src.resource.attributes) if src.resource is not None else {},
                schema_url=(src.resource.schema_url or "") if src.resource is not None else "",
            ),
        )

    @classmethod
    def from_core_fields(
        cls,
        core: SpanCoreFields,
        *,
        rollout_id: str,
        attempt_id: str,
        sequence_id: int,
        trace_id: Optional[str] = None,
        span_id: Optional[str] = None,
        parent_id: Optional[str] = None,
    ) -> "Span":
        now = time.time()
        trace_id = trace_id or secrets.token_hex(16)
        span_id = span_id or secrets.token_hex(8)
        return cls(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id,
            name=core.name,
            status=core.status,
            attributes=dict(core.attributes),
            start_time=core.start_time if core.start_time is not None else now,
            end_time=core.end_time if core.end_time is not None else now,
            context=SpanContext(trace_id=trace_id, span_id=span_id),
        )

    @classmethod
    def from_attributes(
        cls,
        *,
        attributes: Mapping[str, Any],
        rollout_id: Optional[str] = None,
        attempt_id: Optional[str] = None,
        sequence_id: Optional[int] = None,
        name: Optional[str] = None,
        trace_id: Optional[str] = None,
        span_id: Optional[str] = None,
        parent_id: Optional[str] = None,
        start_time: Optional[float] = None,
        end_time: Optional[float] = None,
    ) -> "Span":
        """A synthetic span (e.g. a virtual node an adapter inserts)."""
        core = SpanCoreFields(
            name=name or "agentlightning.virtual",
            attributes=dict(attributes),
            start_time=start_time,
            end_time=end_time,
            status=TraceStatus(status_code="OK"),
        )
        return cls.from_core_fields(
            core,
            rollout_id=rollout_id or "rollout-dummy",
            attempt_id=attempt_id or "attempt-dummy",
            sequence_id=sequence_id if sequence_id is not None else 0,
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id,
        )


SpanLike = Union[ReadableSpan, Span]


class SpanRecordingContext(ABC):
    """Handle on a span being recorded by ``Tracer.operation_context``."""

    @abstractmethod
    def record_exception(self, exception: BaseException) -> None: ...

    @abstractmethod
    def record_attributes(self, attributes: Attributes) -> None: ...

    @abstractmethod
    def record_status(self, status_code: StatusCode, description: Optional[str] = None) -> None: ...

    @abstractmethod
    def get_recorded_span(self) -> SpanCoreFields: ...


class SpanNames(str, Enum):
    """Deprecated; use :mod:`agentlightning.semconv`."""

    REWARD = "agentlightning.reward"
    MESSAGE = "agentlightning.message"
    OBJECT = "agentlightning.object"
    EXCEPTION = "agentlightning.exception"
    VIRTUAL = "agentlightning.virtual"
    ROLLOUT_ID = "agentlightning.rollout_id"
    ATTEMPT_ID = "agentlightning.attempt_id"
    SPAN_SEQUENCE_ID = "agentlightning.span_sequence_id"


class SpanAttributeNames(str, Enum):
    """Deprecated; use :mod:`agentlightning.semconv`."""

    MESSAGE = "message"
    OBJECT = "object"
