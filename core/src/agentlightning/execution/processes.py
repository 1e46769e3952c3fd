"""Runners in their own processes, talking HTTP to a store server that this process runs."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import sys
import time
from typing import Any, Dict, Optional

from agentlightning.store.base import LightningStore
from agentlightning.utils.aio import run_sync

from .base import AlgorithmBundle, ExecutionStrategy, RunnerBundle

__all__ = ["ProcessesExecutionStrategy"]

logger = logging.getLogger(__name__)


def _runner_main(runner: RunnerBundle, url: str, token: Optional[str], worker_id: int, stop: Any) -> None:
    """Body of a runner process: a client of the parent's store server, until ``stop`` is set."""
    # Leave without the parent's exit handlers: it owns the store and its files.
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        from agentlightning.store.client import HttpLightningStore

        async def main() -> None:
            store = HttpLightningStore(url, token=token)
            try:
                await runner(store, worker_id, stop)
            finally:
                await store.close()

        asyncio.run(main())
    except BaseException:
        logger.exception("runner process %d failed", worker_id)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ProcessesExecutionStrategy(ExecutionStrategy):
    """Serve ``store`` over HTTP from this process (or use the server ``store`` is a client of) and run
    ``n_runners`` runner processes against it.

    The algorithm runs here. When it returns, runners get ``graceful_timeout`` seconds to finish, then
    are terminated; a runner process that dies is replaced (up to ``max_restarts``) and its rollout is
    retried per its config. An algorithm error or Ctrl-C stops every process.
    """

    def __init__(
        self,
        n_runners: int = 1,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_timeout: float = 10.0,
        terminate_timeout: float = 5.0,
        max_restarts: int = 10,
        start_method: Optional[str] = None,
    ) -> None:
        if n_runners < 1:
            raise ValueError(f"n_runners must be >= 1, got {n_runners!r}")
        self.n_runners = n_runners
        self.host = host
        self.port = port
        self.graceful_timeout = graceful_timeout
        self.terminate_timeout = terminate_timeout
        self.max_restarts = max_restarts
        # fork keeps the agent and the bundles without pickling them; elsewhere spawn needs them picklable.
        default = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._context: Any = multiprocessing.get_context(start_method or default)

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        from agentlightning.server.serve import StoreServer
        from agentlightning.store.client import HttpLightningStore

        stop = self._context.Event()
        server: Optional[StoreServer] = None
        if isinstance(store, HttpLightningStore):  # a store server already runs: runners connect to it
            url, token = store.base_url, store.token
        else:
            token = secrets.token_urlsafe(24)
            server = StoreServer(store, host=self.host, port=self.port, token=token).start()
            url = server.url
        processes: Dict[int, Any] = {}
        restarts = 0

        def launch(worker_id: int) -> None:
            process = self._context.Process(
                target=_runner_main,
                args=(runner, url, token, worker_id, stop),
                name=f"agl-runner-{worker_id}",
                daemon=True,
            )
            process.start()
            processes[worker_id] = process

        async def supervise(done: "asyncio.Future[None]") -> None:
            nonlocal restarts
            while not done.done():
                await asyncio.sleep(0.2)
                if all(p.exitcode == 0 for p in processes.values()):
                    stop.set()  # every runner finished (max_rollouts): nothing more can run
                for worker_id, process in list(processes.items()):
                    if process.is_alive() or stop.is_set() or restarts >= self.max_restarts:
                        continue
                    restarts += 1
                    logger.warning(
                        "runner process %d (pid %s) exited with %s; starting a new one",
                        worker_id,
                        process.pid,
                        process.exitcode,
                    )
                    launch(worker_id)

        async def main() -> None:
            done: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
            watcher = asyncio.ensure_future(supervise(done))
            try:
                await algorithm(store, stop)
            finally:
                done.set_result(None)
                await watcher

        logger.info("store server at %s; starting %d runner processes", url, self.n_runners)
        try:
            for worker_id in range(self.n_runners):
                launch(worker_id)
            run_sync(main())
        finally:
            stop.set()
            self._shut_down(processes)
            if server is not None:
                server.stop()

    def _shut_down(self, processes: Dict[int, Any]) -> None:
        """Graceful stop, then SIGTERM, then SIGKILL, each with a deadline."""
        deadline = time.monotonic() + self.graceful_timeout
        for process in processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for escalate in ("terminate", "kill"):
            alive = [p for p in processes.values() if p.is_alive()]
            if not alive:
                return
            logger.warning("%s %d runner process(es) still running", escalate, len(alive))
            for process in alive:
                getattr(process, escalate)()
            for process in alive:
                process.join(self.terminate_timeout)
