"""The ``Runner`` interface."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, Iterator, Optional, Protocol, Sequence

from typing_extensions import TypeVar

from agentlightning.types import Hook, NamedResources, ParallelWorkerBase, Rollout, RolloutMode

if TYPE_CHECKING:
    from agentlightning.litagent import LitAgent
    from agentlightning.store.base import LightningStore

__all__ = ["Runner", "ExecutionEvent"]

T = TypeVar("T", default=Any)  # `LitAgentRunner[MyTask](...)` as in 0.3; unannotated: Any


class ExecutionEvent(Protocol):
    """A stop signal shared by the algorithm and runners (``threading.Event`` fits)."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: Optional[float] = None) -> bool: ...


class Runner(ParallelWorkerBase, Generic[T]):
    """Executes rollouts from a store with an agent."""

    def init(self, agent: "LitAgent[T]", *, hooks: Optional[Sequence[Hook]] = None, **kwargs: Any) -> None:
        raise NotImplementedError

    def init_worker(self, worker_id: int, store: "LightningStore", **kwargs: Any) -> None:
        raise NotImplementedError

    async def iter(self, *, event: Optional[ExecutionEvent] = None) -> None:
        raise NotImplementedError

    async def step(
        self,
        input: T,
        *,
        resources: Optional[NamedResources] = None,
        mode: Optional[RolloutMode] = None,
        event: Optional[ExecutionEvent] = None,
    ) -> Rollout:
        raise NotImplementedError

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Runner.run() is gone; use `await runner.iter()` or `await runner.step(task)`")

    @contextmanager
    def run_context(
        self,
        *,
        agent: "LitAgent[T]",
        store: "LightningStore",
        hooks: Optional[Sequence[Hook]] = None,
        worker_id: int = 0,
    ) -> Iterator["Runner[T]"]:
        """Set the runner up for one worker and tear it down afterwards (handy for debugging)."""
        self.init(agent, hooks=hooks)
        try:
            self.init_worker(worker_id, store)
            try:
                yield self
            finally:
                self.teardown_worker(worker_id)
        finally:
            self.teardown()

    def step_sync(self, input: T, **kwargs: Any) -> Rollout:
        """:meth:`step` for code without an event loop."""
        return asyncio.run(self.step(input, **kwargs))
