"""OpenTelemetry-based tracer that streams spans to a LightningStore in batches, per trace scope
(design notes: ``docs/internals.md``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import random
import threading
import time
import traceback
import weakref
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import Status, StatusCode

from agentlightning.env_var import LightningEnvVar, resolve_list_env_var
from agentlightning.semconv import rollout_resource_attributes
from agentlightning.types.tracer import (
    Attributes,
    OtelResource,
    Span,
    SpanCoreFields,
    SpanRecordingContext,
    TraceStatus,
    construct_valid,
    stored_event,
    stored_link,
    stored_span_context,
)
from agentlightning.types.tracer import StatusCode as AglStatusCode
from agentlightning.utils.otel import format_exception_attributes, sanitize_attributes

from .base import Tracer, coerce_status, reset_context_var
from .dummy import InMemorySpanRecordingContext

if TYPE_CHECKING:
    from agentlightning.store.base import LightningStore

__all__ = ["OtelTracer", "LightningSpanProcessor", "OtelSpanRecordingContext", "ScopedSpan", "span_tracer"]

logger = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "agentlightning"
DEFAULT_BATCH_SIZE = 64
DEFAULT_FLUSH_INTERVAL = 2.0
DEFAULT_FLUSH_TIMEOUT = 60.0
# Upper bound on spans per add_many_spans call, so one huge final flush is not one huge request.
_MAX_WRITE_CHUNK = 512
_TICK_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 30.0
SPAN_EXPORTERS_ENV = LightningEnvVar.AGL_SPAN_EXPORTERS.value

_SpanKey = Tuple[int, int]
# The start order of every span a scope buffers, SDK spans and scoped spans alike (ties of start time).
_start_counter = itertools.count()
# What a scope buffers: ended SDK spans and ended scoped spans.
_EndedSpan = Union[ReadableSpan, "ScopedSpan"]


def _ns(seconds: Optional[float]) -> Optional[int]:
    return int(seconds * 1e9) if seconds is not None else None


def _otel_status(status: TraceStatus) -> Status:
    code = {"OK": StatusCode.OK, "ERROR": StatusCode.ERROR}.get(status.status_code, StatusCode.UNSET)
    # OpenTelemetry only keeps a description on ERROR.
    return Status(code, status.description if code is StatusCode.ERROR else None)


class _TraceScope:
    """Everything one ``trace_context`` collects; shared by the processor, the flusher and the exit path."""

    def __init__(
        self,
        name: Optional[str],
        rollout_id: Optional[str],
        attempt_id: Optional[str],
        store: Optional[LightningStore],
        batch_size: int,
        flush_interval: float,
    ) -> None:
        self.name = name
        self.rollout_id = rollout_id or "rollout-dummy"
        self.attempt_id = attempt_id or "attempt-dummy"
        # Only scopes with real ids and a store write anything.
        self.store = store if rollout_id is not None else None
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.lock = threading.Lock()
        self.pending: List[Tuple[int, _EndedSpan]] = []  # ended spans without a sequence id yet
        self.unwritten: List[Span] = []  # spans with store-issued ids whose add_many_spans failed
        self.written: List[Span] = []
        self.failed: List[Span] = []
        self.oldest_pending: Optional[float] = None
        self.inflight: Optional[concurrent.futures.Future[None]] = None
        self.closing = False
        self.closed = False
        self.max_sequence_id = 0
        self.failures = 0
        self.retry_at = 0.0  # monotonic time before which background writes back off

    # -- called with the lock held ---------------------------------------------------------------
    def _take(self) -> Tuple[List[Tuple[int, _EndedSpan]], List[Span]]:
        pending, unwritten = self.pending, self.unwritten
        self.pending, self.unwritten, self.oldest_pending = [], [], None
        return pending, unwritten

    # -- called from any thread ------------------------------------------------------------------
    def add_ended(self, order: int, span: _EndedSpan) -> bool:
        """Buffer an ended span; True when the background flusher must look at this scope now."""
        with self.lock:
            self.pending.append((order, span))
            if self.oldest_pending is None:
                self.oldest_pending = time.monotonic()
            # A full buffer waits for the flusher's next tick (0.1 s): waking it from here would hand it
            # the GIL in the middle of the agent's work. Only a late span of a closed scope wakes it.
            return self.store is not None and self.closed

    def take_if_due(self, now: float, force: bool) -> Optional[Tuple[List[Tuple[int, _EndedSpan]], List[Span]]]:
        """Take the buffer for a background write if a threshold is met and no write is running."""
        with self.lock:
            if self.store is None or (self.closing and not self.closed):
                return None  # the exit path owns the buffer while it is closing
            if self.inflight is not None or not (self.pending or self.unwritten):
                return None
            if not force and now < self.retry_at:
                return None
            due = (
                force
                or self.closed
                or len(self.pending) >= self.batch_size
                or (self.oldest_pending is not None and now - self.oldest_pending >= self.flush_interval)
            )
            if not due:
                return None
            self.inflight = concurrent.futures.Future()
            return self._take()

    def finish_inflight(self) -> None:
        with self.lock:
            inflight, self.inflight = self.inflight, None
        if inflight is not None and not inflight.done():
            inflight.set_result(None)

    def requeue(self, pending: List[Tuple[int, _EndedSpan]], unwritten: List[Span]) -> None:
        with self.lock:
            self.pending[:0] = pending
            self.unwritten[:0] = unwritten
            if self.pending and self.oldest_pending is None:
                self.oldest_pending = time.monotonic()

    def back_off(self) -> None:
        """After a failed background write: wait longer before the next one (a broken store is not hammered)."""
        with self.lock:
            self.failures += 1
            self.retry_at = time.monotonic() + min(_MAX_BACKOFF_SECONDS, self.flush_interval * 2**self.failures)

    def record_written(self, spans: Sequence[Span]) -> None:
        with self.lock:
            self.written.extend(spans)
            for span in spans:
                self.max_sequence_id = max(self.max_sequence_id, span.sequence_id)

    def next_local_ids(self, count: int) -> List[int]:
        with self.lock:
            start = self.max_sequence_id + 1
            self.max_sequence_id += count
        return list(range(start, start + count))

    def snapshot(self) -> List[Span]:
        with self.lock:
            spans = self.written + self.failed
        return sorted(spans, key=lambda s: (s.sequence_id, s.start_time or 0.0))


def _stored(span: _EndedSpan, rollout_id: str, attempt_id: str, sequence_id: int) -> Span:
    if isinstance(span, ScopedSpan):
        return span.to_stored(rollout_id, attempt_id, sequence_id)
    stored = Span.from_opentelemetry(span, rollout_id, attempt_id, sequence_id)
    # Its resource attributes are a fresh dict: name the rollout there too, as 0.3's spans did.
    stored.resource.attributes.update(rollout_resource_attributes(rollout_id, attempt_id, sequence_id))
    return stored


def _stored_all(scope: _TraceScope, pending: List[Tuple[int, _EndedSpan]], ids: Sequence[int]) -> List[Span]:
    return [_stored(span, scope.rollout_id, scope.attempt_id, seq) for (_, span), seq in zip(pending, ids, strict=True)]


def _start_order(item: Tuple[int, _EndedSpan]) -> Tuple[int, int]:
    order, span = item
    return (span.start_time or 0, order)


async def _write_batch(
    scope: _TraceScope, pending: List[Tuple[int, _EndedSpan]], unwritten: List[Span], *, final: bool
) -> None:
    """Write one batch to the scope's store; on failure give the spans back (or, if final, keep them as failed)."""
    store = scope.store
    assert store is not None
    pending = sorted(pending, key=_start_order)
    converted: List[Span] = []
    if pending:
        try:
            ids = await store.get_many_span_sequence_ids([(scope.rollout_id, scope.attempt_id)] * len(pending))
            if len(ids) != len(pending):
                raise RuntimeError(f"store issued {len(ids)} sequence ids for {len(pending)} spans")
        except Exception as exc:
            _write_failed(scope, exc, pending, unwritten, final)
            return
        converted = _stored_all(scope, pending, sorted(ids))
    to_write = unwritten + converted
    for start in range(0, len(to_write), _MAX_WRITE_CHUNK):
        chunk = to_write[start : start + _MAX_WRITE_CHUNK]
        try:
            await store.add_many_spans(chunk)
        except Exception as exc:
            _write_failed(scope, exc, [], to_write[start:], final)
            return
        # Spans the store reports as duplicates are already there, so every sent span counts.
        scope.record_written(chunk)
    scope.failures = 0


def _write_failed(
    scope: _TraceScope, exc: BaseException, pending: List[Tuple[int, _EndedSpan]], unwritten: List[Span], final: bool
) -> None:
    """Log a failed write; a final one keeps the spans as failed, a background one gives them back for later."""
    what = "could not write" if final else "background write of"
    then = "they are kept in get_last_trace()" if final else "retrying when the trace ends"
    level = logging.ERROR if final else logging.WARNING
    message = "%s %d span(s) of rollout %s attempt %s to the store: %r; %s"
    logger.log(level, message, what, len(pending) + len(unwritten), scope.rollout_id, scope.attempt_id, exc, then)
    if final:
        _keep_failed(scope, pending, unwritten)
    else:
        scope.requeue(pending, unwritten)
        scope.back_off()


def _keep_failed(scope: _TraceScope, pending: List[Tuple[int, _EndedSpan]], unwritten: List[Span]) -> None:
    local = _stored_all(scope, pending, scope.next_local_ids(len(pending)))
    with scope.lock:
        scope.failed.extend(unwritten)
        scope.failed.extend(local)


def _finalize_local(scope: _TraceScope) -> None:
    """Store-less scope: number spans locally in start order."""
    with scope.lock:
        pending, _ = scope._take()
    pending.sort(key=_start_order)
    spans = _stored_all(scope, pending, scope.next_local_ids(len(pending)))
    with scope.lock:
        scope.written.extend(spans)


class _BackgroundFlusher:
    """One daemon thread with its own event loop; writes buffers that reached a size or age threshold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._scopes: weakref.WeakSet[_TraceScope] = weakref.WeakSet()
        self._urgent: Set[_TraceScope] = set()
        self._tasks: Set[asyncio.Task[None]] = set()

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and self._thread is not None and self._thread.is_alive():
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.create_task(self._tick_forever())
                loop.run_forever()

            thread = threading.Thread(target=run, name="agentlightning-span-flusher", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    def reset_after_fork(self) -> None:
        # The thread does not exist in a forked child; start a new one on demand.
        self._lock = threading.Lock()
        self._loop, self._thread = None, None
        self._scopes = weakref.WeakSet()
        self._urgent = set()
        self._tasks = set()

    def register(self, scope: _TraceScope) -> None:
        if scope.store is None:
            return
        self._ensure_started()
        with self._lock:
            self._scopes.add(scope)

    def unregister(self, scope: _TraceScope) -> None:
        with self._lock:
            self._scopes.discard(scope)

    def request(self, scope: _TraceScope) -> None:
        """Ask for a prompt look at ``scope`` (buffer full, or a late span after the context closed)."""
        loop = self._ensure_started()
        with self._lock:
            self._urgent.add(scope)
        try:
            loop.call_soon_threadsafe(self._check)
        except RuntimeError:  # loop closed during interpreter shutdown
            pass

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(_TICK_SECONDS)
            self._check()

    def _check(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            scopes = set(self._scopes) | self._urgent
            self._urgent = set()
        for scope in scopes:
            batch = scope.take_if_due(now, force)
            if batch is None:
                continue
            task = asyncio.get_running_loop().create_task(self._write(scope, *batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, scope: _TraceScope, pending: List[Tuple[int, _EndedSpan]], unwritten: List[Span]) -> None:
        try:
            # Late spans of a closed scope get one try: nobody would retry them later.
            await _write_batch(scope, pending, unwritten, final=scope.closed)
        except BaseException:
            scope.requeue(pending, unwritten)
            raise
        finally:
            scope.finish_inflight()
            # Late spans may have arrived while writing; a closed scope is flushed until empty.
            if scope.closed and scope.pending:
                self.request(scope)

    def flush_all(self, timeout: Optional[float]) -> bool:
        """Write every buffered span of every registered scope now; True if it finished in time."""
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            return True

        async def run() -> None:
            self._check(force=True)
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

        if threading.current_thread() is self._thread:
            return False  # cannot block the flusher's own loop
        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            future.result(timeout)
            return True
        except concurrent.futures.TimeoutError:
            return False


_flusher = _BackgroundFlusher()

# The scope of the trace context the current code runs in.
_current_scope: ContextVar[Optional[_TraceScope]] = ContextVar("agentlightning_trace_scope", default=None)


# -- scoped spans: the adapters' fast path -----------------------------------------------------------

_PRIMITIVES = (str, bool, int, float)
# Scoped spans are always recorded; children the SDK creates under them must be sampled too.
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)


def _attribute_value(value: Any) -> Any:
    """A value as stored (sequences as lists), or None for what the SDK would drop (None, other types)."""
    if type(value) in _PRIMITIVES or isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)) and all(item is None or isinstance(item, _PRIMITIVES) for item in value):
        return list(value)
    return None


def _add_attributes(target: Dict[str, Any], attributes: Optional[Mapping[str, Any]]) -> None:
    if not attributes:
        return
    for key, value in attributes.items():
        clean = _attribute_value(value)
        if clean is not None:
            target[key] = clean


# The global provider's resource: (the object, its attributes as stored, its schema URL).
_resource_cache: Tuple[Any, Dict[str, Any], str] = (None, {}, "")
# The scopes of scoped spans not yet ended, for SDK spans started under them in threads without our
# context (single dict operations are atomic: no lock).
_open_scoped_spans: Dict[_SpanKey, _TraceScope] = {}


def _stored_resource(rollout_id: str, attempt_id: str, sequence_id: int) -> OtelResource:
    """The global provider's resource as stored, naming the span's rollout (the provider's part converted once)."""
    global _resource_cache
    resource = getattr(trace_api.get_tracer_provider(), "resource", None)
    if _resource_cache[0] is not resource:
        attributes = dict(getattr(resource, "attributes", None) or {})
        _resource_cache = (resource, attributes, getattr(resource, "schema_url", "") or "")
    attributes = {**_resource_cache[1], **rollout_resource_attributes(rollout_id, attempt_id, sequence_id)}
    return construct_valid(OtelResource, {"attributes": attributes, "schema_url": _resource_cache[2]})


class ScopedSpan(trace_api.Span):
    """A span recorded straight into the trace scope it started in (see :func:`span_tracer`).

    It implements the OpenTelemetry ``Span`` API (attributes, events, status, exceptions, renaming;
    links are kept as given), can parent other spans through ``trace.set_span_in_context``, and is
    turned into a stored :class:`~agentlightning.types.Span` in one step when its scope is written.
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_end_ns",
        "_events",
        "_links",
        "_name",
        "_order",
        "_parent",
        "_scope",
        "_start_ns",
        "_status",
        "_status_description",
    )

    def __init__(
        self,
        name: str,
        context: trace_api.SpanContext,
        parent: Optional[trace_api.SpanContext],
        scope: _TraceScope,
        start_ns: int,
    ) -> None:
        self._name = name
        self._context = context
        self._parent = parent
        self._scope = scope
        self._start_ns = start_ns
        self._end_ns: Optional[int] = None
        self._attributes: Dict[str, Any] = {}
        # Most spans have no events or links: the lists are made when the first one comes.
        self._events: Optional[List[Tuple[str, Dict[str, Any], int]]] = None
        self._links: Optional[List[trace_api.Link]] = None
        self._status = "UNSET"
        self._status_description: Optional[str] = None
        self._order = next(_start_counter)
        _open_scoped_spans[(context.trace_id, context.span_id)] = scope

    # -- what the scope reads ----------------------------------------------------------------------
    @property
    def start_time(self) -> int:
        return self._start_ns

    @property
    def scope(self) -> _TraceScope:
        return self._scope

    def to_stored(self, rollout_id: str, attempt_id: str, sequence_id: int) -> Span:
        context, parent = self._context, self._parent
        trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        return construct_valid(
            Span,
            {
                "rollout_id": rollout_id,
                "attempt_id": attempt_id,
                "sequence_id": sequence_id,
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_id": format(parent.span_id, "016x") if parent is not None else None,
                "name": self._name,
                "status": construct_valid(
                    TraceStatus, {"status_code": self._status, "description": self._status_description}
                ),
                "attributes": self._attributes,
                "events": [
                    stored_event(name, attributes, timestamp / 1e9)
                    for name, attributes, timestamp in self._events or ()
                ],
                "links": [stored_link(link.context, dict(link.attributes or {})) for link in self._links or ()],
                "start_time": self._start_ns / 1e9,
                "end_time": self._end_ns / 1e9 if self._end_ns is not None else None,
                "context": stored_span_context(context.trace_id, context.span_id, False),
                "parent": (
                    stored_span_context(parent.trace_id, parent.span_id, parent.is_remote)
                    if parent is not None
                    else None
                ),
                "resource": _stored_resource(rollout_id, attempt_id, sequence_id),
            },
        )

    # -- the OpenTelemetry Span API ----------------------------------------------------------------
    def get_span_context(self) -> trace_api.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_ns is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_ns is None:
            _add_attributes(self._attributes, attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        clean = _attribute_value(value)
        if self._end_ns is None and clean is not None:
            self._attributes[key] = clean

    def add_event(self, name: str, attributes: Any = None, timestamp: Optional[int] = None) -> None:
        if self._end_ns is None:
            clean: Dict[str, Any] = {}
            _add_attributes(clean, attributes)
            self._events = self._events if self._events is not None else []
            self._events.append((name, clean, timestamp if timestamp is not None else time.time_ns()))

    def add_link(self, context: trace_api.SpanContext, attributes: Any = None) -> None:
        if self._end_ns is None and context.is_valid:
            self._links = self._links if self._links is not None else []
            self._links.append(trace_api.Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_ns is None:
            self._name = name

    def set_status(self, status: Union[Status, StatusCode], description: Optional[str] = None) -> None:
        if self._end_ns is not None or self._status == "OK":  # as in the SDK: OK is final
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.UNSET:
            return
        self._status = "ERROR" if code is StatusCode.ERROR else "OK"
        self._status_description = description if code is StatusCode.ERROR else None

    def record_exception(
        self, exception: BaseException, attributes: Any = None, timestamp: Optional[int] = None, escaped: bool = False
    ) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        event: Dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        _add_attributes(event, attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: Optional[int] = None) -> None:
        if self._end_ns is not None:
            return
        self._end_ns = end_time if end_time is not None else time.time_ns()
        _open_scoped_spans.pop((self._context.trace_id, self._context.span_id), None)
        if self._scope.add_ended(self._order, self):
            _flusher.request(self._scope)


# (provider, its processors, the answer): the SDK replaces the processor tuple when one is added.
_processor_check: Tuple[Any, Any, bool] = (None, None, False)


def _only_our_processor() -> bool:
    """Whether the global provider feeds nothing but our processor (no exporter would miss a scoped span)."""
    global _processor_check
    provider = trace_api.get_tracer_provider()
    processors: Any = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    cached_provider, cached_processors, answer = _processor_check
    if provider is cached_provider and processors is cached_processors:
        return answer
    answer = bool(processors) and all(isinstance(p, LightningSpanProcessor) for p in processors)
    _processor_check = (provider, processors, answer)
    return answer


class _ScopedTracer(trace_api.Tracer):
    """See :func:`span_tracer`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def start_span(
        self,
        name: str,
        context: Optional[context_api.Context] = None,
        kind: trace_api.SpanKind = trace_api.SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        scope = _current_scope.get()
        parent_span = trace_api.get_current_span(context)
        if scope is None and isinstance(parent_span, ScopedSpan):
            scope = parent_span.scope  # a thread without our context, under a scoped parent
        if scope is None or not _only_our_processor():
            return trace_api.get_tracer(self._name).start_span(
                name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
            )
        parent_context = parent_span.get_span_context()
        parent = parent_context if parent_context.is_valid else None
        trace_id = parent.trace_id if parent is not None else random.getrandbits(128) or 1
        span_context = trace_api.SpanContext(
            trace_id, random.getrandbits(64) or 1, is_remote=False, trace_flags=_SAMPLED
        )
        span = ScopedSpan(name, span_context, parent, scope, start_time if start_time is not None else time.time_ns())
        _add_attributes(span._attributes, attributes)
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Optional[context_api.Context] = None,
        kind: trace_api.SpanKind = trace_api.SpanKind.INTERNAL,
        attributes: Any = None,
        links: Any = None,
        start_time: Optional[int] = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace_api.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace_api.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def span_tracer(name: str) -> trace_api.Tracer:
    """The tracer framework adapters create their spans with (``name``: the adapter's); see ``docs/internals.md``."""
    return _ScopedTracer(name)


class LightningSpanProcessor(SpanProcessor):
    """Attributes each span to the trace scope it was started in and hands ended spans to it.

    Attached at most once per ``TracerProvider`` (see :func:`install_span_processor`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: Dict[_SpanKey, Tuple[_TraceScope, int]] = {}

    def on_start(self, span: SdkSpan, parent_context: Optional[context_api.Context] = None) -> None:
        ctx = span.get_span_context()
        if ctx is None:
            return
        scope = _current_scope.get()
        with self._lock:
            if scope is None and span.parent is not None:
                # A thread without our context but with the OpenTelemetry parent: inherit its scope.
                key = (span.parent.trace_id, span.parent.span_id)
                parent = self._live.get(key)
                scope = parent[0] if parent is not None else _open_scoped_spans.get(key)
            if scope is None:
                return  # outside any trace context: not ours to store
            self._live[(ctx.trace_id, ctx.span_id)] = (scope, next(_start_counter))

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        if ctx is None:
            return
        with self._lock:
            entry = self._live.pop((ctx.trace_id, ctx.span_id), None)
        if entry is None:
            return
        scope, order = entry
        if scope.add_ended(order, span):
            _flusher.request(scope)

    def reset_after_fork(self) -> None:
        # Another thread may have held the lock at fork time; its spans are the parent's business.
        self._lock = threading.Lock()
        self._live = {}

    def shutdown(self) -> None:
        _flusher.flush_all(timeout=5.0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return _flusher.flush_all(timeout=timeout_millis / 1000)


_processors: weakref.WeakKeyDictionary[TracerProvider, LightningSpanProcessor] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _install_lock
    _install_lock = threading.Lock()
    _flusher.reset_after_fork()
    _open_scoped_spans.clear()
    for processor in list(_processors.values()):
        processor.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def install_span_processor() -> Tuple[TracerProvider, LightningSpanProcessor]:
    """Attach our processor to the global SDK provider (created and set globally if there is none).

    A provider the user already set is kept; it just gains our processor, once.
    """
    with _install_lock:
        provider = trace_api.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            candidate = TracerProvider()
            trace_api.set_tracer_provider(candidate)
            provider = trace_api.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                # A non-SDK provider was set before us and cannot be replaced: instrumented
                # libraries will not reach us, but our own spans still do.
                logger.warning(
                    "the global OpenTelemetry TracerProvider is %s, not an SDK provider; only spans created by "
                    "agentlightning itself will be recorded",
                    type(provider).__name__,
                )
                provider = candidate
        processor = _processors.get(provider)
        if processor is None:
            processor = LightningSpanProcessor()
            provider.add_span_processor(processor)
            _processors[provider] = processor
            _attach_configured_exporters(provider)
        return provider, processor


def _attach_configured_exporters(provider: TracerProvider) -> None:
    """Add the exporters named in ``AGL_SPAN_EXPORTERS`` (plugin-registered); a bad one is skipped."""
    names = resolve_list_env_var(LightningEnvVar.AGL_SPAN_EXPORTERS)
    if not names:
        return
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from agentlightning.plugins import resolve

    for name in names:
        try:
            exporter = resolve("span_exporters", name)()
            provider.add_span_processor(BatchSpanProcessor(exporter))
        except Exception as exc:
            logger.warning("could not attach span exporter %r from %s: %s", name, SPAN_EXPORTERS_ENV, exc)


class OtelSpanRecordingContext(InMemorySpanRecordingContext):
    """Records into a live OpenTelemetry span and keeps a copy of what it recorded."""

    def __init__(self, span: trace_api.Span, name: str, attributes: Attributes, start_time: float) -> None:
        super().__init__(name, attributes, start_time)
        self._span = span

    def record_exception(self, exception: BaseException) -> None:
        attributes = format_exception_attributes(exception)
        self._span.record_exception(exception, attributes=attributes, escaped=True)
        # Also on the span itself, so readers need not dig through events (same as DummyTracer).
        self._span.set_attributes(attributes)
        self.attributes.update(attributes)
        self.record_status("ERROR", str(exception) or type(exception).__name__)

    def record_attributes(self, attributes: Attributes) -> None:
        clean = sanitize_attributes(attributes)
        self._span.set_attributes(clean)
        self.attributes.update(clean)

    def record_status(self, status_code: AglStatusCode, description: Optional[str] = None) -> None:
        super().record_status(status_code, description)
        self._span.set_status(_otel_status(self.status))

    def finish(self, end_time: Optional[float] = None) -> None:
        super().finish(end_time)
        self._span.end(end_time=_ns(self.end_time))


class OtelTracer(Tracer):
    """Tracer built on the OpenTelemetry SDK (how spans flow: ``docs/internals.md``). A background write
    starts when an attempt has ``batch_size`` ended spans or its oldest is ``flush_interval`` seconds old
    (so streaming spans is the attempt's heartbeat); ``trace_context`` exit waits ``flush_timeout`` for
    the final write."""

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        flush_timeout: Optional[float] = DEFAULT_FLUSH_TIMEOUT,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval}")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.flush_timeout = flush_timeout
        self._provider: Optional[TracerProvider] = None
        self._processor: Optional[LightningSpanProcessor] = None

    def __getstate__(self) -> Dict[str, Any]:
        # Pickled to run in another process (spawn, Ray actors): the settings travel, and that process
        # installs its own span processor on first use.
        state = self.__dict__.copy()
        for name in ("_provider", "_processor", "_last", "_last_anywhere", "_store"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = None
        self._provider = None
        self._processor = None
        self._last = ContextVar(f"agl_last_trace_{id(self)}", default=None)
        self._last_anywhere = []

    # -- lifecycle -------------------------------------------------------------------------------
    def init(self, *args: Any, **kwargs: Any) -> None:
        super().init(*args, **kwargs)
        self._ensure_provider()

    def init_worker(self, worker_id: int, store: Optional[LightningStore] = None, *args: Any, **kwargs: Any) -> None:
        super().init_worker(worker_id, store, *args, **kwargs)
        self._ensure_provider()

    def teardown_worker(self, worker_id: int, *args: Any, **kwargs: Any) -> None:
        super().teardown_worker(worker_id, *args, **kwargs)
        _flusher.flush_all(timeout=self.flush_timeout)

    def _ensure_provider(self) -> TracerProvider:
        if self._provider is None:
            self._provider, self._processor = install_span_processor()
        return self._provider

    @property
    def tracer_provider(self) -> TracerProvider:
        return self._ensure_provider()

    def _otel_tracer(self) -> trace_api.Tracer:
        return self._ensure_provider().get_tracer(INSTRUMENTATION_NAME)

    # -- trace context ---------------------------------------------------------------------------
    @asynccontextmanager
    async def _trace_context(
        self,
        name: Optional[str],
        *,
        rollout_id: Optional[str],
        attempt_id: Optional[str],
        store: Optional[LightningStore],
    ) -> AsyncIterator[Any]:
        otel_tracer = self._otel_tracer()
        if rollout_id is not None and store is None:
            logger.warning(
                "trace_context for rollout %s has no store (pass store= or call init_worker(worker_id, store)); "
                "spans are only kept for get_last_trace()",
                rollout_id,
            )
        scope = _TraceScope(name, rollout_id, attempt_id, store, self.batch_size, self.flush_interval)
        _flusher.register(scope)
        token = _current_scope.set(scope)
        try:
            yield otel_tracer
        finally:
            reset_context_var(_current_scope, token)
            await self._close_scope(scope)

    async def _close_scope(self, scope: _TraceScope) -> None:
        with scope.lock:
            scope.closing = True
            inflight = scope.inflight
        _flusher.unregister(scope)
        if scope.store is None:
            _finalize_local(scope)
            scope.closed = True
            self._remember(scope.snapshot())
            return

        async def final() -> None:
            if inflight is not None:
                await asyncio.wrap_future(inflight)
            with scope.lock:
                pending, unwritten = scope._take()
            if pending or unwritten:
                await _write_batch(scope, pending, unwritten, final=True)

        task = asyncio.ensure_future(final())
        try:
            # Shielded: a cancelled rollout still gets its spans written.
            await asyncio.wait_for(asyncio.shield(task), self.flush_timeout)
        except asyncio.TimeoutError:
            logger.error(
                "writing the spans of rollout %s attempt %s took more than %ss; continuing in the background",
                scope.rollout_id,
                scope.attempt_id,
                self.flush_timeout,
            )
        finally:
            with scope.lock:
                scope.closed = True
                late = bool(scope.pending)
            if late:
                _flusher.request(scope)
            self._remember(scope.snapshot())

    # -- span helpers ----------------------------------------------------------------------------
    def create_span(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        timestamp: Optional[float] = None,
        status: Union[TraceStatus, AglStatusCode, None] = None,
    ) -> SpanCoreFields:
        when = timestamp if timestamp is not None else time.time()
        clean = sanitize_attributes(attributes)
        trace_status = coerce_status(status)
        span = self._otel_tracer().start_span(name, attributes=clean, start_time=_ns(when))
        span.set_status(_otel_status(trace_status))
        span.end(end_time=_ns(when))
        return SpanCoreFields(name=name, attributes=clean, start_time=when, end_time=when, status=trace_status)

    @contextmanager
    def operation_context(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        start_time: Optional[float] = None,
        end_time: Optional[float] = None,
    ) -> Iterator[SpanRecordingContext]:
        begin = start_time if start_time is not None else time.time()
        clean = sanitize_attributes(attributes)
        with self._otel_tracer().start_as_current_span(
            name,
            attributes=clean,
            start_time=_ns(begin),
            end_on_exit=False,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            recorder = OtelSpanRecordingContext(span, name, clean, begin)
            try:
                yield recorder
            except GeneratorExit:
                raise
            except BaseException as exc:
                recorder.record_exception(exc)
                raise
            finally:
                recorder.finish(end_time)
