"""The status machine every built-in backend shares, in memory behind one lock; backends add
persistence (``_record``/``_flush``) and span storage (design notes: ``docs/internals.md``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import random
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar, Union

from pydantic import BaseModel

from agentlightning.errors import (
    AttemptNotFoundError,
    InvalidSpanError,
    InvalidStatusError,
    InvalidTransitionError,
    RolloutNotFoundError,
    StoreClosedError,
)
from agentlightning.types import (
    ATTEMPT_STATUSES,
    QUEUING_ROLLOUT_STATUSES,
    ROLLOUT_STATUSES,
    RUNNING_ROLLOUT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    Span,
    Worker,
)
from agentlightning.types.tracer import construct_valid

from .base import UNSET, FilterLogic, LightningStore, LightningStoreStatistics, SortOrder
from .query import check_filter_logic, check_page, check_sort, check_statuses, match_filters, paginate

__all__ = ["IDEMPOTENCY_KEY", "StoreEngine", "SpanQuery", "SpanInsertResult", "rollout_status_from_attempt"]

IDEMPOTENCY_KEY: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("agl_idempotency_key", default=None)
"""The idempotency key of the call being served (the store server sets it from the request's
``Idempotency-Key`` header). A call that creates something (a rollout, an attempt, a dequeue, new
resources; enqueues have their ``client_request_id``) records its answer under the key in the same durable write as its changes, and a later
call with the same key gets that answer instead of being applied again, also after a restart."""
ANSWER_TTL_SECONDS = 900.0  # longer than any client's retries
MAX_ANSWERS = 100_000
_NO_ANSWER: Any = object()

SpanInsertResult = Union[List[bool], "concurrent.futures.Future[List[bool]]"]

FINAL_ATTEMPT_STATUSES = frozenset({"succeeded", "failed", "timeout"})
ENDED_ATTEMPT_STATUSES = frozenset({"succeeded", "failed", "timeout", "unresponsive"})
RUNNER_ENDED_ATTEMPT_STATUSES = frozenset({"succeeded", "failed"})  # set by the runner itself, never by the watchdog
ROLLOUT_SORT_FIELDS = ("rollout_id", "start_time", "end_time", "status", "mode", "resources_id")
ATTEMPT_SORT_FIELDS = ("sequence_id", "attempt_id", "start_time", "end_time", "status", "last_heartbeat_time")
SPAN_SORT_FIELDS = ("sequence_id", "start_time", "end_time", "name", "span_id", "trace_id", "attempt_id")
RESOURCES_SORT_FIELDS = ("resources_id", "create_time", "update_time", "version")
WORKER_SORT_FIELDS = (
    "worker_id",
    "status",
    "last_heartbeat_time",
    "last_dequeue_time",
    "last_busy_time",
    "last_idle_time",
)
WORKER_STATUSES = ("idle", "busy", "unknown")
ROLLOUT_MODES = ("train", "val", "test")


def rollout_status_from_attempt(attempt: Attempt, config: RolloutConfig) -> str:
    """The rollout status implied by its latest attempt's status."""
    if attempt.status in ("preparing", "running", "succeeded"):
        return attempt.status
    if attempt.status in config.retry_condition and attempt.sequence_id < config.max_attempts:
        return "requeuing"
    return "failed"


M = TypeVar("M", bound=BaseModel)


_construct = construct_valid


# Container fields a caller may mutate in place (``rollout.metadata["k"] = v``,
# ``rollout.config.max_attempts = 3``): copies handed out get their own containers, one level deep,
# so changing a returned object never changes the store's state (nor, later, its durable copy).
def _copy_models(mapping: Dict[str, Any]) -> Dict[str, Any]:
    return {k: _clone(v) for k, v in mapping.items()}


_MUTABLE_FIELDS: Dict[type, Tuple[Tuple[str, Callable[[Any], Any]], ...]] = {
    Rollout: (("config", lambda v: _clone(v)), ("metadata", dict)),
    AttemptedRollout: (("config", lambda v: _clone(v)), ("metadata", dict), ("attempt", lambda v: _clone(v))),
    RolloutConfig: (("retry_condition", list),),
    Attempt: (("metadata", dict),),
    Worker: (("heartbeat_stats", dict),),
    ResourcesUpdate: (("resources", _copy_models),),
    Span: (("attributes", dict),),
}


# Shared by every stored rollout without a config of its own: the engine replaces a rollout's config
# and never changes one in place, and callers get copies (fewer objects for the garbage collector).
_DEFAULT_CONFIG = _construct(
    RolloutConfig, {"timeout_seconds": None, "unresponsive_seconds": None, "max_attempts": 1, "retry_condition": []}
)


def _set(model: BaseModel, **fields: Any) -> None:
    """Assign already-valid fields on the store's own objects (pydantic's __setattr__ is slow)."""
    model.__dict__.update(fields)


def _clone(model: M) -> M:
    """A copy handed to callers, so they cannot change the store's state by assignment or by
    mutating its containers (see ``_MUTABLE_FIELDS``)."""
    fields = dict(model.__dict__)
    for name, copy_value in _MUTABLE_FIELDS.get(type(model), ()):
        value = fields[name]
        if value is not None:
            fields[name] = copy_value(value)
    copy = _construct(type(model), fields)
    object.__setattr__(copy, "__pydantic_extra__", model.__pydantic_extra__)
    return copy


def _copy_answer(result: Any) -> Any:
    return [_clone(item) for item in result] if isinstance(result, list) else _clone(result)


def _with_attempt(rollout: Rollout, attempt: Attempt) -> AttemptedRollout:
    return _construct(AttemptedRollout, {**_clone(rollout).__dict__, "attempt": _clone(attempt)})


def _new_id(prefix: str, nbytes: int) -> str:
    # Ids need uniqueness, not secrecy: the module RNG (seeded from os.urandom, reseeded after fork)
    # avoids a syscall per id.
    return f"{prefix}{random.getrandbits(nbytes * 8):0{nbytes * 2}x}"


@dataclass
class SpanQuery:
    """A resolved ``query_spans`` call: which attempts, which filters, which page."""

    rollout_id: str
    attempt_id: Optional[str]
    filters: Dict[str, Tuple[str, str]]  # field -> ("exact"|"contains", value)
    filter_logic: str
    sort_by: Optional[str]
    sort_order: str
    limit: int
    offset: int


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: "asyncio.Future[None]"
    pending: Set[str] = field(default_factory=set)

    def wake(self) -> None:
        def resolve() -> None:
            if not self.future.done():
                self.future.set_result(None)

        try:
            self.loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # the waiter's loop is closed; nobody is waiting any more
            pass


class _Writing:
    """``with engine._writing() as now``: a plain class, as cheap as a context manager gets (every write uses one)."""

    __slots__ = ("engine", "scan")

    def __init__(self, engine: "StoreEngine", scan: bool) -> None:
        self.engine = engine
        self.scan = scan

    def __enter__(self) -> float:
        engine = self.engine
        engine._lock.acquire()
        try:
            engine._check_open()
            now = time.time()
            if self.scan:
                engine._scan(now)
        except BaseException:
            engine._lock.release()
            raise
        return now

    def __exit__(self, *exc: Any) -> None:
        self.engine._lock.release()


class StoreEngine(LightningStore):
    """Status machine, queue, resources and workers; backends add persistence and spans."""

    backend_name = "engine"

    def __init__(self, *, watchdog: bool = True, scan_debounce_seconds: float = 1.0) -> None:
        if scan_debounce_seconds < 0:
            raise ValueError(f"scan_debounce_seconds must be >= 0, got {scan_debounce_seconds!r}")
        self._lock = threading.RLock()
        self._rollouts: Dict[str, Rollout] = {}
        self._attempts: Dict[str, List[Attempt]] = {}
        self._queue: Deque[str] = deque()
        self._queued: Set[str] = set()
        self._request_ids: Dict[str, str] = {}
        self._resources: Dict[str, ResourcesUpdate] = {}
        self._latest_resources_id: Optional[str] = None
        self._workers: Dict[str, Worker] = {}
        self._span_sequence: Dict[str, int] = {}
        self._live: Set[str] = set()  # rollouts in preparing/running: what the watchdog scans
        self._waiters: Dict[str, List[_Waiter]] = {}
        self._watchdog = watchdog
        self._scan_debounce_seconds = scan_debounce_seconds
        self._last_scan = 0.0
        self._answers: "OrderedDict[str, Tuple[float, Any]]" = OrderedDict()  # key -> (expires, result)
        self._started = time.time()
        self._closed = False

    # ---------------------------------------------------------------------------------------------
    # backend hooks
    def _record(self, kind: str, payload: Any) -> None:
        """Record a write (lock held). ``kind``: rollout, attempt, queue_push, queue_pop, resources,
        worker, sequence, request_id. The engine itself keeps nothing durable."""

    async def _flush(self) -> None:
        """Wait until every recorded write is durable."""

    def _insert_spans(self, spans: Sequence[Span]) -> SpanInsertResult:
        """Store spans (lock held); one flag per span: True if new, False if its key already existed.

        A backend that writes asynchronously returns a future of those flags."""
        raise NotImplementedError

    async def _select_spans(self, query: SpanQuery) -> PaginatedResult[Span]:
        raise NotImplementedError

    def _count_spans(self) -> int:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------
    # helpers (lock held)
    def _writing(self, scan: bool = True) -> "_Writing":
        """Hold the lock for a write to an open store (after a watchdog scan); gives the write's time."""
        return _Writing(self, scan)

    def _answered(self) -> Any:
        """The remembered answer of this call's idempotency key (a copy), else ``_NO_ANSWER``."""
        key = IDEMPOTENCY_KEY.get()
        if key is None:
            return _NO_ANSWER
        hit = self._answers.get(key)
        if hit is None or hit[0] < time.time():
            return _NO_ANSWER
        return _copy_answer(hit[1])

    def _once(self, create: Callable[[], Any]) -> Any:
        """The remembered answer of this call's idempotency key, else what ``create()`` makes (remembered)."""
        result = self._answered()
        if result is _NO_ANSWER:
            result = create()
            self._remember(result)
        return result

    def _remember(self, result: Any) -> None:
        """Keep ``result`` as the answer of this call's idempotency key, durably with the call's writes."""
        key = IDEMPOTENCY_KEY.get()
        if key is None:
            return
        now = time.time()
        kept = (now + ANSWER_TTL_SECONDS, _copy_answer(result))
        self._answers[key] = kept
        self._answers.move_to_end(key)
        self._record("answer", (key, *kept))
        while self._answers:  # oldest first: expired ones, and the oldest beyond the cap
            expires, _ = next(iter(self._answers.values()))
            if expires >= now and len(self._answers) <= MAX_ANSWERS:
                break
            self._answers.popitem(last=False)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{type(self).__name__} is closed")

    def _get_rollout(self, rollout_id: str) -> Rollout:
        if not isinstance(rollout_id, str):
            raise TypeError(f"rollout_id must be a str, got {type(rollout_id).__name__} {rollout_id!r}")
        rollout = self._rollouts.get(rollout_id)
        if rollout is None:
            raise RolloutNotFoundError(rollout_id)
        return rollout

    def _get_attempt(self, rollout_id: str, attempt_id: str) -> Attempt:
        attempts = self._attempts.get(rollout_id)
        if not attempts:
            self._get_rollout(rollout_id)
            raise AttemptNotFoundError(attempt_id, f"rollout {rollout_id!r} has no attempts")
        if attempt_id == "latest":
            return attempts[-1]
        for attempt in reversed(attempts):
            if attempt.attempt_id == attempt_id:
                return attempt
        raise AttemptNotFoundError(attempt_id, f"not an attempt of rollout {rollout_id!r}")

    def _get_attempt_for_spans(self, rollout_id: str, attempt_id: str) -> Attempt:
        """The attempt, unless its runner already ended it (``succeeded`` or ``failed``).

        A span after the runner's own end is a runner bug; it is refused so that a trace that
        algorithms may have read already does not change. A ``timeout`` attempt keeps taking
        spans (its runner may not know yet; the spans show what the slow agent did) without
        being revived; an ``unresponsive`` one is revived by them."""
        attempt = self._get_attempt(rollout_id, attempt_id)
        if attempt.status in RUNNER_ENDED_ATTEMPT_STATUSES:
            raise InvalidTransitionError(
                attempt.attempt_id,
                attempt.status,
                "running",
                f"attempt {attempt.attempt_id!r} of rollout {rollout_id!r} already ended and takes no more spans "
                "(send spans before the final status; a retry runs as a new attempt)",
            )
        return attempt

    def _view(self, rollout: Rollout) -> Union[Rollout, AttemptedRollout]:
        """A copy for callers; carries the latest attempt when there is one."""
        attempts = self._attempts.get(rollout.rollout_id)
        if attempts:
            return _with_attempt(rollout, attempts[-1])
        return _clone(rollout)

    def _set_rollout_status(self, rollout: Rollout, status: str, now: float) -> None:
        if rollout.status == status:
            return
        _set(rollout, status=status)
        if status in TERMINAL_ROLLOUT_STATUSES:
            _set(rollout, end_time=now)
            self._live.discard(rollout.rollout_id)
            self._wake(rollout.rollout_id)
        else:
            _set(rollout, end_time=None)
            if status in RUNNING_ROLLOUT_STATUSES:
                self._live.add(rollout.rollout_id)
            else:
                self._live.discard(rollout.rollout_id)
            if status in QUEUING_ROLLOUT_STATUSES and rollout.rollout_id not in self._queued:
                self._queue.append(rollout.rollout_id)
                self._queued.add(rollout.rollout_id)
                self._record("queue_push", rollout.rollout_id)

    def _wake(self, rollout_id: str) -> None:
        for waiter in self._waiters.pop(rollout_id, ()):
            waiter.pending.discard(rollout_id)
            if not waiter.pending:
                waiter.wake()

    def _worker(self, worker_id: str) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = Worker(worker_id=worker_id)
        return worker

    def _sync_worker(self, attempt: Attempt, now: float) -> None:
        if attempt.worker_id is None:
            return
        worker = self._worker(attempt.worker_id)
        if attempt.status in ("succeeded", "failed"):
            if worker.current_attempt_id in (None, attempt.attempt_id):
                _set(worker, status="idle", last_idle_time=now, current_rollout_id=None, current_attempt_id=None)
        elif attempt.status in ("timeout", "unresponsive"):
            if worker.current_attempt_id in (None, attempt.attempt_id):
                _set(worker, status="unknown", current_rollout_id=None, current_attempt_id=None)
        else:
            _set(
                worker,
                status="busy",
                last_busy_time=now,
                current_rollout_id=attempt.rollout_id,
                current_attempt_id=attempt.attempt_id,
            )
        self._record("worker", worker)

    def _start_attempt(self, rollout: Rollout, worker_id: Optional[str], now: float) -> Attempt:
        attempts = self._attempts.setdefault(rollout.rollout_id, [])
        attempt = _construct(
            Attempt,
            dict(
                rollout_id=rollout.rollout_id,
                attempt_id=_new_id("at-", 4),
                sequence_id=len(attempts) + 1,
                start_time=now,
                end_time=None,
                status="preparing",
                worker_id=worker_id,
                last_heartbeat_time=None,
                metadata=None,
            ),
        )
        attempts.append(attempt)
        self._set_rollout_status(rollout, "preparing", now)
        self._record("attempt", attempt)
        self._record("rollout", rollout)
        if worker_id is not None:
            self._sync_worker(attempt, now)
        return attempt

    @staticmethod
    def _check_attempt_transition(attempt: Attempt, status: str) -> None:
        """Raise if ``attempt`` may not move to ``status``; changes nothing."""
        if status not in ATTEMPT_STATUSES:
            raise InvalidStatusError(status, ATTEMPT_STATUSES, "attempt status")
        if attempt.status == status:
            return
        if attempt.status in FINAL_ATTEMPT_STATUSES:
            raise InvalidTransitionError(
                attempt.attempt_id, attempt.status, status, "succeeded, failed and timeout attempts are final"
            )
        if status == "preparing":
            raise InvalidTransitionError(attempt.attempt_id, attempt.status, status, "an attempt cannot go back")

    def _change_attempt_status(self, rollout: Rollout, attempt: Attempt, status: str, now: float) -> None:
        """Apply an attempt status and propagate it to the rollout if the attempt is the latest."""
        self._check_attempt_transition(attempt, status)
        if attempt.status == status:
            return
        _set(attempt, status=status, end_time=now if status in ENDED_ATTEMPT_STATUSES else None)
        self._record("attempt", attempt)
        self._sync_worker(attempt, now)
        latest = self._attempts[rollout.rollout_id][-1]
        if latest is attempt and rollout.status not in TERMINAL_ROLLOUT_STATUSES:
            self._set_rollout_status(rollout, rollout_status_from_attempt(attempt, rollout.config), now)
            self._record("rollout", rollout)

    def _heartbeat(self, rollout: Rollout, attempt: Attempt, now: float) -> None:
        """A span or heartbeat arrived: the attempt is alive."""
        _set(attempt, last_heartbeat_time=now)
        if attempt.status in ("preparing", "unresponsive"):
            self._change_attempt_status(rollout, attempt, "running", now)
        else:
            self._record("attempt", attempt)

    def _watched_attempt(self, rollout_id: str) -> Tuple[Optional[Attempt], Optional[float], Optional[float]]:
        """The latest attempt of a live rollout with a clock, and when it times out / goes unresponsive."""
        config = self._rollouts[rollout_id].config
        attempts = self._attempts.get(rollout_id)
        # No attempt: set running by update_rollout without ever being dequeued, so no clock.
        if not attempts or attempts[-1].status not in ("preparing", "running"):
            return None, None, None
        attempt = attempts[-1]
        timeout_at = attempt.start_time + config.timeout_seconds if config.timeout_seconds is not None else None
        silent_at = None
        if config.unresponsive_seconds is not None:
            silent_at = (attempt.last_heartbeat_time or attempt.start_time) + config.unresponsive_seconds
        return attempt, timeout_at, silent_at

    def _scan(self, now: float, force: bool = False) -> None:
        """Watchdog: mark latest attempts that exceeded their timeout or went silent."""
        if not self._watchdog or (not force and now - self._last_scan < self._scan_debounce_seconds):
            return
        self._last_scan = now
        for rollout_id in list(self._live):
            attempt, timeout_at, silent_at = self._watched_attempt(rollout_id)
            if attempt is None:
                continue
            if timeout_at is not None and now > timeout_at:
                self._change_attempt_status(self._rollouts[rollout_id], attempt, "timeout", now)
            elif silent_at is not None and now > silent_at:
                self._change_attempt_status(self._rollouts[rollout_id], attempt, "unresponsive", now)

    def _next_deadline(self, rollout_ids: Iterable[str]) -> Optional[float]:
        """Earliest moment the watchdog could change one of these rollouts."""
        if not self._watchdog:
            return None
        deadlines = [
            moment
            for rollout_id in rollout_ids
            if rollout_id in self._live
            for moment in self._watched_attempt(rollout_id)[1:]
            if moment is not None
        ]
        return min(deadlines, default=None)

    def _resolve_resources_id(self, resources_id: Optional[str]) -> Optional[str]:
        if resources_id is None:
            return self._latest_resources_id
        if not isinstance(resources_id, str):
            raise TypeError(f"resources_id must be a str, got {type(resources_id).__name__} {resources_id!r}")
        return resources_id

    def _new_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode],
        resources_id: Optional[str],
        config: Optional[RolloutConfig],
        metadata: Optional[Dict[str, Any]],
        status: str,
        now: float,
    ) -> Rollout:
        if mode is not None and mode not in ROLLOUT_MODES:
            raise InvalidStatusError(mode, ROLLOUT_MODES, "rollout mode")
        if config is not None and not isinstance(config, RolloutConfig):
            config = RolloutConfig.model_validate(config)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        rollout = _construct(
            Rollout,
            dict(
                rollout_id=_new_id("ro-", 6),
                input=input,
                start_time=now,
                end_time=None,
                mode=mode,
                resources_id=self._resolve_resources_id(resources_id),
                status=None,  # set below, with what a status change brings (queue, watchdog)
                config=config.model_copy(deep=True) if config is not None else _DEFAULT_CONFIG,
                metadata=dict(metadata) if metadata is not None else None,
            ),
        )
        self._rollouts[rollout.rollout_id] = rollout
        self._set_rollout_status(rollout, status, now)
        self._record("rollout", rollout)
        return rollout

    # ---------------------------------------------------------------------------------------------
    # rollouts
    async def statistics(self) -> LightningStoreStatistics:
        with self._lock:
            by_status: Dict[str, int] = {}
            for rollout in self._rollouts.values():
                by_status[rollout.status] = by_status.get(rollout.status, 0) + 1
            stats = LightningStoreStatistics(
                name=self.backend_name,
                total_rollouts=len(self._rollouts),
                total_attempts=sum(len(a) for a in self._attempts.values()),
                total_spans=self._count_spans(),
                total_resources=len(self._resources),
                total_workers=len(self._workers),
                uptime=time.time() - self._started,
                rollouts_by_status=by_status,
            )
        return stats

    async def start_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        worker_id: Optional[str] = None,
    ) -> AttemptedRollout:
        with self._writing() as now:

            def start() -> AttemptedRollout:
                rollout = self._new_rollout(input, mode, resources_id, config, metadata, "preparing", now)
                return _with_attempt(rollout, self._start_attempt(rollout, worker_id, now))

            result: AttemptedRollout = self._once(start)
        await self._flush()
        return result

    async def enqueue_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        client_request_id: Optional[str] = None,
    ) -> Rollout:
        with self._writing() as now:
            result = self._enqueue(input, mode, resources_id, config, metadata, client_request_id, now)
        await self._flush()
        return result

    def _enqueue(
        self,
        input: Any,
        mode: Optional[RolloutMode],
        resources_id: Optional[str],
        config: Optional[RolloutConfig],
        metadata: Optional[Dict[str, Any]],
        client_request_id: Optional[str],
        now: float,
    ) -> Rollout:
        if client_request_id is not None:
            if not isinstance(client_request_id, str):
                raise TypeError(f"client_request_id must be a str, got {client_request_id!r}")
            existing = self._request_ids.get(client_request_id)
            if existing is not None:
                return _clone(self._rollouts[existing])
        rollout = self._new_rollout(input, mode, resources_id, config, metadata, "queuing", now)
        if client_request_id is not None:
            self._request_ids[client_request_id] = rollout.rollout_id
            self._record("request_id", (client_request_id, rollout.rollout_id))
        return _clone(rollout)

    async def enqueue_many_rollouts(self, rollouts: Sequence[EnqueueRolloutRequest]) -> List[Rollout]:
        requests = [
            r if isinstance(r, EnqueueRolloutRequest) else EnqueueRolloutRequest.model_validate(r) for r in rollouts
        ]
        results: List[Rollout] = []
        with self._writing() as now:
            for r in requests:
                results.append(
                    self._enqueue(r.input, r.mode, r.resources_id, r.config, r.metadata, r.client_request_id, now)
                )
        await self._flush()
        return results

    async def dequeue_many_rollouts(self, *, limit: int = 1, worker_id: Optional[str] = None) -> List[AttemptedRollout]:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        results: List[AttemptedRollout] = []
        with self._writing() as now:
            answer = self._answered()
            if answer is not _NO_ANSWER:
                results, limit = answer, 0  # dequeues nothing more
            while self._queue and len(results) < limit:
                rollout_id = self._queue.popleft()
                self._queued.discard(rollout_id)
                self._record("queue_pop", rollout_id)
                rollout = self._rollouts[rollout_id]
                if rollout.status not in QUEUING_ROLLOUT_STATUSES:
                    continue  # it left the queue by other means (cancelled, revived)
                attempt = self._start_attempt(rollout, worker_id, now)
                results.append(_with_attempt(rollout, attempt))
            if results and answer is _NO_ANSWER:  # an empty poll is safe to repeat
                self._remember(results)
            if worker_id is not None and answer is _NO_ANSWER:
                worker = self._worker(worker_id)
                _set(worker, last_dequeue_time=now)
                if not results:
                    _set(worker, status="idle", last_idle_time=now)
                self._record("worker", worker)
        await self._flush()
        return results

    async def start_attempt(self, rollout_id: str, worker_id: Optional[str] = None) -> AttemptedRollout:
        with self._writing(scan=False) as now:

            def start() -> AttemptedRollout:
                rollout = self._get_rollout(rollout_id)
                return _with_attempt(rollout, self._start_attempt(rollout, worker_id, now))

            result: AttemptedRollout = self._once(start)
        await self._flush()
        return result

    async def query_rollouts(
        self,
        *,
        status_in: Optional[Sequence[str]] = None,
        rollout_id_in: Optional[Sequence[str]] = None,
        rollout_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
        status: Optional[Sequence[str]] = None,
        rollout_ids: Optional[Sequence[str]] = None,
        where: Optional[Callable[[Rollout], bool]] = None,
    ) -> PaginatedResult[Union[Rollout, AttemptedRollout]]:
        """As :meth:`LightningStore.query_rollouts`; ``where`` (in-process backends only) also keeps only the
        rollouts it accepts, ANDed with the rest, before any copy is made (the dashboard's filters)."""
        statuses = status_in if status_in is not None else status
        ids = rollout_id_in if rollout_id_in is not None else rollout_ids
        check_statuses(statuses, ROLLOUT_STATUSES, "rollout status")
        check_sort(sort_by, sort_order, ROLLOUT_SORT_FIELDS)
        check_page(limit, offset)
        predicates: List[Callable[[Rollout], bool]] = []
        if statuses is not None:
            status_set = set(statuses)
            predicates.append(lambda r: r.status in status_set)
        if ids is not None:
            id_set = set(ids)
            predicates.append(lambda r: r.rollout_id in id_set)
        if rollout_id_contains is not None:
            needle = rollout_id_contains
            predicates.append(lambda r: needle in r.rollout_id)
        match = match_filters(predicates, filter_logic)
        if where is not None:
            matched, extra = match, where
            match = lambda r: matched(r) and extra(r)  # noqa: E731
        with self._lock:
            self._scan(time.time())
            if ids is not None and filter_logic == "and":
                candidates: Iterable[Rollout] = [self._rollouts[i] for i in dict.fromkeys(ids) if i in self._rollouts]
            else:
                candidates = self._rollouts.values()
            page = paginate(
                (r for r in candidates if match(r)), sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset
            )
            page.items = [self._view(r) for r in page.items]
        return page

    async def get_rollout_by_id(self, rollout_id: str) -> Optional[Union[Rollout, AttemptedRollout]]:
        if not isinstance(rollout_id, str):
            raise TypeError(f"rollout_id must be a str, got {type(rollout_id).__name__} {rollout_id!r}")
        with self._lock:
            self._scan(time.time())
            rollout = self._rollouts.get(rollout_id)
            return self._view(rollout) if rollout is not None else None

    async def update_rollout(
        self,
        rollout_id: str,
        input: Any = UNSET,
        mode: Any = UNSET,
        resources_id: Any = UNSET,
        status: Any = UNSET,
        config: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Rollout:
        with self._writing(scan=False) as now:
            rollout = self._get_rollout(rollout_id)
            # validate everything before changing anything
            if status is not UNSET and status not in ROLLOUT_STATUSES:
                raise InvalidStatusError(status, ROLLOUT_STATUSES, "rollout status")
            if mode is not UNSET and mode is not None and mode not in ROLLOUT_MODES:
                raise InvalidStatusError(mode, ROLLOUT_MODES, "rollout mode")
            if config is not UNSET:
                if config is None:
                    raise ValueError("config cannot be None; pass a RolloutConfig")
                config = RolloutConfig.model_validate(config) if not isinstance(config, RolloutConfig) else config
            if metadata is not UNSET and metadata is not None and not isinstance(metadata, dict):
                raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
            if (
                status is not UNSET
                and rollout.status in TERMINAL_ROLLOUT_STATUSES
                and status != rollout.status
                and status not in QUEUING_ROLLOUT_STATUSES
            ):
                raise InvalidTransitionError(
                    rollout_id,
                    rollout.status,
                    status,
                    "a finished rollout only reopens through an explicit retry (status 'queuing'/'requeuing' or start_attempt)",
                )
            if config is not UNSET:
                rollout.config = config.model_copy(deep=True)
            if metadata is not UNSET:
                rollout.metadata = dict(metadata) if metadata is not None else None
            for key, value in (("input", input), ("mode", mode), ("resources_id", resources_id)):
                if value is not UNSET:
                    setattr(rollout, key, value)
            if status is not UNSET:
                self._set_rollout_status(rollout, status, now)
            self._record("rollout", rollout)
            result = _clone(rollout)
        await self._flush()
        return result

    async def wait_for_rollouts(self, *, rollout_ids: List[str], timeout: Optional[float] = None) -> List[Rollout]:
        if isinstance(rollout_ids, str):
            raise TypeError("rollout_ids must be a list of ids, not a single string")
        if timeout is not None and timeout < 0:
            timeout = 0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._lock:
                self._check_open()
                self._scan(time.time(), force=True)
                known = [i for i in dict.fromkeys(rollout_ids) if i in self._rollouts]
                pending = {i for i in known if self._rollouts[i].status not in TERMINAL_ROLLOUT_STATUSES}
                remaining = None if deadline is None else deadline - loop.time()
                if not pending or (remaining is not None and remaining <= 0):
                    return [
                        _clone(self._rollouts[i])
                        for i in known
                        if self._rollouts[i].status in TERMINAL_ROLLOUT_STATUSES
                    ]
                waiter = _Waiter(loop=loop, future=loop.create_future(), pending=set(pending))
                for rollout_id in pending:
                    self._waiters.setdefault(rollout_id, []).append(waiter)
                watchdog_at = self._next_deadline(pending)
            # Sleep until every rollout finished, the caller's deadline, or the next moment the
            # watchdog could end one of them (a dead runner sends nothing to wake us).
            wait_for = remaining
            if watchdog_at is not None:
                until_watchdog = max(0.0, watchdog_at - time.time()) + 0.01
                wait_for = until_watchdog if wait_for is None else min(wait_for, until_watchdog)
            try:
                await asyncio.wait_for(asyncio.shield(waiter.future), wait_for)
            except asyncio.TimeoutError:
                pass
            finally:
                with self._lock:
                    for rollout_id in waiter.pending:
                        waiters = self._waiters.get(rollout_id)
                        if waiters and waiter in waiters:
                            waiters.remove(waiter)
                            if not waiters:
                                del self._waiters[rollout_id]

    # ---------------------------------------------------------------------------------------------
    # attempts
    async def query_attempts(
        self,
        rollout_id: str,
        *,
        sort_by: Optional[str] = "sequence_id",
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Attempt]:
        check_sort(sort_by, sort_order, ATTEMPT_SORT_FIELDS)
        check_page(limit, offset)
        with self._lock:
            self._get_rollout(rollout_id)
            attempts = [_clone(a) for a in self._attempts.get(rollout_id, [])]
        return paginate(attempts, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset)

    async def get_latest_attempt(self, rollout_id: str) -> Optional[Attempt]:
        with self._lock:
            self._scan(time.time())
            self._get_rollout(rollout_id)
            attempts = self._attempts.get(rollout_id)
            return _clone(attempts[-1]) if attempts else None

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: Any = UNSET,
        worker_id: Any = UNSET,
        last_heartbeat_time: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Attempt:
        with self._writing() as now:
            rollout = self._get_rollout(rollout_id)
            attempt = self._get_attempt(rollout_id, attempt_id)
            # validate everything before changing anything
            if status is not UNSET:
                self._check_attempt_transition(attempt, status)
            if metadata is not UNSET and metadata is not None and not isinstance(metadata, dict):
                raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
            if last_heartbeat_time is not UNSET and not isinstance(last_heartbeat_time, (int, float)):
                raise TypeError(f"last_heartbeat_time must be a number, got {last_heartbeat_time!r}")
            if worker_id is not UNSET:
                attempt.worker_id = worker_id
            if metadata is not UNSET:
                attempt.metadata = dict(metadata) if metadata is not None else None
            if last_heartbeat_time is not UNSET:
                attempt.last_heartbeat_time = float(last_heartbeat_time)
                if status is UNSET and attempt.status in ("preparing", "unresponsive"):
                    self._change_attempt_status(rollout, attempt, "running", now)
            if status is not UNSET:
                self._change_attempt_status(rollout, attempt, status, now)
            elif worker_id is not UNSET:
                self._sync_worker(attempt, now)
            self._record("attempt", attempt)
            result = _clone(attempt)
        await self._flush()
        return result

    # ---------------------------------------------------------------------------------------------
    # spans
    def _check_spans(self, spans: Sequence[Span]) -> None:
        for span in spans:
            if not isinstance(span, Span):
                raise InvalidSpanError(f"expected an agentlightning Span, got {type(span).__name__}: {span!r:.200}")
        for key in dict.fromkeys((span.rollout_id, span.attempt_id) for span in spans):  # each attempt once
            self._get_attempt_for_spans(*key)

    async def add_many_spans(self, spans: Sequence[Span]) -> List[Span]:
        spans = list(spans)
        if not spans:
            return []
        with self._writing(scan=False) as now:
            self._check_spans(spans)
            seen: Set[Tuple[str, str]] = set()
            for span in spans:
                if span.sequence_id > self._span_sequence.get(span.rollout_id, 0):
                    self._span_sequence[span.rollout_id] = span.sequence_id
                    self._record("sequence", (span.rollout_id, span.sequence_id))
                key = (span.rollout_id, span.attempt_id)
                if key not in seen:
                    seen.add(key)
                    self._heartbeat(self._rollouts[span.rollout_id], self._get_attempt(*key), now)
            inserted = self._insert_spans(spans)
        await self._flush()  # commits the spans too
        flags = inserted if isinstance(inserted, list) else await asyncio.wrap_future(inserted)
        return [span for span, new in zip(spans, flags, strict=True) if new]

    async def get_many_span_sequence_ids(self, rollout_attempt_ids: Sequence[Tuple[str, str]]) -> List[int]:
        result: List[int] = []
        with self._writing(scan=False):
            for rollout_id, attempt_id in dict.fromkeys(rollout_attempt_ids):  # a batch names one attempt many times
                self._get_attempt(rollout_id, attempt_id)
            for rollout_id, _ in rollout_attempt_ids:
                value = self._span_sequence.get(rollout_id, 0) + 1
                self._span_sequence[rollout_id] = value
                result.append(value)
            # Not flushed: ids issued but never used may be issued again after a crash, harmlessly.
            for rollout_id in {r for r, _ in rollout_attempt_ids}:
                self._record("sequence", (rollout_id, self._span_sequence[rollout_id]))
        return result

    async def query_spans(
        self,
        rollout_id: str,
        attempt_id: Optional[str] = None,
        *,
        trace_id: Optional[str] = None,
        trace_id_contains: Optional[str] = None,
        span_id: Optional[str] = None,
        span_id_contains: Optional[str] = None,
        parent_id: Optional[str] = None,
        parent_id_contains: Optional[str] = None,
        name: Optional[str] = None,
        name_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        limit: int = -1,
        offset: int = 0,
        sort_by: Optional[str] = "sequence_id",
        sort_order: SortOrder = "asc",
    ) -> PaginatedResult[Span]:
        check_sort(sort_by, sort_order, SPAN_SORT_FIELDS)
        check_page(limit, offset)
        check_filter_logic(filter_logic)
        with self._lock:
            self._get_rollout(rollout_id)
            resolved: Optional[str] = attempt_id
            if attempt_id == "latest":
                attempts = self._attempts.get(rollout_id)
                if not attempts:
                    return PaginatedResult(items=[], limit=limit, offset=offset, total=0)
                resolved = attempts[-1].attempt_id
            elif attempt_id is not None:
                self._get_attempt(rollout_id, attempt_id)
        filters: Dict[str, Tuple[str, str]] = {}
        for field_name, exact, contains in (
            ("trace_id", trace_id, trace_id_contains),
            ("span_id", span_id, span_id_contains),
            ("parent_id", parent_id, parent_id_contains),
            ("name", name, name_contains),
        ):
            if exact is not None:
                filters[field_name] = ("exact", exact)
            if contains is not None:
                filters[f"{field_name}~"] = ("contains", contains)
        return await self._select_spans(
            SpanQuery(
                rollout_id=rollout_id,
                attempt_id=resolved,
                filters=filters,
                filter_logic=filter_logic,
                sort_by=sort_by,
                sort_order=sort_order,
                limit=limit,
                offset=offset,
            )
        )

    # ---------------------------------------------------------------------------------------------
    # resources
    def _put_resources(self, resources_id: str, resources: NamedResources, now: float) -> ResourcesUpdate:
        validated = ResourcesUpdate.model_validate(
            {"resources_id": resources_id, "create_time": now, "update_time": now, "version": 1, "resources": resources}
        ).resources
        existing = self._resources.get(resources_id)
        update = ResourcesUpdate(
            resources_id=resources_id,
            create_time=existing.create_time if existing else now,
            update_time=now,
            version=existing.version + 1 if existing else 1,
            resources=validated,
        )
        self._resources[resources_id] = update
        self._latest_resources_id = resources_id
        self._record("resources", update)
        return _clone(update)

    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        with self._writing(scan=False) as now:
            result: ResourcesUpdate = self._once(lambda: self._put_resources(_new_id("rs-", 6), resources, now))
        await self._flush()
        return result

    async def update_resources(self, resources_id: str, resources: NamedResources) -> ResourcesUpdate:
        if not isinstance(resources_id, str) or not resources_id:
            raise ValueError(f"resources_id must be a non-empty str, got {resources_id!r}")
        with self._writing(scan=False) as now:
            result = self._put_resources(resources_id, resources, now)
        await self._flush()
        return result

    async def get_resources_by_id(self, resources_id: str) -> Optional[ResourcesUpdate]:
        with self._lock:
            found = self._resources.get(resources_id)
            return _clone(found) if found else None

    async def get_latest_resources(self) -> Optional[ResourcesUpdate]:
        with self._lock:
            if self._latest_resources_id is None:
                return None
            return _clone(self._resources[self._latest_resources_id])

    async def query_resources(
        self,
        *,
        resources_id: Optional[str] = None,
        resources_id_contains: Optional[str] = None,
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[ResourcesUpdate]:
        check_sort(sort_by, sort_order, RESOURCES_SORT_FIELDS)
        check_page(limit, offset)
        with self._lock:
            items = [
                _clone(r)
                for r in self._resources.values()
                if (resources_id is None or r.resources_id == resources_id)
                and (resources_id_contains is None or resources_id_contains in r.resources_id)
            ]
        return paginate(items, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset)

    # ---------------------------------------------------------------------------------------------
    # workers
    async def query_workers(
        self,
        *,
        status_in: Optional[Sequence[str]] = None,
        worker_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Worker]:
        check_statuses(status_in, WORKER_STATUSES, "worker status")
        check_sort(sort_by, sort_order, WORKER_SORT_FIELDS)
        check_page(limit, offset)
        predicates: List[Callable[[Worker], bool]] = []
        if status_in is not None:
            statuses = set(status_in)
            predicates.append(lambda w: w.status in statuses)
        if worker_id_contains is not None:
            needle = worker_id_contains
            predicates.append(lambda w: needle in w.worker_id)
        match = match_filters(predicates, filter_logic)
        with self._lock:
            self._scan(time.time())
            items = [_clone(w) for w in self._workers.values() if match(w)]
        return paginate(items, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset)

    async def get_worker_by_id(self, worker_id: str) -> Optional[Worker]:
        with self._lock:
            worker = self._workers.get(worker_id)
            return _clone(worker) if worker else None

    async def update_worker(self, worker_id: str, heartbeat_stats: Any = UNSET) -> Worker:
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty str, got {worker_id!r}")
        if heartbeat_stats is not UNSET and heartbeat_stats is not None and not isinstance(heartbeat_stats, dict):
            raise TypeError(f"heartbeat_stats must be a dict, got {type(heartbeat_stats).__name__}")
        with self._writing(scan=False) as now:
            worker = self._worker(worker_id)
            worker.last_heartbeat_time = now
            if heartbeat_stats is not UNSET:
                worker.heartbeat_stats = dict(heartbeat_stats) if heartbeat_stats is not None else None
            self._record("worker", worker)
            result = _clone(worker)
        await self._flush()
        return result

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
        for waiter in waiters:
            waiter.wake()
