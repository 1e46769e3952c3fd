"""The run loop GRPO and SFT share: serve a trainable model behind the LLM proxy, play, learn, serve again.

:class:`ServedModelTraining` owns everything around one iteration (a GRPO step, an SFT round): the run
folder and ``metrics.jsonl``, resuming from the last checkpoint, starting the serving backend by name
and routing the LLM proxy to it, publishing the model as a :class:`~agentlightning.ProxyLLM` and
waiting for rollouts, held-out validation (greedy, before the first iteration, every ``val_every`` and
after the last; accuracy is the share of rewards >= ``success_reward``), pushing new weights to the
server, checkpoints (the newest two kept), the curve and the progress display. A subclass loads its
learner, runs one iteration and says how to checkpoint and serve its weights.

The proxy is the Trainer's ``llm_proxy`` when it has one (the served model's backend is added to its
backends, and it is started if it is not running), else one started for the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Generic, List, Mapping, Optional, Tuple, TypeVar, Union

from agentlightning.algorithm.base import Algorithm
from agentlightning.emitter.reward import find_final_reward
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.serving import ServingBackend, start_serving_backend
from agentlightning.store.base import LightningStore
from agentlightning.types import Dataset, EnqueueRolloutRequest, Rollout, RolloutConfig, Span

from .memory import release_freed_memory
from .run_log import MetricsLog, checkpoint_dir, latest_checkpoint, plot_curves, prune_checkpoints

__all__ = ["PlayedRollout", "RunContext", "ServedModelTraining"]

logger = logging.getLogger(__name__)

LearnerT = TypeVar("LearnerT")


@dataclass(frozen=True)
class RunContext:
    """What one iteration works with."""

    store: LightningStore
    proxy: LLMProxy
    server: ServingBackend
    run_dir: Path


@dataclass(frozen=True)
class PlayedRollout:
    """One enqueued rollout: its id, the index of its task in the played list, and the rollout once finished."""

    rollout_id: str
    task_index: int
    rollout: Optional[Rollout]


class ServedModelTraining(Algorithm, Generic[LearnerT]):
    """Base of algorithms that train the model they serve; subclasses implement the ``_`` hooks below."""

    title: ClassVar[str] = "training"
    """Shown on the progress display and the curve."""
    unit: ClassVar[str] = "step"
    """What one iteration is called: the metrics key, checkpoint folder prefix and rollout metadata key."""
    train_kind: ClassVar[str] = "train"
    """The ``kind`` of an iteration's metrics record."""
    train_curve: ClassVar[Tuple[str, str]] = ("reward_mean", "train reward (mean)")
    """The field of an iteration's record the curve plots, and its label."""
    policy_backend_name: ClassVar[str] = "policy"
    """The name of the proxy backend added for the served model."""
    keep_checkpoints: ClassVar[int] = 2

    def __init__(
        self,
        *,
        model: Optional[str],
        n_iterations: int,
        val_every: int,
        sampling: Optional[Mapping[str, Any]],
        val_sampling: Optional[Mapping[str, Any]],
        success_reward: float,
        run_dir: Union[str, Path, None],
        resume: bool,
        rollout_timeout: float,
        model_name: str,
        serving: str,
        serving_options: Optional[Mapping[str, Any]],
        max_batch_size: int,
        progress: bool,
    ) -> None:
        super().__init__()
        if val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {val_every}")
        self.model = model
        self.n_iterations = n_iterations
        self.val_every = val_every
        self.sampling = {"temperature": 1.0, "max_tokens": 256, **dict(sampling or {})}
        self.val_sampling = {**self.sampling, "temperature": 0.0, **dict(val_sampling or {})}
        self.success_reward = success_reward
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.rollout_timeout = rollout_timeout
        self.max_batch_size = max_batch_size
        self.model_name = model_name
        self.serving = serving
        self.serving_options = dict(serving_options or {})
        if serving == "embedded":
            self.serving_options.setdefault("max_batch_size", max_batch_size)
        self.progress = progress
        self.log: Optional[MetricsLog] = None
        self._server: Optional[ServingBackend] = None

    # ------------------------------------------------------------------------ subclass hooks
    def _load_learner(self, model_path: str) -> LearnerT:
        """The trainable model (called in a worker thread)."""
        raise NotImplementedError

    def _restore(self, learner: LearnerT, checkpoint: Path) -> int:
        """Load ``checkpoint`` into ``learner``; the index of the last finished iteration."""
        raise NotImplementedError

    def _save_checkpoint(self, learner: LearnerT, path: Path, index: int) -> None:
        """Write the checkpoint after iteration ``index`` to the folder ``path`` (``state.json`` last)."""
        raise NotImplementedError

    def _serve_weights(self, learner: LearnerT, server: ServingBackend, run_dir: Path) -> int:
        """Give the server the learner's current weights; the weights version it serves."""
        raise NotImplementedError

    async def _iterate(
        self, context: RunContext, learner: LearnerT, train_dataset: Dataset[Any], index: int
    ) -> Dict[str, Any]:
        """Play and learn once; the iteration's metrics, with ``skipped: True`` when nothing was trained."""
        raise NotImplementedError

    def _describe(self, record: Dict[str, Any]) -> str:
        """The display's line for an iteration's record."""
        raise NotImplementedError

    def _serving_options_for(self, learner: LearnerT) -> Dict[str, Any]:
        """The serving backend's options for this learner (default: ``serving_options`` as given)."""
        return dict(self.serving_options)

    def _on_server_started(self, learner: LearnerT, server: ServingBackend) -> None:
        """Called once the backend serves the base model (default: nothing)."""

    def _on_resume(self, run_dir: Path, index: int) -> None:
        """Tidy what an iteration after ``index`` left in ``run_dir`` before the kill (default: nothing)."""

    # ------------------------------------------------------------------------------- set-up
    def _trainer_or_none(self) -> Any:
        try:
            return self.get_trainer()
        except (RuntimeError, ValueError):
            return None

    def _resolve_run_dir(self) -> Path:
        if self.run_dir is not None:
            return self.run_dir
        trainer = self._trainer_or_none()
        if trainer is not None and getattr(trainer, "run_dir", None) is not None:
            return Path(trainer.run_dir)
        return Path("agl_runs") / f"{self.title.lower()}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _model_path(self) -> str:
        if self.model is None:
            from agentlightning_embedded.default_model import ensure_default_model

            self.model = str(ensure_default_model())
        return self.model

    # ---------------------------------------------------------------------------------- run
    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        if not train_dataset:
            raise ValueError(f"{self.title} needs a non-empty train_dataset")
        store = self.get_store()
        run_dir = self._resolve_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log = MetricsLog(run_dir, self.unit)
        trainer = self._trainer_or_none()
        resume = self.resume or bool(getattr(trainer, "resume", False))
        if log.records and not resume:
            raise ValueError(f"{run_dir} already holds a run; pass resume=True to continue it, or another run_dir")

        model_path = self._model_path()
        learner = await asyncio.to_thread(self._load_learner, model_path)
        start = 0
        if resume:
            checkpoint = latest_checkpoint(run_dir / "checkpoints", self.unit)
            if checkpoint is not None:
                start = await asyncio.to_thread(self._restore, learner, checkpoint)
            log.truncate_after(start)
            self._on_resume(run_dir, start)
            logger.info("resuming %s at %s %d", run_dir, self.unit, start + 1)

        options = self._serving_options_for(learner)
        server = await asyncio.to_thread(
            start_serving_backend, self.serving, model_path, served_model_name=self.model_name, **options
        )
        self._server = server
        self._on_server_started(learner, server)
        proxy, owns_proxy = self._proxy(store, server)
        context = RunContext(store, proxy, server, run_dir)
        display = _Display(self.title, self.unit, self.n_iterations, start, self._describe, enabled=self.progress)
        try:
            if any(not r.get("skipped") for r in log.of_kind(self.train_kind)):
                await asyncio.to_thread(self._push, learner, context)
            validated = {int(r[self.unit]) for r in log.of_kind("validation")}
            for index in range(start, self.n_iterations):
                due = index == 0 or (self.val_every and index % self.val_every == 0)
                if val_dataset and due and index not in validated:
                    display.show(await self._validate(context, val_dataset, index))
                display.show(await self._iteration(context, learner, train_dataset, index + 1))
                self._plot(run_dir)
            if val_dataset and self.n_iterations not in validated:
                display.show(await self._validate(context, val_dataset, self.n_iterations))
            self._plot(run_dir)
        finally:
            display.close()
            if owns_proxy:
                proxy.stop_thread()
            else:
                others = [b for b in proxy.backends if b.name != self.policy_backend_name]
                proxy.update_backends(others or [self._route(server)])
            await asyncio.to_thread(server.close)
            self._server = None

    async def _iteration(
        self, context: RunContext, learner: LearnerT, train_dataset: Dataset[Any], index: int
    ) -> Dict[str, Any]:
        started, cpu_started = time.perf_counter(), time.process_time()
        record = {"kind": self.train_kind, self.unit: index}
        record.update(await self._iterate(context, learner, train_dataset, index))
        release_freed_memory()  # the update's activations, before decoding needs memory again
        if not record.get("skipped"):
            record["weights_version"] = await asyncio.to_thread(self._push, learner, context)
        await asyncio.to_thread(self._checkpoint, learner, context.run_dir, index)
        record[f"{self.unit}_seconds"] = time.perf_counter() - started
        record["cpu_seconds"] = time.process_time() - cpu_started
        assert self.log is not None
        self.log.append(record)
        return record

    def _checkpoint(self, learner: LearnerT, run_dir: Path, index: int) -> None:
        root = run_dir / "checkpoints"
        self._save_checkpoint(learner, checkpoint_dir(root, index, self.unit), index)
        prune_checkpoints(root, self.keep_checkpoints)

    def _plot(self, run_dir: Path) -> None:
        assert self.log is not None
        series, label = self.train_curve
        plot_curves(
            self.log,
            run_dir / "curve.png",
            title=f"{self.title} run",
            train_kind=self.train_kind,
            train_series=series,
            train_label=label,
        )

    # -------------------------------------------------------------------- proxy and serving
    def _route(self, server: ServingBackend) -> ProxyBackend:
        """The proxy backend for the served model: its current name and token-id request fields. A call
        may wait as long as its rollout does (a busy CPU queues calls for many minutes)."""
        return ProxyBackend(
            server.base_url,
            models=[server.model_name],
            request_extras=server.request_extras(),
            name=self.policy_backend_name,
            timeout_seconds=self.rollout_timeout,
        )

    def _proxy(self, store: LightningStore, server: ServingBackend) -> Tuple[LLMProxy, bool]:
        """The Trainer's proxy routed to ``server`` (started if needed), or a new one; and whether it is ours."""
        proxy = self.get_llm_proxy()
        if proxy is None:
            return LLMProxy(store, [self._route(server)]).start_in_thread(), True
        proxy.update_backends([*(b for b in proxy.backends if b.name != self.policy_backend_name), self._route(server)])
        if proxy.running:
            return proxy, False
        return proxy.start_in_thread(), True

    def _push(self, learner: LearnerT, context: RunContext) -> int:
        version = self._serve_weights(learner, context.server, context.run_dir)
        # A backend may serve new weights under another name (vLLM's LoRA adapters): route it.
        proxy, name = context.proxy, context.server.model_name
        if all(name not in (b.models or ()) for b in proxy.backends if b.name == self.policy_backend_name):
            others = [b for b in proxy.backends if b.name != self.policy_backend_name]
            proxy.update_backends([*others, self._route(context.server)])
        return version

    # ------------------------------------------------------------------------------ rollouts
    async def _play(
        self,
        context: RunContext,
        tasks: List[Any],
        *,
        mode: str,
        repeats: int,
        sampling: Mapping[str, Any],
        index: int,
    ) -> List[PlayedRollout]:
        """Enqueue every task ``repeats`` times with the served model as ``main_llm`` and wait for them;
        rollouts still unfinished after ``rollout_timeout`` are cancelled (and come back as None)."""
        store = context.store
        # The name the backend serves the newest weights under (vLLM names its LoRA adapter).
        model = self._server.model_name if self._server is not None else self.model_name
        # The served model replaces the LLM; every other initial resource (a prompt APO optimized before
        # this stage, say) is carried into each version the agent gets.
        carried = {name: r for name, r in (self.get_initial_resources() or {}).items() if name != "main_llm"}
        resources = await store.add_resources(
            {**carried, "main_llm": context.proxy.as_resource(model=model, sampling_parameters=dict(sampling))}
        )
        config = RolloutConfig(timeout_seconds=self.rollout_timeout)
        requests = [
            EnqueueRolloutRequest(
                input=task,
                mode=mode,
                resources_id=resources.resources_id,
                config=config,
                metadata={self.unit: index, "task_index": task_index, "group": f"{mode}-{index}-{task_index}"},
            )
            for task_index, task in enumerate(tasks)
            for _ in range(repeats)
        ]
        ids = [r.rollout_id for r in await store.enqueue_many_rollouts(requests)]
        finished = {
            r.rollout_id: r for r in await store.wait_for_rollouts(rollout_ids=ids, timeout=self.rollout_timeout)
        }
        for rollout_id in ids:
            if rollout_id not in finished:
                logger.warning(
                    "rollout %s did not finish within %.0f s; cancelling it", rollout_id, self.rollout_timeout
                )
                try:
                    await store.cancel_rollout(rollout_id)
                except ValueError:
                    pass
        return [PlayedRollout(rid, position // repeats, finished.get(rid)) for position, rid in enumerate(ids)]

    @staticmethod
    async def _spans(store: LightningStore, played: PlayedRollout) -> Optional[List[Span]]:
        """The spans of a succeeded rollout; None for a failed or unfinished one."""
        if played.rollout is None or played.rollout.status != "succeeded":
            return None
        return list(await store.query_spans(played.rollout_id, "latest"))

    async def _validate(self, context: RunContext, val_dataset: Dataset[Any], index: int) -> Dict[str, Any]:
        started, cpu_started = time.perf_counter(), time.process_time()
        tasks = [val_dataset[i] for i in range(len(val_dataset))]
        played = await self._play(context, tasks, mode="val", repeats=1, sampling=self.val_sampling, index=index)
        rewards: List[Optional[float]] = []
        for rollout in played:
            spans = await self._spans(context.store, rollout)
            rewards.append(None if spans is None else find_final_reward(spans))
        scored = [r if r is not None else 0.0 for r in rewards]
        record = {
            "kind": "validation",
            self.unit: index,
            "accuracy": sum(r >= self.success_reward for r in scored) / len(scored),
            "reward_mean": sum(scored) / len(scored),
            "failed": sum(r is None for r in rewards),
            "n": len(scored),
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            # In the dataset's order, so that two validations can be compared problem by problem.
            "rewards": scored,
        }
        assert self.log is not None
        self.log.append(record)
        release_freed_memory()
        return record


class _Display:
    """A rich progress bar over the iterations plus one line per event; silent when disabled."""

    def __init__(self, title: str, unit: str, total: int, start: int, describe: Any, *, enabled: bool) -> None:
        self._progress: Any = None
        self._unit = unit
        self._describe = describe
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        self._task = self._progress.add_task(f"{unit}s", total=total, completed=start)
        self._progress.start()

    def show(self, record: Dict[str, Any]) -> None:
        if self._progress is None:
            return
        if record["kind"] == "validation":
            self._progress.console.print(
                f"[cyan]validation[/] {self._unit} {record[self._unit]}: accuracy {record['accuracy']:.1%} "
                f"(n={record['n']}, {record['seconds']:.0f}s)"
            )
            return
        self._progress.console.print(self._describe(record))
        self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
