"""The LightningStore protocol and its status machine, shared by every backend (design notes: ``docs/internals.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

from opentelemetry.sdk.trace import ReadableSpan
from typing_extensions import TypedDict

from agentlightning.types import (
    Attempt,
    AttemptedRollout,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    RolloutStatus,
    Span,
    Worker,
    WorkerStatus,
)

__all__ = [
    "LightningStore",
    "LightningStoreCapabilities",
    "LightningStoreStatistics",
    "UNSET",
    "Unset",
    "is_queuing",
    "is_running",
    "is_finished",
]


class Unset:
    """Sentinel type: "argument not given", distinct from ``None``."""

    _instance: Optional["Unset"] = None

    def __new__(cls) -> "Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = Unset()


class LightningStoreCapabilities(TypedDict, total=False):
    thread_safe: bool
    async_safe: bool
    zero_copy: bool
    otlp_traces: bool
    durable: bool


class LightningStoreStatistics(TypedDict, total=False):
    name: str
    total_rollouts: int
    total_attempts: int
    total_spans: int
    total_resources: int
    total_workers: int
    uptime: float
    rollouts_by_status: Dict[str, int]


def is_queuing(rollout: Rollout) -> bool:
    return rollout.status in ("queuing", "requeuing")


def is_running(rollout: Rollout) -> bool:
    return rollout.status in ("preparing", "running")


def is_finished(rollout: Rollout) -> bool:
    return rollout.status in ("failed", "succeeded", "cancelled")


SortOrder = Literal["asc", "desc"]
FilterLogic = Literal["and", "or"]


class LightningStore(ABC):
    """Abstract store. Missing ids raise a subclass of ``ValueError`` naming the id."""

    @property
    def capabilities(self) -> LightningStoreCapabilities:
        return LightningStoreCapabilities()

    @abstractmethod
    async def statistics(self) -> LightningStoreStatistics: ...

    def otlp_traces_endpoint(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} does not ingest OTLP traces")

    async def sync(self) -> None:  # noqa: B027 - a no-op for backends that write through
        """Make every acknowledged write visible to other processes reading the same backend."""

    async def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release connections and flush pending writes. Idempotent."""

    # -- rollouts -------------------------------------------------------------------------------
    @abstractmethod
    async def start_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        worker_id: Optional[str] = None,
    ) -> AttemptedRollout:
        """Create a rollout that bypasses the queue, with attempt #1 ``preparing``."""

    @abstractmethod
    async def enqueue_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        client_request_id: Optional[str] = None,
    ) -> Rollout:
        """Append a ``queuing`` rollout to the FIFO queue.

        ``resources_id=None`` pins the latest resources at enqueue time. A repeated
        ``client_request_id`` returns the rollout created the first time instead of a new one.
        """

    @abstractmethod
    async def enqueue_many_rollouts(self, rollouts: Sequence[EnqueueRolloutRequest]) -> List[Rollout]:
        """Enqueue several rollouts in one call, preserving order."""

    async def dequeue_rollout(self, worker_id: Optional[str] = None) -> Optional[AttemptedRollout]:
        """Pop the oldest queuing rollout and start a new attempt for it; ``None`` if the queue is empty."""
        items = await self.dequeue_many_rollouts(limit=1, worker_id=worker_id)
        return items[0] if items else None

    @abstractmethod
    async def dequeue_many_rollouts(
        self, *, limit: int = 1, worker_id: Optional[str] = None
    ) -> List[AttemptedRollout]: ...

    @abstractmethod
    async def start_attempt(self, rollout_id: str, worker_id: Optional[str] = None) -> AttemptedRollout:
        """Explicit retry: a new attempt even past ``max_attempts`` and even for a finished rollout."""

    @abstractmethod
    async def query_rollouts(
        self,
        *,
        status_in: Optional[Sequence[RolloutStatus]] = None,
        rollout_id_in: Optional[Sequence[str]] = None,
        rollout_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
        status: Optional[Sequence[RolloutStatus]] = None,
        rollout_ids: Optional[Sequence[str]] = None,
    ) -> PaginatedResult[Union[Rollout, AttemptedRollout]]: ...

    @abstractmethod
    async def get_rollout_by_id(self, rollout_id: str) -> Optional[Union[Rollout, AttemptedRollout]]: ...

    @abstractmethod
    async def update_rollout(
        self,
        rollout_id: str,
        input: Any = UNSET,
        mode: Any = UNSET,
        resources_id: Any = UNSET,
        status: Any = UNSET,
        config: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Rollout: ...

    async def cancel_rollout(self, rollout_id: str) -> Rollout:
        """Cancel a rollout; a runner executing it stops the agent on its next check."""
        return await self.update_rollout(rollout_id, status="cancelled")

    @abstractmethod
    async def wait_for_rollouts(self, *, rollout_ids: List[str], timeout: Optional[float] = None) -> List[Rollout]:
        """Block until every id is finished or ``timeout`` passes; return the finished ones (unknown ids omitted)."""

    # -- attempts -------------------------------------------------------------------------------
    @abstractmethod
    async def query_attempts(
        self,
        rollout_id: str,
        *,
        sort_by: Optional[str] = "sequence_id",
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Attempt]: ...

    @abstractmethod
    async def get_latest_attempt(self, rollout_id: str) -> Optional[Attempt]: ...

    @abstractmethod
    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: Any = UNSET,
        worker_id: Any = UNSET,
        last_heartbeat_time: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Attempt:
        """``attempt_id="latest"`` targets the newest attempt."""

    # -- spans ----------------------------------------------------------------------------------
    async def add_span(self, span: Span) -> Optional[Span]:
        """Store a span (a heartbeat for its attempt). Returns ``None`` for a duplicate span id."""
        added = await self.add_many_spans([span])
        return added[0] if added else None

    @abstractmethod
    async def add_many_spans(self, spans: Sequence[Span]) -> List[Span]:
        """Store spans in one batch; returns the ones that were new."""

    async def add_otel_span(
        self, rollout_id: str, attempt_id: str, readable_span: ReadableSpan, sequence_id: Optional[int] = None
    ) -> Optional[Span]:
        if sequence_id is None:
            sequence_id = await self.get_next_span_sequence_id(rollout_id, attempt_id)
        return await self.add_span(Span.from_opentelemetry(readable_span, rollout_id, attempt_id, sequence_id))

    async def get_next_span_sequence_id(self, rollout_id: str, attempt_id: str) -> int:
        return (await self.get_many_span_sequence_ids([(rollout_id, attempt_id)]))[0]

    @abstractmethod
    async def get_many_span_sequence_ids(self, rollout_attempt_ids: Sequence[Tuple[str, str]]) -> List[int]: ...

    @abstractmethod
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
        """Spans of one rollout; ``attempt_id="latest"`` means the newest attempt, ``None`` all attempts."""

    # -- resources ------------------------------------------------------------------------------
    @abstractmethod
    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate: ...

    @abstractmethod
    async def update_resources(self, resources_id: str, resources: NamedResources) -> ResourcesUpdate:
        """Replace the resources under ``resources_id`` (version + 1), or create the id at version 1.

        Either way the result becomes the latest resources.
        """

    @abstractmethod
    async def get_resources_by_id(self, resources_id: str) -> Optional[ResourcesUpdate]: ...

    @abstractmethod
    async def get_latest_resources(self) -> Optional[ResourcesUpdate]: ...

    @abstractmethod
    async def query_resources(
        self,
        *,
        resources_id: Optional[str] = None,
        resources_id_contains: Optional[str] = None,
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[ResourcesUpdate]: ...

    # -- workers --------------------------------------------------------------------------------
    @abstractmethod
    async def query_workers(
        self,
        *,
        status_in: Optional[Sequence[WorkerStatus]] = None,
        worker_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Worker]: ...

    @abstractmethod
    async def get_worker_by_id(self, worker_id: str) -> Optional[Worker]: ...

    @abstractmethod
    async def update_worker(self, worker_id: str, heartbeat_stats: Any = UNSET) -> Worker:
        """Record a worker heartbeat (creates the worker on first sight)."""
