"""``RayExecutionStrategy``: the algorithm in this process, the runners as Ray actors.

The driver (this process) serves the store over HTTP (or hands out the address of a store server
that already runs) and starts one actor per runner; each actor is a client of that server. Ray is
imported when a run starts, never when this module is.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import os
import secrets
import socket
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Set
from urllib.parse import urlsplit

from agentlightning.errors import AgentLightningError
from agentlightning.execution import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from agentlightning.store.base import LightningStore
from agentlightning.utils.aio import run_sync

__all__ = ["RAY_INSTALL_HINT", "TOKEN_AUTH_HINT", "RayClusterUnreachableError", "RayExecutionStrategy"]

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install agentlightning-ray (it brings Ray; add the [client] extra for ray:// addresses)"


TOKEN_AUTH_HINT = (
    "the cluster refused this driver's token: Ray enables token authentication only for a cluster it finds "
    "by itself, so with an explicit address set RAY_AUTH_MODE=token and give the cluster's token through "
    "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token in the driver's environment"
)


def _refused_token(exc: BaseException) -> bool:
    """Whether Ray's connection error comes from token authentication (its cause chain says so)."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RayClusterUnreachableError(AgentLightningError, ConnectionError):
    """The Ray cluster at ``address`` did not answer (or refused this driver)."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"the Ray cluster at {address!r} does not answer: {reason}")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"strategy='ray' needs Ray, which is not installed: {RAY_INSTALL_HINT}") from exc
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """The ``(host, port)`` of ``"host:port"`` or ``"ray://host:port"``; ValueError naming anything else."""
    scheme, sep, netloc = address.partition("://")
    if not sep:
        scheme, netloc = "", address
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if scheme not in ("", "ray") or not host or port is None:
        raise ValueError(f"Ray address must be 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    return host, port


def _probe(address: str, timeout: float) -> None:
    """Fail fast when nothing listens at the address (Ray itself would retry for a minute or more)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise RayClusterUnreachableError(address, f"cannot connect to {host}:{port} ({exc})") from exc


class _RunnerActor:
    """Body of one runner actor: the runner bundle against the store server, until told to stop."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    async def run(self, runner: RunnerBundle, url: str, token: Optional[str], worker_id: int) -> int:
        from agentlightning.store.client import HttpLightningStore

        store = HttpLightningStore(url, token=token)
        try:
            await runner(store, worker_id, self._stop)
        finally:
            await store.close()
        return os.getpid()

    async def stop(self) -> None:
        self._stop.set()

    async def pid(self) -> int:
        return os.getpid()


class RayExecutionStrategy(ExecutionStrategy):
    """Run the algorithm here and ``n_runners`` runners as Ray actors, clients of a store server.

    Where Ray runs:

    * ``address=None``: the cluster ``RAY_ADDRESS`` names, else a local one started for this run (with
      ``num_cpus``) and shut down at its end. A Ray already initialized in this process is used as is.
    * ``address="auto"``, ``"host:port"`` (the head's GCS address) or ``"ray://host:10001"`` (Ray Client,
      the ``[client]`` extra): an existing cluster. An address where nothing answers raises
      :class:`RayClusterUnreachableError` naming it, within ``connect_timeout`` seconds.

    Ray's own settings are left alone: token authentication (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), the dashboard (``include_dashboard`` in
    ``init_options``), ``RAY_ADDRESS``; ``init_options`` go to ``ray.init`` as given.

    The store: a store the Trainer opened is served from this process on ``host:port`` with a random
    token; on an existing cluster it listens on every interface and actors reach it at
    ``advertise_host`` (default: this node's IP as Ray sees it). Given a client of a store server
    (``store="http://..."``), the actors connect to that server instead.

    Placement: each actor asks for ``runner_num_cpus`` CPUs, ``runner_num_gpus`` GPUs and
    ``runner_resources`` (custom resources); ``n_runners="auto"`` starts as many as the cluster's
    resources hold when the run starts. An actor that dies (its process killed, its node lost, its
    runner raising) is replaced, up to ``max_restarts`` times in all; what it was running goes
    unresponsive and is retried per its rollout's config. When the algorithm returns, the actors are
    asked to stop and get ``graceful_timeout`` seconds to finish, then are killed; an algorithm
    error or Ctrl-C kills them at once. Every actor is gone when :meth:`execute` returns or raises.
    """

    def __init__(
        self,
        n_runners: int | str = 1,
        *,
        address: Optional[str] = None,
        num_cpus: Optional[int] = None,
        runner_num_cpus: float = 1.0,
        runner_num_gpus: float = 0.0,
        runner_resources: Optional[Mapping[str, float]] = None,
        runtime_env: Optional[Mapping[str, Any]] = None,
        init_options: Optional[Mapping[str, Any]] = None,
        host: Optional[str] = None,
        port: int = 0,
        advertise_host: Optional[str] = None,
        graceful_timeout: float = 10.0,
        max_restarts: int = 10,
        connect_timeout: float = 5.0,
    ) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ImportError(f"strategy='ray' needs Ray, which is not installed: {RAY_INSTALL_HINT}")
        if n_runners == "auto":
            self.fill_cluster = True
            self.n_runners = 1  # until the run starts and the cluster is known
        elif isinstance(n_runners, int) and not isinstance(n_runners, bool) and n_runners >= 1:
            self.fill_cluster = False
            self.n_runners = n_runners
        else:
            raise ValueError(f"n_runners must be an int >= 1 or 'auto', got {n_runners!r}")
        if address is not None and address != "auto":
            _host_port(address)
        if runner_num_cpus < 0 or runner_num_gpus < 0:
            raise ValueError(
                f"runner_num_cpus and runner_num_gpus must be >= 0, got {runner_num_cpus!r}, {runner_num_gpus!r}"
            )
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.runner_num_cpus = float(runner_num_cpus)
        self.runner_num_gpus = float(runner_num_gpus)
        self.runner_resources = dict(runner_resources or {})
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.init_options = dict(init_options or {})
        self.host = host
        self.port = port
        self.advertise_host = advertise_host
        self.graceful_timeout = graceful_timeout
        self.max_restarts = max_restarts
        self.connect_timeout = connect_timeout
        self.restarts = 0
        self.actor_pids: Set[int] = set()  # every actor process started by the last run (tests, reports)

    # -- connecting ---------------------------------------------------------------------------------
    def _connect(self, ray: Any) -> bool:
        """Initialize Ray; whether this run started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        address = self.address if self.address is not None else os.environ.get("RAY_ADDRESS") or None
        options: Dict[str, Any] = {"runtime_env": self.runtime_env, **self.init_options}
        if address is None:
            options.setdefault("num_cpus", self.num_cpus)
        elif address != "auto":
            _probe(address, self.connect_timeout)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError) as exc:
            if address is None and not _refused_token(exc):
                raise  # a local cluster that cannot start: Ray's own error says why
            reason = str(exc).splitlines()[0]
            if _refused_token(exc):
                reason += f" ({TOKEN_AUTH_HINT})"
            raise RayClusterUnreachableError(address or "local", reason) from exc
        return True

    def _runner_count(self, ray: Any) -> int:
        if not self.fill_cluster:
            return self.n_runners
        total = ray.cluster_resources()
        asks = {"CPU": self.runner_num_cpus, "GPU": self.runner_num_gpus, **self.runner_resources}
        fits = [math.floor(total.get(name, 0.0) / amount) for name, amount in asks.items() if amount > 0]
        count = min(fits) if fits else 1
        if count < 1:
            raise RuntimeError(f"the Ray cluster ({total}) cannot hold one runner asking for {asks}")
        return count

    def _store_address(self, ray: Any, store: LightningStore, started_ray: bool) -> tuple[str, Optional[str], Any]:
        """``(url, token, server)`` the actors use; ``server`` is the one this run started, if any."""
        from agentlightning.server.serve import StoreServer
        from agentlightning.store.client import HttpLightningStore

        if isinstance(store, HttpLightningStore):  # a store server already runs: actors connect to it
            return store.base_url, store.token, None
        local = started_ray and self.address is None and not os.environ.get("RAY_ADDRESS")
        host = self.host or ("127.0.0.1" if local else "0.0.0.0")
        token = secrets.token_urlsafe(24)
        server = StoreServer(store, host=host, port=self.port, token=token).start()
        url = server.url
        if not local:
            advertised = self.advertise_host or ray.util.get_node_ip_address()
            url = f"http://{advertised}:{server.port}"
        return url, token, server

    # -- running ------------------------------------------------------------------------------------
    def execute(self, algorithm: AlgorithmBundle, runner: RunnerBundle, store: LightningStore) -> None:
        ray = _import_ray()
        started_ray = self._connect(ray)
        server: Any = None
        actors: Dict[int, Any] = {}
        runs: Dict[int, Any] = {}  # worker id -> ObjectRef of the actor's run()
        stop = threading.Event()
        completed = False  # only a finished algorithm lets the actors end their rollouts
        self.restarts = 0
        self.actor_pids = set()
        try:
            count = self._runner_count(ray)
            self.n_runners = count
            url, token, server = self._store_address(ray, store, started_ray)
            remote_actor = ray.remote(_RunnerActor).options(
                num_cpus=self.runner_num_cpus,
                num_gpus=self.runner_num_gpus,
                resources=self.runner_resources or None,
                max_restarts=0,  # a dead actor is replaced by a fresh one here, under a new worker name
                **({"runtime_env": self.runtime_env} if self.runtime_env and not started_ray else {}),
            )
            bundle = ray.put(runner)

            def launch(worker_id: int) -> None:
                actor = remote_actor.remote()
                actors[worker_id] = actor
                runs[worker_id] = actor.run.remote(bundle, url, token, worker_id)

            logger.info("store server at %s; starting %d Ray runner actors", url, count)
            for worker_id in range(count):
                launch(worker_id)
            run_sync(self._drive(ray, algorithm, store, stop, actors, runs, launch))
            completed = True
        finally:
            stop.set()
            self._shut_down(ray, actors, runs, graceful=completed)
            if server is not None:
                server.stop()
            if started_ray:
                ray.shutdown()

    async def _drive(
        self,
        ray: Any,
        algorithm: AlgorithmBundle,
        store: LightningStore,
        stop: threading.Event,
        actors: Dict[int, Any],
        runs: Dict[int, Any],
        launch: Any,
    ) -> None:
        """Run the algorithm while replacing dead actors; fail when none is left to run rollouts."""

        async def supervise() -> None:
            finished: Set[int] = set()
            lost: Set[int] = set()
            while True:
                await asyncio.sleep(0.2)
                pending = [ref for worker_id, ref in runs.items() if worker_id not in finished | lost]
                if not pending:
                    continue
                ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                for ref in ready:
                    worker_id = next(w for w, r in runs.items() if r is ref)
                    try:
                        self.actor_pids.add(ray.get(ref))
                        finished.add(worker_id)  # its runner returned (max_rollouts, or stop)
                        continue
                    except ray.exceptions.RayError as exc:
                        reason = str(exc).splitlines()[0]
                    if stop.is_set():
                        lost.add(worker_id)  # stopping anyway: no replacement
                        continue
                    if self.restarts >= self.max_restarts:
                        logger.error("Ray runner actor %d failed (%s); max_restarts reached", worker_id, reason)
                        lost.add(worker_id)
                        continue
                    self.restarts += 1
                    logger.warning("Ray runner actor %d failed (%s); starting a new one", worker_id, reason)
                    ray.kill(actors[worker_id], no_restart=True)
                    launch(worker_id)
                if len(finished | lost) < len(runs):
                    continue
                if not lost:
                    stop.set()  # every runner finished (max_rollouts): nothing more can run
                elif not stop.is_set():
                    raise RuntimeError(
                        f"every Ray runner actor failed and max_restarts ({self.max_restarts}) is spent; "
                        "see the actors' errors above"
                    )

        algorithm_task = asyncio.ensure_future(algorithm(store, stop))
        watcher = asyncio.ensure_future(supervise())
        try:
            await asyncio.wait({algorithm_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done() and not algorithm_task.done():
                watcher.result()  # raises why the runners are gone
            await algorithm_task
        finally:
            for task in (algorithm_task, watcher):
                task.cancel()
            await asyncio.gather(algorithm_task, watcher, return_exceptions=True)

    def _shut_down(self, ray: Any, actors: Dict[int, Any], runs: Dict[int, Any], *, graceful: bool) -> None:
        """Ask every actor to stop, wait up to ``graceful_timeout`` (when ``graceful``), then kill what is left."""
        if not actors:
            return
        for actor in actors.values():
            try:
                actor.stop.remote()
            except Exception:  # noqa: BLE001 -- a dead actor needs no stopping
                pass
        deadline = time.monotonic() + (self.graceful_timeout if graceful else 0.0)
        refs: List[Any] = list(runs.values())
        while refs and time.monotonic() < deadline:
            ready, refs = ray.wait(refs, num_returns=len(refs), timeout=min(0.5, deadline - time.monotonic()))
            for ref in ready:
                try:
                    self.actor_pids.add(ray.get(ref))
                except Exception:  # noqa: BLE001 -- dead or failed actors are reported by the supervisor
                    pass
        if refs:
            logger.warning("killing %d Ray runner actor(s) still running", len(refs))
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
