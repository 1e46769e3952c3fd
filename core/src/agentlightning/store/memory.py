"""``memory://``: everything in process memory; fastest, gone with the process."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from agentlightning.errors import InvalidSpanError
from agentlightning.types import Link, OtelResource, PaginatedResult, Span, SpanContext, TraceStatus
from agentlightning.types.tracer import stored_event

from .engine import SpanInsertResult, SpanQuery, StoreEngine, _construct
from .query import match_filters

__all__ = ["InMemoryLightningStore", "PackedSpan", "pack_span", "select_packed_spans"]

# A span kept in a store's memory: one tuple of plain values (strings, numbers, dicts of attributes,
# tuples), fields in the order below. The garbage collector tracks one object per span instead of
# about ten (model, __dict__, fields set, nested models, lists): a store holding many spans as models
# made every full collection walk all of them, a third of a busy store's time. Reading one builds
# a fresh Span (the caller owns it).
PackedSpan = Tuple[Any, ...]
_PACKED_FIELDS = ("rollout_id", "attempt_id", "sequence_id", "trace_id", "span_id", "parent_id", "name")
_START = len(_PACKED_FIELDS) + 5
_FIELD_INDEX = {**{name: i for i, name in enumerate(_PACKED_FIELDS)}, "start_time": _START, "end_time": _START + 1}


def _pack_context(context: Optional[SpanContext]) -> Any:
    # No dict unless there is trace state: a tuple holding a dict stays tracked.
    if context is None:
        return None
    return (context.trace_id, context.span_id, context.is_remote, dict(context.trace_state) or None)


def _unpack_context(packed: Any) -> Optional[SpanContext]:
    if packed is None:
        return None
    trace_id, span_id, is_remote, trace_state = packed
    fields = {"trace_id": trace_id, "span_id": span_id, "is_remote": is_remote, "trace_state": dict(trace_state or ())}
    return _construct(SpanContext, fields)


def _copy(attributes: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return dict(attributes) if attributes is not None else None


_GET_PACKED_FIELDS = itemgetter(*_PACKED_FIELDS)


def pack_span(span: Span) -> PackedSpan:
    """The stored form of ``span`` (a copy: later changes to ``span`` do not reach it)."""
    try:
        d = span.__dict__
        status, resource, events, links = d["status"], d["resource"], d["events"], d["links"]
        head: PackedSpan = _GET_PACKED_FIELDS(d)
        return head + (
            status.status_code,
            status.description,
            dict(d["attributes"]),
            tuple((e.name, dict(e.attributes), e.timestamp) for e in events) if events else (),
            tuple((_pack_context(x.context), _copy(x.attributes)) for x in links) if links else (),
            d["start_time"],
            d["end_time"],
            _pack_context(d["context"]),
            _pack_context(d["parent"]),
            dict(resource.attributes),
            resource.schema_url,
            dict(span.__pydantic_extra__) if span.__pydantic_extra__ else None,
        )
    except (AttributeError, KeyError, TypeError) as exc:  # a Span built with model_construct and odd values
        raise InvalidSpanError(f"span {getattr(span, 'span_id', '?')!r} has a malformed field: {exc}") from None


def unpack_span(p: PackedSpan) -> Span:
    """A new Span from its stored form."""
    events, links, extra = p[10], p[11], p[18]
    span = _construct(
        Span,
        {
            "rollout_id": p[0],
            "attempt_id": p[1],
            "sequence_id": p[2],
            "trace_id": p[3],
            "span_id": p[4],
            "parent_id": p[5],
            "name": p[6],
            "status": _construct(TraceStatus, {"status_code": p[7], "description": p[8]}),
            "attributes": dict(p[9]),
            "events": [stored_event(name, dict(attrs), timestamp) for name, attrs, timestamp in events]
            if events
            else [],
            "links": [_construct(Link, {"context": _unpack_context(c), "attributes": _copy(a)}) for c, a in links]
            if links
            else [],
            "start_time": p[12],
            "end_time": p[13],
            "context": _unpack_context(p[14]),
            "parent": _unpack_context(p[15]),
            "resource": _construct(OtelResource, {"attributes": dict(p[16]), "schema_url": p[17]}),
        },
    )
    if extra:
        object.__setattr__(span, "__pydantic_extra__", dict(extra))
    return span


def select_packed_spans(spans: Iterable[PackedSpan], query: SpanQuery) -> PaginatedResult[Span]:
    """``select_spans`` for stored (packed) spans: filters and sorts them as they are, builds Spans for the page."""
    predicates: List[Callable[[PackedSpan], bool]] = []
    for key, (kind, value) in query.filters.items():
        get = itemgetter(_FIELD_INDEX[key.rstrip("~")])
        if kind == "exact":
            predicates.append(lambda span, get=get, value=value: get(span) == value)  # type: ignore[misc]
        else:
            predicates.append(
                lambda span, get=get, value=value: get(span) is not None and value in get(span)  # type: ignore[misc]
            )
    match = match_filters(predicates, query.filter_logic)
    attempt_id = query.attempt_id
    selected = [s for s in spans if (attempt_id is None or s[1] == attempt_id) and match(s)]
    if query.sort_by is not None:
        get = itemgetter(_FIELD_INDEX[query.sort_by])
        # None sorts first ascending; the bool keeps None and values from being compared.
        selected.sort(key=lambda s: (get(s) is not None, get(s)), reverse=query.sort_order == "desc")
    elif query.sort_order == "desc":
        selected.reverse()
    offset, limit = query.offset, query.limit
    page = selected[offset:] if limit == -1 else selected[offset : offset + limit]
    fields = {"items": [unpack_span(s) for s in page], "limit": limit, "offset": offset, "total": len(selected)}
    return _construct(PaginatedResult, fields)


class InMemoryLightningStore(StoreEngine):
    """A store held in process memory. Thread-safe and usable from any event loop."""

    backend_name = "memory"

    def __init__(
        self,
        *,
        watchdog: bool = True,
        scan_debounce_seconds: float = 1.0,
        thread_safe: bool = True,
        eviction_memory_threshold: Any = None,
        safe_memory_threshold: Any = None,
        span_size_estimator: Any = None,
        tracker: Any = None,
    ) -> None:
        # The 0.3 options are accepted and have no effect: this store is always thread-safe, and it
        # keeps every span (0.3 evicted whole rollouts' spans under memory pressure, which made
        # later queries of those rollouts fail).
        super().__init__(watchdog=watchdog, scan_debounce_seconds=scan_debounce_seconds)
        self._spans: Dict[str, Dict[Tuple[str, str], PackedSpan]] = {}
        self._span_count = 0

    @classmethod
    def from_uri(cls, uri: str) -> "InMemoryLightningStore":
        if not uri.startswith("memory:"):
            raise ValueError(f"not a memory:// URI: {uri!r}")
        return cls()

    def _insert_spans(self, spans: Sequence[Span]) -> SpanInsertResult:
        packed = [pack_span(span) for span in spans]  # all of them before storing any
        flags: List[bool] = []
        for span in packed:
            bucket = self._spans.setdefault(span[0], {})
            key = (span[1], span[4])  # attempt_id, span_id
            new = key not in bucket
            if new:
                bucket[key] = span
            flags.append(new)
        self._span_count += sum(flags)
        return flags

    async def _select_spans(self, query: SpanQuery) -> PaginatedResult[Span]:
        with self._lock:
            spans = list(self._spans.get(query.rollout_id, {}).values())
        return select_packed_spans(spans, query)

    def _count_spans(self) -> int:
        return self._span_count
