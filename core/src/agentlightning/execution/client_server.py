"""0.3's ``ClientServerExecutionStrategy`` and stop events, over :class:`ProcessesExecutionStrategy`;
the role (``AGL_CURRENT_ROLE``: ``both``, ``algorithm`` or ``runner``) decides what runs here."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.synchronize
import threading
from typing import Awaitable, Optional, Sequence

from agentlightning.env_var import LightningEnvVar, resolve_int_env_var, resolve_str_env_var
from agentlightning.runner.base import ExecutionEvent
from agentlightning.store.base import LightningStore
from agentlightning.utils.aio import run_sync

from .base import AlgorithmBundle, RunnerBundle
from .processes import ProcessesExecutionStrategy

__all__ = ["ClientServerExecutionStrategy", "ExecutionEvent", "MultiprocessingEvent", "ThreadingEvent"]

logger = logging.getLogger(__name__)

ROLES = ("algorithm", "runner", "both")


class ThreadingEvent(threading.Event):
    """A stop event shared by bundles in threads of one process."""


class MultiprocessingEvent(multiprocessing.synchronize.Event):
    """A stop event shared by bundles in processes."""

    def __init__(self) -> None:
        super().__init__(ctx=multiprocessing.get_context())


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


class ClientServerExecutionStrategy(ProcessesExecutionStrategy):
    """Runs the algorithm and the runners in separate processes that talk to a store server.

    ``role``, ``server_host`` and ``server_port`` default to ``AGL_CURRENT_ROLE`` (``both``),
    ``AGL_SERVER_HOST`` and ``AGL_SERVER_PORT`` (4747; a free port with ``both``). The 0.3 options
    ``main_process``, ``managed_store``, ``allowed_exit_codes`` are accepted (dead runners are restarted).
    """

    def __init__(
        self,
        role: Optional[str] = None,
        server_host: Optional[str] = None,
        server_port: Optional[int] = None,
        n_runners: int = 1,
        graceful_timeout: float = 10.0,
        terminate_timeout: float = 10.0,
        main_process: str = "algorithm",
        managed_store: Optional[bool] = None,
        allowed_exit_codes: Sequence[int] = (0, -15),
    ) -> None:
        role = role or resolve_str_env_var(LightningEnvVar.AGL_CURRENT_ROLE, fallback="both")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if main_process not in ("algorithm", "runner"):
            raise ValueError(f"main_process must be 'algorithm' or 'runner', got {main_process!r}")
        host = server_host or resolve_str_env_var(LightningEnvVar.AGL_SERVER_HOST, fallback="127.0.0.1")
        port = resolve_int_env_var(LightningEnvVar.AGL_SERVER_PORT, override=server_port, fallback=None)
        if port is None:
            port = 0 if role == "both" else 4747
        super().__init__(
            n_runners,
            host=host or "127.0.0.1",
            port=port,
            graceful_timeout=graceful_timeout,
            terminate_timeout=terminate_timeout,
        )
        self.role = role
        self.main_process = main_process
        self.managed_store = managed_store
        self.allowed_exit_codes = tuple(allowed_exit_codes)

    @property
    def server_address(self) -> str:
        return f"http://{self.host}:{self.port}"

    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        if self.role == "both":
            super().execute(algorithm, runner, store)
        elif self.role == "algorithm":
            self._serve_algorithm(algorithm, store)
        else:
            self._run_runners(runner)

    def _serve_algorithm(self, algorithm: AlgorithmBundle, store: LightningStore) -> None:
        from agentlightning.server.serve import StoreServer

        token = resolve_str_env_var(LightningEnvVar.AGL_STORE_TOKEN)
        server = StoreServer(store, host=self.host, port=self.port, token=token).start()
        self.port = server.port  # the port bound, when 0 asked for a free one
        logger.info("store server for remote runners at %s", server.url)
        try:
            run_sync(_as_coroutine(algorithm(store, ThreadingEvent())))
        finally:
            server.stop()

    def _run_runners(self, runner: RunnerBundle) -> None:
        from agentlightning.store.client import HttpLightningStore

        async def main() -> None:
            client = HttpLightningStore(self.server_address)
            stop = ThreadingEvent()
            try:
                await asyncio.gather(*(runner(client, worker_id, stop) for worker_id in range(self.n_runners)))
            finally:
                await client.close()

        logger.info("%d runner(s) for the store server at %s", self.n_runners, self.server_address)
        run_sync(main())
