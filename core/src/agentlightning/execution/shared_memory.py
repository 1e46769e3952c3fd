"""In-process execution: the algorithm and every runner share one event loop and one store."""

from __future__ import annotations

import asyncio
import threading
from typing import Optional

from agentlightning.store.base import LightningStore
from agentlightning.utils.aio import run_sync

from .base import AlgorithmBundle, ExecutionStrategy, RunnerBundle

__all__ = ["SharedMemoryExecutionStrategy"]


class SharedMemoryExecutionStrategy(ExecutionStrategy):
    """Run the algorithm and ``n_runners`` runners as tasks of one asyncio loop in this process; when
    the algorithm returns the runners finish what they hold, and any bundle's error cancels the rest."""

    def __init__(
        self,
        n_runners: int = 1,
        main_thread: str = "runner",
        join_timeout: float = 15.0,
        graceful_delay: float = 5.0,
        poll_interval: float = 0.05,
        managed_store: Optional[bool] = None,
    ) -> None:
        # The 0.3 options after n_runners are accepted and have no effect: every bundle is a task
        # of one event loop (0.3 ran each in a thread of its own, sharing one runner object).
        if main_thread not in ("runner", "algorithm"):
            raise ValueError(f"main_thread must be 'runner' or 'algorithm', got {main_thread!r}")
        if n_runners < 1:
            raise ValueError(f"n_runners must be >= 1, got {n_runners!r}")
        self.n_runners = n_runners

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        run_sync(self.execute_async(algorithm, runner, store))

    async def execute_async(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        stop = threading.Event()
        algorithm_task = asyncio.ensure_future(algorithm(store, stop))
        runner_tasks = [asyncio.ensure_future(runner(store, i, stop)) for i in range(self.n_runners)]
        everything = [algorithm_task, *runner_tasks]
        failure: Optional[BaseException] = None
        try:
            pending = set(everything)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():
                        continue
                    if task.exception() is not None and failure is None:
                        failure = task.exception()
                if failure is not None:
                    break
                if algorithm_task.done():
                    stop.set()  # runners finish what they hold, then return
        finally:
            stop.set()
            for task in everything:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
        if failure is not None:
            raise failure
