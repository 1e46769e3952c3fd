"""Helpers shared by the store tests (imported as a plain module next to them)."""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Dict, List, Optional

from agentlightning.store.base import LightningStore
from agentlightning.types import Span


def make_span(
    rollout_id: str,
    attempt_id: str,
    sequence_id: int,
    *,
    name: str = "step",
    span_id: Optional[str] = None,
    trace_id: Optional[str] = None,
    parent_id: Optional[str] = None,
    attributes: Optional[Dict[str, Any]] = None,
    start_time: Optional[float] = None,
) -> Span:
    now = time.time()
    return Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=sequence_id,
        trace_id=trace_id or secrets.token_hex(16),
        span_id=span_id or secrets.token_hex(8),
        parent_id=parent_id,
        name=name,
        attributes=attributes if attributes is not None else {},
        start_time=start_time if start_time is not None else now,
        end_time=(start_time if start_time is not None else now) + 0.001,
    )


async def add_spans(store: LightningStore, rollout_id: str, attempt_id: str, count: int, **kwargs: Any) -> List[Span]:
    """Add ``count`` spans with sequence ids issued by the store."""
    added = []
    for _ in range(count):
        seq = await store.get_next_span_sequence_id(rollout_id, attempt_id)
        span = await store.add_span(make_span(rollout_id, attempt_id, seq, **kwargs))
        assert span is not None
        added.append(span)
    return added


async def snapshot(store: LightningStore) -> Dict[str, Any]:
    """Everything a caller can read back, as plain data (to check that a failed call changed nothing)."""
    rollouts = await store.query_rollouts(sort_by="rollout_id")
    state: Dict[str, Any] = {"rollouts": [r.model_dump() for r in rollouts]}
    for rollout in rollouts:
        attempts = await store.query_attempts(rollout.rollout_id)
        state[f"attempts:{rollout.rollout_id}"] = [a.model_dump() for a in attempts]
        spans = await store.query_spans(rollout.rollout_id)
        state[f"spans:{rollout.rollout_id}"] = [s.model_dump() for s in spans]
    state["resources"] = [r.model_dump() for r in await store.query_resources(sort_by="resources_id")]
    latest = await store.get_latest_resources()
    state["latest_resources"] = latest.model_dump() if latest else None
    state["workers"] = [w.model_dump() for w in await store.query_workers(sort_by="worker_id")]
    stats = dict(await store.statistics())
    stats.pop("uptime", None)
    state["statistics"] = stats
    return state


StoreFactory = Callable[..., LightningStore]
"""The ``store_factory`` fixture: ``make(**backend_options)`` -> a fresh store of the backend under test."""
