"""Core data model: rollouts, attempts, workers, triplets and query helpers."""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Generic,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    TypeVar,
    Union,
    get_args,
    overload,
)

from pydantic import BaseModel, Field, model_validator
from typing_extensions import TypedDict

if TYPE_CHECKING:
    from agentlightning.litagent import LitAgent
    from agentlightning.runner import Runner
    from agentlightning.tracer import Tracer
    from agentlightning.types.tracer import Span

__all__ = [
    "Triplet",
    "RolloutRawResult",
    "RolloutMode",
    "GenericResponse",
    "ParallelWorkerBase",
    "Dataset",
    "AttemptStatus",
    "RolloutStatus",
    "RolloutConfig",
    "Rollout",
    "Attempt",
    "AttemptedRollout",
    "EnqueueRolloutRequest",
    "Hook",
    "Worker",
    "WorkerStatus",
    "PaginatedResult",
    "FilterOptions",
    "SortOptions",
    "FilterField",
    "ROLLOUT_STATUSES",
    "ATTEMPT_STATUSES",
    "TERMINAL_ROLLOUT_STATUSES",
    "QUEUING_ROLLOUT_STATUSES",
    "RUNNING_ROLLOUT_STATUSES",
    "TERMINAL_ATTEMPT_STATUSES",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

RolloutStatus = Literal["queuing", "preparing", "running", "failed", "succeeded", "cancelled", "requeuing"]
AttemptStatus = Literal["preparing", "running", "failed", "succeeded", "unresponsive", "timeout"]
RolloutMode = Literal["train", "val", "test"]
WorkerStatus = Literal["idle", "busy", "unknown"]

ROLLOUT_STATUSES: tuple[str, ...] = get_args(RolloutStatus)
ATTEMPT_STATUSES: tuple[str, ...] = get_args(AttemptStatus)
TERMINAL_ROLLOUT_STATUSES = frozenset({"failed", "succeeded", "cancelled"})
QUEUING_ROLLOUT_STATUSES = frozenset({"queuing", "requeuing"})
RUNNING_ROLLOUT_STATUSES = frozenset({"preparing", "running"})
# Attempts that ended; ``timeout``/``unresponsive`` attempts may still be revived by spans (unresponsive only).
TERMINAL_ATTEMPT_STATUSES = frozenset({"failed", "succeeded", "timeout", "unresponsive"})


class Triplet(BaseModel):
    """One LLM call turned into training data: prompt, response and the reward assigned to it."""

    prompt: Any
    response: Any
    reward: Optional[float] = None
    metadata: Dict[str, Any] = Field(default_factory=dict)


class GenericResponse(BaseModel):
    status: str = "success"
    message: Optional[str] = None
    data: Optional[Dict[str, Any]] = None


class RolloutConfig(BaseModel):
    """Per-rollout retry and watchdog policy. The defaults mean: one attempt, no watchdog."""

    timeout_seconds: Optional[float] = Field(default=None, gt=0)
    unresponsive_seconds: Optional[float] = Field(default=None, gt=0)
    max_attempts: int = Field(default=1, ge=1)
    retry_condition: List[AttemptStatus] = Field(default_factory=list)


class Attempt(BaseModel):
    """One execution of a rollout by a runner. ``sequence_id`` is 1-based within the rollout."""

    rollout_id: str
    attempt_id: str
    sequence_id: int
    start_time: float
    end_time: Optional[float] = None
    status: AttemptStatus = "preparing"
    worker_id: Optional[str] = None
    last_heartbeat_time: Optional[float] = None
    metadata: Optional[Dict[str, Any]] = None


class Rollout(BaseModel):
    """A unit of work (one task input) and its lifecycle status."""

    rollout_id: str
    input: Any
    start_time: float
    end_time: Optional[float] = None
    mode: Optional[RolloutMode] = None
    resources_id: Optional[str] = None
    status: RolloutStatus = "queuing"
    config: RolloutConfig = Field(default_factory=RolloutConfig)
    metadata: Optional[Dict[str, Any]] = None


class AttemptedRollout(Rollout):
    """A rollout together with the attempt that a runner is (or was last) executing."""

    attempt: Attempt

    @model_validator(mode="after")
    def _attempt_belongs_to_rollout(self) -> "AttemptedRollout":
        if self.attempt.rollout_id != self.rollout_id:
            raise ValueError(
                f"attempt {self.attempt.attempt_id!r} belongs to rollout {self.attempt.rollout_id!r}, not {self.rollout_id!r}"
            )
        return self


class EnqueueRolloutRequest(BaseModel):
    """Arguments of one enqueue. ``client_request_id`` makes the enqueue idempotent."""

    input: Any
    mode: Optional[RolloutMode] = None
    resources_id: Optional[str] = None
    config: Optional[RolloutConfig] = None
    metadata: Optional[Dict[str, Any]] = None
    client_request_id: Optional[str] = None


class Worker(BaseModel):
    """A runner as seen by the store: status derived from its attempts, plus heartbeats."""

    worker_id: str
    status: WorkerStatus = "unknown"
    heartbeat_stats: Optional[Dict[str, Any]] = None
    last_heartbeat_time: Optional[float] = None
    last_dequeue_time: Optional[float] = None
    last_busy_time: Optional[float] = None
    last_idle_time: Optional[float] = None
    current_rollout_id: Optional[str] = None
    current_attempt_id: Optional[str] = None


class PaginatedResult(BaseModel, Generic[T]):
    """A page of query results; iterates, indexes and measures like its ``items`` list."""

    items: List[T]
    limit: int
    offset: int
    total: int

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:  # type: ignore[override]
        return iter(self.items)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> List[T]: ...
    def __getitem__(self, index: Union[int, slice]) -> Union[T, List[T]]:
        return self.items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return self.items == other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


class FilterField(TypedDict, total=False):
    exact: Any
    within: Sequence[Any]
    contains: str


FilterOptions = Mapping[str, Any]
"""Field name -> :class:`FilterField`, plus ``_aggregate`` ("and"/"or") and ``_must`` (always ANDed)."""


class SortOptions(TypedDict):
    name: str
    order: Literal["asc", "desc"]


class Dataset(Protocol[T_co]):
    """Anything indexable with a length (a list works)."""

    def __getitem__(self, index: int) -> T_co: ...

    def __len__(self) -> int: ...


RolloutRawResult = Union[None, float, List[Any]]
"""What an agent's rollout may return: nothing, a final reward, or spans it built itself."""


class ParallelWorkerBase:
    """Lifecycle shared by tracers, runners and hooks: init once, then per worker."""

    def __init__(self) -> None:
        self.worker_id: Optional[int] = None

    def init(self, *args: Any, **kwargs: Any) -> None:
        pass

    def init_worker(self, worker_id: int, *args: Any, **kwargs: Any) -> None:
        self.worker_id = worker_id

    def run(self, *args: Any, **kwargs: Any) -> Any:
        pass

    def teardown_worker(self, worker_id: int, *args: Any, **kwargs: Any) -> None:
        pass

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        pass


class Hook(ParallelWorkerBase):
    """Per-rollout callbacks a runner invokes; override the ones you need (all default to no-ops)."""

    async def on_trace_start(
        self, *, agent: "LitAgent[Any]", runner: "Runner[Any]", tracer: "Tracer", rollout: Rollout
    ) -> None:
        pass

    async def on_trace_end(
        self, *, agent: "LitAgent[Any]", runner: "Runner[Any]", tracer: "Tracer", rollout: Rollout
    ) -> None:
        pass

    async def on_rollout_start(self, *, agent: "LitAgent[Any]", runner: "Runner[Any]", rollout: Rollout) -> None:
        pass

    async def on_rollout_end(
        self, *, agent: "LitAgent[Any]", runner: "Runner[Any]", rollout: Rollout, spans: "List[Span]"
    ) -> None:
        pass
