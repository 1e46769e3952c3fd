"""The :class:`Tracer` base class and the active-tracer registry.

The active tracer lives in a context variable, so concurrent rollouts (asyncio tasks, threads
started with a copied context) each see their own. A process-wide tracer set with
:func:`set_active_tracer` is the fallback for code running outside any trace context.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings
from abc import abstractmethod
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar, Token
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncContextManager,
    AsyncIterator,
    Awaitable,
    Callable,
    ContextManager,
    Iterator,
    List,
    Optional,
    TypeVar,
    Union,
    cast,
)

from agentlightning.types.core import ParallelWorkerBase
from agentlightning.types.tracer import Attributes, Span, SpanCoreFields, SpanRecordingContext, StatusCode, TraceStatus

if TYPE_CHECKING:
    from agentlightning.store.base import LightningStore

__all__ = [
    "Tracer",
    "get_active_tracer",
    "set_active_tracer",
    "clear_active_tracer",
    "validate_trace_ids",
    "coerce_status",
]


T = TypeVar("T")

_context_tracer: ContextVar[Optional[Tracer]] = ContextVar("agentlightning_active_tracer", default=None)
_process_tracer: Optional[Tracer] = None
_process_tracer_lock = threading.Lock()


def get_active_tracer() -> Optional[Tracer]:
    """The tracer of the current trace context, else the process-wide one, else ``None``."""
    return _context_tracer.get() or _process_tracer


def set_active_tracer(tracer: Tracer) -> None:
    """Set the process-wide fallback tracer.

    Raises ``RuntimeError`` if a different tracer is already set (call :func:`clear_active_tracer`
    first). Setting the same tracer again is a no-op. Trace contexts do not need this: they make
    their tracer active for the code they run.
    """
    global _process_tracer
    with _process_tracer_lock:
        if _process_tracer is not None and _process_tracer is not tracer:
            raise RuntimeError(
                f"an active tracer is already set ({type(_process_tracer).__name__}); call clear_active_tracer() first"
            )
        _process_tracer = tracer


def clear_active_tracer() -> None:
    """Clear the process-wide fallback tracer (tracers of running trace contexts are unaffected)."""
    global _process_tracer
    with _process_tracer_lock:
        _process_tracer = None


def reset_context_var(var: ContextVar[Any], token: Token[Any]) -> None:
    """``var.reset(token)``, or ``None`` when exited from another context than the one that set it."""
    try:
        var.reset(token)
    except ValueError:
        var.set(None)


def validate_trace_ids(rollout_id: Optional[str], attempt_id: Optional[str]) -> None:
    if (rollout_id is None) != (attempt_id is None):
        raise ValueError(
            "rollout_id and attempt_id must be given together or not at all "
            f"(got rollout_id={rollout_id!r}, attempt_id={attempt_id!r})"
        )


def coerce_status(status: Union[TraceStatus, StatusCode, None], default: StatusCode = "UNSET") -> TraceStatus:
    """Accept a :class:`TraceStatus`, a status code string or ``None``."""
    if status is None:
        return TraceStatus(status_code=default)
    if isinstance(status, TraceStatus):
        return status
    code = str(status).upper()
    if code not in ("UNSET", "OK", "ERROR"):
        raise ValueError(f"invalid status code {status!r}; expected UNSET, OK or ERROR")
    return TraceStatus(status_code=code)


class Tracer(ParallelWorkerBase):
    """Base of all tracers.

    A tracer records what an agent does during one attempt (``trace_context``) and delivers the
    spans to the store. Subclasses implement :meth:`_trace_context`, :meth:`create_span` and
    :meth:`operation_context`, and hand each finished trace to :meth:`_remember`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._store: Optional[LightningStore] = None
        self._last: ContextVar[Optional[List[Span]]] = ContextVar(f"agl_last_trace_{id(self)}", default=None)
        self._last_anywhere: List[Span] = []

    @property
    def store(self) -> Optional[LightningStore]:
        return self._store

    def init_worker(self, worker_id: int, store: Optional[LightningStore] = None, *args: Any, **kwargs: Any) -> None:
        super().init_worker(worker_id, *args, **kwargs)
        if store is not None:
            self._store = store

    @asynccontextmanager
    async def trace_context(
        self,
        name: Optional[str] = None,
        *,
        rollout_id: Optional[str] = None,
        attempt_id: Optional[str] = None,
        store: Optional[LightningStore] = None,
    ) -> AsyncIterator[Any]:
        """Trace everything run inside the ``async with`` block as one attempt.

        With ``rollout_id``/``attempt_id`` (both or neither), spans go to ``store`` (or the store
        given to :meth:`init_worker`); without them they are only kept for :meth:`get_last_trace`.
        The tracer is the active tracer for the code inside the block.
        """
        validate_trace_ids(rollout_id, attempt_id)
        token = _context_tracer.set(self)
        try:
            async with self._trace_context(
                name, rollout_id=rollout_id, attempt_id=attempt_id, store=store or self._store
            ) as handle:
                yield handle
        finally:
            reset_context_var(_context_tracer, token)

    @abstractmethod
    def _trace_context(
        self,
        name: Optional[str],
        *,
        rollout_id: Optional[str],
        attempt_id: Optional[str],
        store: Optional[LightningStore],
    ) -> AsyncContextManager[Any]:
        """The backend-specific part of :meth:`trace_context` (ids already validated)."""

    def _remember(self, spans: List[Span]) -> None:
        self._last.set(spans)
        self._last_anywhere = spans

    def get_last_trace(self) -> List[Span]:
        """Spans of the most recent trace context that completed in the current context (else in any)."""
        last = self._last.get()
        return list(last if last is not None else self._last_anywhere)

    @abstractmethod
    def create_span(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        timestamp: Optional[float] = None,
        status: Union[TraceStatus, StatusCode, None] = None,
    ) -> SpanCoreFields:
        """Record a zero-duration span (``timestamp`` in epoch seconds, default now)."""

    @abstractmethod
    def operation_context(
        self,
        name: str,
        attributes: Optional[Attributes] = None,
        start_time: Optional[float] = None,
        end_time: Optional[float] = None,
    ) -> ContextManager[SpanRecordingContext]:
        """Record a span around a block; exceptions in the block are recorded and mark it ERROR."""

    # -- deprecated conveniences kept for 0.3 code ----------------------------------------------
    def trace_run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Deprecated: run ``func`` inside a fresh trace context (no running event loop allowed)."""
        warnings.warn("Tracer.trace_run is deprecated; use `async with tracer.trace_context()`", DeprecationWarning, 2)

        async def runner() -> T:
            async with self.trace_context():
                result = func(*args, **kwargs)
                if inspect.isawaitable(result):
                    return cast(T, await result)
                return result

        return asyncio.run(runner())

    async def trace_run_async(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Deprecated: await ``func`` inside a fresh trace context."""
        warnings.warn(
            "Tracer.trace_run_async is deprecated; use `async with tracer.trace_context()`", DeprecationWarning, 2
        )
        async with self.trace_context():
            return await func(*args, **kwargs)

    def get_langchain_handler(self, tags: Optional[List[str]] = None) -> Any:
        """No built-in LangChain handler: install ``agentlightning-langchain`` instead."""
        warnings.warn(
            f"{type(self).__name__} has no LangChain handler; use the agentlightning-langchain plugin",
            UserWarning,
            stacklevel=2,
        )
        return None

    @contextmanager
    def lifespan(self, store: Optional[LightningStore] = None) -> Iterator[Tracer]:
        """Run ``init``/``init_worker(0)`` before the block and the teardowns after it."""
        self.init()
        self.init_worker(0, store)
        try:
            yield self
        finally:
            try:
                self.teardown_worker(0)
            finally:
                self.teardown()
