"""Span model: a JSON-friendly copy of an OpenTelemetry span plus rollout/attempt/sequence ids."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

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


M = TypeVar("M", bound=BaseModel)

# Several models per stored span go through construct_valid: what it needs per class is looked up once, and
# pydantic's state slots are set through their descriptors (skipping its __setattr__ and the lookup by name).
_set_slot = object.__setattr__
_class_facts: Dict[type, Tuple[Any, bool]] = {}  # class -> (its __new__, whether it allows extra fields)
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


def construct_valid(cls: Type[M], fields: Dict[str, Any]) -> M:
    """A model from fields known to be valid, without validation (hot paths; ~20x ``model_construct``).

    ``fields`` must name every field; extra fields of models that allow them are not supported."""
    facts = _class_facts.get(cls) or _class_facts.setdefault(
        cls, (cls.__new__, cls.model_config.get("extra") == "allow")
    )
    model: M = facts[0](cls)
    _set_slot(model, "__dict__", fields)
    _SET_FIELDS_SET(model, set(fields))
    _SET_EXTRA(model, {} if facts[1] else None)
    _SET_PRIVATE(model, None)
    return model


def _json_attributes(attributes: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """OpenTelemetry attributes as stored: the SDK keeps sequences as tuples, stored spans use JSON lists."""
    if not attributes:
        return {}
    # The SDK's BoundedAttributes hands out items one by one under a lock; its plain dict reads at C speed.
    plain = getattr(attributes, "_dict", None)
    items = plain.items() if isinstance(plain, dict) else attributes.items()
    return {key: list(value) if type(value) is tuple else value for key, value in items}


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


def stored_span_context(trace_id: int, span_id: int, is_remote: bool) -> SpanContext:
    """An OpenTelemetry span context as stored (hex ids, no trace state)."""
    return construct_valid(
        SpanContext,
        {
            "trace_id": _hex_trace_id(trace_id),
            "span_id": _hex_span_id(span_id),
            "is_remote": bool(is_remote),
            "trace_state": {},
        },
    )


def stored_event(name: str, attributes: Attributes, timestamp: Optional[float]) -> Event:
    return construct_valid(Event, {"name": name, "attributes": attributes, "timestamp": timestamp})


def stored_link(context: Any, attributes: Attributes) -> Link:
    """An OpenTelemetry link (to the span ``context`` names) as stored."""
    span_context = stored_span_context(context.trace_id, context.span_id, context.is_remote)
    return construct_valid(Link, {"context": span_context, "attributes": attributes})


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
        """A stored span from an ended OpenTelemetry SDK span (sequences become lists, times seconds).

        Every span an agent records passes here, so it is built without validation: the SDK has
        already checked each value.
        """
        ctx = src.get_span_context()
        trace_id = _hex_trace_id(ctx.trace_id) if ctx is not None else secrets.token_hex(16)
        span_id = _hex_span_id(ctx.span_id) if ctx is not None else secrets.token_hex(8)
        parent = src.parent
        status = src.status
        status_fields = {
            "status_code": _STATUS_NAMES[status.status_code.value] if status is not None else "UNSET",
            "description": status.description if status is not None else None,
        }
        resource = src.resource
        return construct_valid(
            cls,
            {
                "rollout_id": rollout_id,
                "attempt_id": attempt_id,
                "sequence_id": sequence_id,
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_id": _hex_span_id(parent.span_id) if parent is not None else None,
                "name": src.name,
                "status": construct_valid(TraceStatus, status_fields),
                "attributes": _json_attributes(src.attributes),
                "events": [
                    stored_event(e.name, _json_attributes(e.attributes), _seconds(e.timestamp)) for e in src.events
                ],
                "links": [stored_link(link.context, _json_attributes(link.attributes)) for link in src.links],
                "start_time": _seconds(src.start_time),
                "end_time": _seconds(src.end_time),
                "context": construct_valid(
                    SpanContext,
                    {
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "is_remote": bool(ctx.is_remote) if ctx is not None else False,
                        "trace_state": dict(ctx.trace_state) if ctx is not None and ctx.trace_state else {},
                    },
                ),
                "parent": (
                    stored_span_context(parent.trace_id, parent.span_id, parent.is_remote)
                    if parent is not None
                    else None
                ),
                "resource": construct_valid(
                    OtelResource,
                    {
                        "attributes": _json_attributes(resource.attributes) if resource is not None else {},
                        "schema_url": (resource.schema_url or "") if resource is not None else "",
                    },
                ),
            },
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
