"""``memory://``: everything in process memory; fastest, gone with the process."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from agentlightning.types import PaginatedResult, Span

from .engine import SpanInsertResult, SpanQuery, StoreEngine, _clone
from .query import match_filters, paginate

__all__ = ["InMemoryLightningStore"]


def _predicate(field: str, kind: str, value: str) -> Callable[[Span], bool]:
    if kind == "exact":
        return lambda span: getattr(span, field) == value

    def contains(span: Span) -> bool:
        current = getattr(span, field)
        return current is not None and value in current

    return contains


def span_predicates(filters: Dict[str, Tuple[str, str]]) -> List[Callable[[Span], bool]]:
    return [_predicate(key.rstrip("~"), kind, value) for key, (kind, value) in filters.items()]


def select_spans(spans: Iterable[Span], query: SpanQuery) -> PaginatedResult[Span]:
    """Filter, sort and page one rollout's spans held in memory; returns copies."""
    match = match_filters(span_predicates(query.filters), query.filter_logic)
    selected = [s for s in spans if (query.attempt_id is None or s.attempt_id == query.attempt_id) and match(s)]
    page = paginate(
        selected, sort_by=query.sort_by, sort_order=query.sort_order, limit=query.limit, offset=query.offset
    )
    page.items = [_clone(s) for s in page.items]
    return page


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
        self._spans: Dict[str, Dict[Tuple[str, str], Span]] = {}
        self._span_count = 0

    @classmethod
    def from_uri(cls, uri: str) -> "InMemoryLightningStore":
        if not uri.startswith("memory:"):
            raise ValueError(f"not a memory:// URI: {uri!r}")
        return cls()

    def _insert_spans(self, spans: Sequence[Span]) -> SpanInsertResult:
        flags: List[bool] = []
        for span in spans:
            bucket = self._spans.setdefault(span.rollout_id, {})
            key = (span.attempt_id, span.span_id)
            if key in bucket:
                flags.append(False)
            else:
                bucket[key] = _clone(span)  # the caller keeps (and may change) its own object
                flags.append(True)
        self._span_count += sum(flags)
        return flags

    async def _select_spans(self, query: SpanQuery) -> PaginatedResult[Span]:
        with self._lock:
            spans = list(self._spans.get(query.rollout_id, {}).values())
        return select_spans(spans, query)

    def _count_spans(self) -> int:
        return self._span_count
