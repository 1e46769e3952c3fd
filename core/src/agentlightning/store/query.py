"""Filtering, sorting and pagination shared by store backends (the in-process part)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, TypeVar

from agentlightning.errors import InvalidStatusError
from agentlightning.types import PaginatedResult
from agentlightning.types.tracer import construct_valid

T = TypeVar("T")

__all__ = ["check_page", "check_sort", "check_statuses", "match_filters", "paginate"]


MAX_PAGE_VALUE = 2**53 - 1  # fits SQL LIMIT/OFFSET, and JSON numbers (doubles) hold it exactly


def check_page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not -1 <= limit <= MAX_PAGE_VALUE:
        raise ValueError(f"limit must be an int from -1 (no limit) to 2**53-1, got {limit!r}")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_PAGE_VALUE:
        raise ValueError(f"offset must be an int from 0 to 2**53-1, got {offset!r}")


def check_sort(sort_by: Optional[str], sort_order: str, allowed: Sequence[str]) -> None:
    if sort_by is not None and sort_by not in allowed:
        raise ValueError(f"cannot sort by {sort_by!r}; sortable fields: {', '.join(allowed)}")
    if sort_order not in ("asc", "desc"):
        raise ValueError(f"sort_order must be 'asc' or 'desc', got {sort_order!r}")


def check_statuses(statuses: Optional[Sequence[str]], allowed: tuple[str, ...], what: str) -> None:
    if statuses is None:
        return
    if isinstance(statuses, str):
        raise InvalidStatusError(statuses, allowed, f"{what} (expected a list of statuses, not a string)")
    for status in statuses:
        if status not in allowed:
            raise InvalidStatusError(status, allowed, what)


def check_filter_logic(filter_logic: str) -> None:
    if filter_logic not in ("and", "or"):
        raise ValueError(f"filter_logic must be 'and' or 'or', got {filter_logic!r}")


def match_filters(predicates: Sequence[Callable[[Any], bool]], filter_logic: str) -> Callable[[Any], bool]:
    """Combine the given predicates with AND/OR; no predicates matches everything."""
    check_filter_logic(filter_logic)
    if not predicates:
        return lambda _item: True
    if filter_logic == "or":
        return lambda item: any(p(item) for p in predicates)
    return lambda item: all(p(item) for p in predicates)


def _sort_key(field: str) -> Callable[[Any], tuple[bool, Any]]:
    # None sorts first ascending; the bool keeps None and values from being compared.
    def key(item: Any) -> tuple[bool, Any]:
        value = getattr(item, field)
        return (value is not None, value)

    return key


def paginate(
    items: Iterable[T], *, sort_by: Optional[str], sort_order: str, limit: int, offset: int
) -> PaginatedResult[T]:
    ordered: List[T] = list(items)
    if sort_by is not None:
        ordered.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
    elif sort_order == "desc":
        ordered.reverse()
    total = len(ordered)
    page = ordered[offset:] if limit == -1 else ordered[offset : offset + limit]
    # Built without validation: the items are the store's own, already valid (a hot path).
    fields = {"items": page, "limit": limit, "offset": offset, "total": total}
    result: PaginatedResult[T] = construct_valid(PaginatedResult, fields)
    return result
