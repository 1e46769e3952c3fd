"""``Trainer``: wires an agent, an algorithm, a store and runners, and runs them."""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import re
import secrets
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from agentlightning.adapter import Adapter, TracerTraceToTriplet
from agentlightning.algorithm import Algorithm, Baseline, FastAlgorithm
from agentlightning.execution import (
    ExecutionStrategy,
    SharedMemoryExecutionStrategy,
)
from agentlightning.litagent import LitAgent
from agentlightning.plugins import resolve
from agentlightning.runner import LitAgentRunner, Runner
from agentlightning.runner.base import ExecutionEvent
from agentlightning.store import LightningStore, open_store
from agentlightning.tracer import OtelTracer, Tracer
from agentlightning.types import Dataset, Hook, NamedResources
from agentlightning.utils.aio import run_sync

from .build import build_component

if TYPE_CHECKING:
    from agentlightning.proxy import LLMProxy

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _RunnerBundle:
    """What a runner slot runs: a copy of the Trainer's runner driving the agent until stopped.

    A plain object (no closure over the Trainer), so strategies that place runners in other
    processes or on other hosts can pickle it (``spawn``, Ray actors).
    """

    def __init__(self, runner: Runner[Any], agent: LitAgent[Any], hooks: Sequence[Hook]) -> None:
        self.runner = runner
        self.agent = agent
        self.hooks = list(hooks)
        self.finished: List[int] = []  # worker ids done, seen by an algorithm-less run in this process

    async def __call__(self, store: LightningStore, worker_id: int, event: ExecutionEvent) -> None:
        runner = self.runner if worker_id == 0 else copy.copy(self.runner)
        runner.init(self.agent, hooks=self.hooks)
        try:
            runner.init_worker(worker_id, store)
            try:
                await runner.iter(event=event)
            finally:
                runner.teardown_worker(worker_id)
        finally:
            runner.teardown()
            self.finished.append(worker_id)


class Trainer:
    """Train ``agent`` with ``algorithm`` on a store, with ``n_runners`` runners.

    Components are instances, classes, factories, import strings (``"pkg.mod:Cls"``), registered names
    or dicts with a ``type`` key. ``store`` may be a URI; by default a SQLite file in ``run_dir``
    (``./agl_runs/<timestamp>-<id>``). A store the Trainer built is closed by :meth:`close`.
    """

    def __init__(
        self,
        *,
        dev: bool = False,
        n_runners: Optional[int] = None,
        max_rollouts: Optional[int] = None,
        initial_resources: Optional[NamedResources] = None,
        tracer: Any = None,
        adapter: Any = None,
        store: Any = None,
        runner: Any = None,
        strategy: Any = None,
        algorithm: Any = None,
        llm_proxy: Optional[LLMProxy] = None,
        hooks: Optional[Sequence[Hook]] = None,
        run_dir: Union[str, Path, None] = None,
        port: Optional[int] = None,
        n_workers: Optional[int] = None,
        max_tasks: Optional[int] = None,
        triplet_exporter: Any = None,
        daemon: Optional[bool] = None,
    ) -> None:
        if n_workers is not None:
            warnings.warn("Trainer(n_workers=...) is deprecated; use n_runners", DeprecationWarning, stacklevel=2)
            n_runners = n_runners if n_runners is not None else n_workers
        if max_tasks is not None:
            warnings.warn("Trainer(max_tasks=...) is deprecated; use max_rollouts", DeprecationWarning, stacklevel=2)
            max_rollouts = max_rollouts if max_rollouts is not None else max_tasks
        if triplet_exporter is not None:
            warnings.warn("Trainer(triplet_exporter=...) is deprecated; use adapter", DeprecationWarning, stacklevel=2)
            adapter = adapter if adapter is not None else triplet_exporter
        if dev:
            warnings.warn("Trainer(dev=True) is deprecated; call trainer.dev(...)", DeprecationWarning, stacklevel=2)
        if daemon is not None or port is not None:
            warnings.warn("Trainer(daemon=/port=) have no effect in-process", DeprecationWarning, stacklevel=2)
        if n_runners is not None and n_runners < 1:
            raise ValueError(f"n_runners must be >= 1, got {n_runners!r}")

        self.n_runners = n_runners or 1
        self.max_rollouts = max_rollouts
        self.initial_resources = initial_resources
        self.hooks: List[Hook] = list(hooks or [])
        if isinstance(llm_proxy, dict):  # 0.3: a dict of LLMProxy options; the proxy gets the run's store
            from agentlightning.proxy import LLMProxy

            llm_proxy = LLMProxy(**llm_proxy)
        self.llm_proxy = llm_proxy
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = False
        self._store_spec = store
        self._store: Optional[LightningStore] = None
        self._owns_store = False

        self.tracer: Tracer = build_component(  # type: ignore[assignment]
            tracer,
            Tracer,  # type: ignore[type-abstract]
            "tracer",
            default_factory=OtelTracer,
            registry=functools.partial(resolve, "tracers"),
        )
        self.adapter: Optional[Adapter[Any, Any]] = build_component(
            adapter,
            Adapter,
            "adapter",
            allow_none=True,
            registry=functools.partial(resolve, "adapters"),
            dict_default_cls=TracerTraceToTriplet,  # 0.3: adapter={"agent_match": ...} configures the default
        )
        self.algorithm: Optional[Algorithm] = build_component(
            algorithm, Algorithm, "algorithm", allow_none=True, registry=functools.partial(resolve, "algorithms")
        )
        self.strategy: ExecutionStrategy = build_component(
            strategy,
            ExecutionStrategy,
            "strategy",
            default_factory=lambda: SharedMemoryExecutionStrategy(n_runners=self.n_runners),
            optional_defaults={"n_runners": self.n_runners},
            registry=functools.partial(resolve, "execution_strategies"),
        )  # type: ignore[assignment]
        self.n_runners = getattr(self.strategy, "n_runners", self.n_runners)
        self.runner: Runner[Any] = build_component(
            runner,
            Runner,
            "runner",
            default_factory=lambda: LitAgentRunner(tracer=self.tracer, max_rollouts=self.max_rollouts),
            optional_defaults={"tracer": self.tracer, "max_rollouts": self.max_rollouts},
        )  # type: ignore[assignment]
        if store is not None:  # built now (last: a bad spec above leaves nothing open), usable at once as in 0.3
            self._store, self._owns_store = self._build_store(store)

    # -- entry points ------------------------------------------------------------------------------
    def fit(
        self,
        agent: LitAgent[Any],
        train_dataset: Optional[Dataset[Any]] = None,
        *,
        val_dataset: Optional[Dataset[Any]] = None,
        resume: bool = False,
    ) -> None:
        """Run the algorithm and the runners until the algorithm finishes.

        ``resume=True`` asks the algorithm to continue the run in ``run_dir`` (its store, checkpoints
        and metrics) instead of starting over; algorithms without state to resume ignore it.
        """
        self.resume = resume
        if isinstance(train_dataset, str):
            raise TypeError(
                "fit(agent, '<server url>') was the v0.1 client-server API and is gone; pass a dataset (a list works)"
            )
        self._run(agent, self.algorithm, train_dataset, val_dataset)

    def dev(
        self,
        agent: LitAgent[Any],
        train_dataset: Optional[Dataset[Any]] = None,
        *,
        val_dataset: Optional[Dataset[Any]] = None,
    ) -> None:
        """Dry-run the agent on the datasets with a fast algorithm (default :class:`Baseline`)."""
        algorithm = self.algorithm if self.algorithm is not None else Baseline()
        if not isinstance(algorithm, FastAlgorithm):
            raise TypeError(
                f"Trainer.dev needs a FastAlgorithm (such as Baseline), got {type(algorithm).__name__}; use fit() instead"
            )
        self.algorithm = algorithm
        self._run(agent, algorithm, train_dataset, val_dataset)

    # -- wiring ------------------------------------------------------------------------------------
    @property
    def store(self) -> Optional[LightningStore]:
        """The store; the default SQLite file is opened on first use. None once :meth:`close` closed it."""
        if self._store is None and self._store_spec is None and not self._closed:
            self._store, self._owns_store = self._build_store(None)
        return self._store

    @store.setter
    def store(self, store: Optional[LightningStore]) -> None:
        self._store, self._owns_store = store, False

    _closed = False

    def _build_store(self, spec: Any) -> Tuple[LightningStore, bool]:
        """The store ``spec`` names, and whether this Trainer built it (and so closes it)."""
        if isinstance(spec, LightningStore):
            return spec, False
        if spec is None:
            if self.run_dir is None:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                self.run_dir = Path("agl_runs") / f"{stamp}-{secrets.token_hex(3)}"
            self.run_dir.mkdir(parents=True, exist_ok=True)
            spec = f"sqlite:///{(self.run_dir / 'store.db').resolve()}"
        if isinstance(spec, str) and _URI.match(spec):
            store = open_store(spec)
        else:
            built = build_component(spec, LightningStore, "store")  # type: ignore[type-abstract]
            assert built is not None  # build_component refuses None unless allow_none
            store = built
        logger.info("store: %s", spec)
        return store, True

    def _open_store(self) -> LightningStore:
        """The store of this run: the one built or given, or a new one after :meth:`close`."""
        store = self.store
        if store is None:
            self._closed = False
            self._store, self._owns_store = self._build_store(self._store_spec)
            store = self._store
        return store

    def close(self) -> None:
        """Close the store this Trainer opened from a URI (flushing it and releasing its file).

        A store passed in as an object is left open: it belongs to the caller."""
        if self._store is not None and self._owns_store:
            store, self._store, self._owns_store = self._store, None, False
            self._closed = True
            run_sync(store.close())

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _run(
        self,
        agent: LitAgent[Any],
        algorithm: Optional[Algorithm],
        train_dataset: Optional[Dataset[Any]],
        val_dataset: Optional[Dataset[Any]],
    ) -> None:
        if not isinstance(agent, LitAgent):
            raise TypeError(f"the agent must be a LitAgent (decorate a function with @agl.rollout), got {agent!r}")
        store = self._open_store()
        agent.set_trainer(self)
        runner_bundle = _RunnerBundle(self.runner, agent, self.hooks)
        n_runners = self.strategy.n_runners
        if algorithm is None and self.initial_resources:
            # Without an algorithm the trainer publishes the initial resources itself, before any
            # runner (in this process or another) can dequeue.
            run_sync(store.update_resources("default", self.initial_resources))

        async def algorithm_bundle(store: LightningStore, event: ExecutionEvent) -> None:
            if algorithm is None:
                # Nothing to drive: serve the runners until stopped, or until every runner is done
                # (max_rollouts reached), so that the run ends instead of idling forever.
                while not event.is_set() and len(runner_bundle.finished) < n_runners:
                    await asyncio.sleep(0.05)
                return
            algorithm.set_trainer(self)
            algorithm.set_store(store)
            if self.adapter is not None:
                algorithm.set_adapter(self.adapter)
            if self.initial_resources is not None:
                algorithm.set_initial_resources(self.initial_resources)
            if self.llm_proxy is not None:
                if getattr(self.llm_proxy, "store", False) is None:
                    self.llm_proxy.set_store(store)
                algorithm.set_llm_proxy(self.llm_proxy)
            if algorithm.is_async():
                await algorithm.run(train_dataset=train_dataset, val_dataset=val_dataset)  # type: ignore[misc]
            else:
                await asyncio.to_thread(algorithm.run, train_dataset=train_dataset, val_dataset=val_dataset)

        try:
            self.strategy.execute(algorithm_bundle, runner_bundle, store)
        finally:
            run_sync(store.sync())  # other processes (agl store stats, dashboards) see the whole run
