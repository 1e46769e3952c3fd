"""A tracer without a backend: spans exist only in memory.

Emitters use it for ``propagate=False``; tests and dry runs use it as a real tracer. Spans created
inside its ``trace_context`` are returned by :meth:`DummyTracer.get_last_trace` and never stored.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, List, Optional, Union

from opentelemetry import trace as trace_api

from agentlightning.types.tracer import Attributes, Span, SpanCoreFields, SpanRecordingContext, StatusCode, TraceStatus
from agentlightning.utils.otel import format_exception_attributes, sanitize_attributes

from .base import Tracer, coerce_status, reset_context_var

if TYPE_CHECKING:
    from agentlightning.store.base import LightningStore

__all__ = ["DummyTracer", "InMemorySpanRecordingContext"]


class InMemorySpanRecordingContext(SpanRecordingContext):
    """Records a span's fields in memory."""

    def __init__(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        start_time: Optional[float] = None,
        end_time: Optional[float] = None,
    ) -> None:
        self.name = name
        self.attributes: Attributes = sanitize_attributes(attributes)
        self.start_time = start_time if start_time is not None else time.time()
        self.end_time = end_time
        self.status = TraceStatus()

    def record_exception(self, exception: BaseException) -> None:
        self.attributes.update(format_exception_attributes(exception))
        self.record_status("ERROR", str(exception) or type(exception).__name__)

    def record_attributes(self, attributes: Attributes) -> None:
        self.attributes.update(sanitize_attributes(attributes))

    def record_status(self, status_code: StatusCode, description: Optional[str] = None) -> None:
        self.status = coerce_status(status_code)
        self.status.description = description

    def finish(self, end_time: Optional[float] = None) -> None:
        if self.end_time is None:
            self.end_time = end_time if end_time is not None else time.time()

    def get_recorded_span(self) -> SpanCoreFields:
        return SpanCoreFields(
            name=self.name,
            attributes=dict(self.attributes),
            start_time=self.start_time,
            end_time=self.end_time,
            status=self.status.model_copy(),
        )


class _DummyTrace:
    def __init__(self, rollout_id: Optional[str], attempt_id: Optional[str]) -> None:
        self.rollout_id = rollout_id or "rollout-dummy"
        self.attempt_id = attempt_id or "attempt-dummy"
        self.spans: List[Span] = []

    def add(self, core: SpanCoreFields) -> None:
        self.spans.append(
            Span.from_core_fields(
                core, rollout_id=self.rollout_id, attempt_id=self.attempt_id, sequence_id=len(self.spans) + 1
            )
        )


class DummyTracer(Tracer):
    """Tracer with no backend; nothing is ever written to a store."""

    def __init__(self) -> None:
        super().__init__()
        self._current: ContextVar[Optional[_DummyTrace]] = ContextVar(f"agl_dummy_trace_{id(self)}", default=None)

    @asynccontextmanager
    async def _trace_context(
        self,
        name: Optional[str],
        *,
        rollout_id: Optional[str],
        attempt_id: Optional[str],
        store: Optional[LightningStore],
    ) -> AsyncIterator[Any]:
        trace = _DummyTrace(rollout_id, attempt_id)
        token = self._current.set(trace)
        try:
            yield trace_api.NoOpTracer()
        finally:
            reset_context_var(self._current, token)
            self._remember(trace.spans)

    def create_span(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        timestamp: Optional[float] = None,
        status: Union[TraceStatus, StatusCode, None] = None,
    ) -> SpanCoreFields:
        when = timestamp if timestamp is not None else time.time()
        core = SpanCoreFields(
            name=name,
            attributes=sanitize_attributes(attributes),
            start_time=when,
            end_time=when,
            status=coerce_status(status),
        )
        trace = self._current.get()
        if trace is not None:
            trace.add(core)
        return core

    @contextmanager
    def operation_context(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        start_time: Optional[float] = None,
        end_time: Optional[float] = None,
    ) -> Iterator[SpanRecordingContext]:
        recorder = InMemorySpanRecordingContext(name, attributes, start_time, end_time)
        try:
            yield recorder
        except GeneratorExit:
            raise
        except BaseException as exc:
            recorder.record_exception(exc)
            raise
        finally:
            recorder.finish(end_time)
            trace = self._current.get()
            if trace is not None:
                trace.add(recorder.get_recorded_span())
