"""The SFT algorithm: iterative rejection-sampling fine-tuning on the agent's own best traces.

One round:

1. pick ``tasks_per_round`` training tasks (a seeded draw per round, so a resumed run draws the same
   ones; all tasks when None) and enqueue each ``samples_per_task`` times, with the current model
   published as a :class:`~agentlightning.ProxyLLM`: agents call the LLM proxy, which records every call
   and forwards it to the serving backend (``serving=``, a registered name: ``"embedded"`` by default);
2. keep the succeeded rollouts that pass the filter (final reward >= ``reward_threshold`` by default,
   or ``rollout_filter(FinishedRollout) -> bool``);
3. build their fine-tuning records (:mod:`agentlightning_sft.records`): chat records per LLM call
   (tools and tool calls kept) or the exact token sequences (context masked); records that cannot be
   built are counted by reason in the round's metrics;
4. write them to ``data/round-NNNNNN.jsonl`` and train on them with TRL's ``SFTTrainer`` (LoRA through
   PEFT by default), then swap the new weights into the serving backend, checkpoint, log, redraw the curve.

A round whose filter keeps nothing (or whose records all fail) says so, writes no dataset and trains
nothing. Held-out tasks are played once each with greedy decoding before the first round, every
``val_every`` rounds and after the last; accuracy is the share of rewards >= ``success_reward``.
The proxy is the Trainer's ``llm_proxy`` when it has one, else one started for the run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from agentlightning.adapter import TraceToMessages, TraceToTokenSequences
from agentlightning.algorithm.base import Algorithm
from agentlightning.emitter.reward import find_final_reward
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.serving import ServingBackend, start_serving_backend
from agentlightning.store.base import LightningStore
from agentlightning.types import Dataset, EnqueueRolloutRequest, Rollout, RolloutConfig

from .config import SFTConfig
from .learner import SFTLearner, checkpoint_dir, latest_checkpoint
from .records import (
    BuiltRecords,
    FinishedRollout,
    RolloutFilter,
    build_chat_records,
    build_token_records,
    reward_at_least,
)
from .run_log import MetricsLog, plot_curves, records_path, write_records

__all__ = ["SFT"]

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
POLICY_BACKEND_NAME = "sft-policy"
"""The name of the proxy backend SFT adds for the model it serves."""


class SFT(Algorithm):
    """Rejection-sampling fine-tuning: play, keep the best rollouts, fine-tune on them, serve, repeat.

    Args:
        model: a local Hugging Face model folder or hub id; ``None`` is the embedded default model.
        config: :class:`SFTConfig` (or its fields as a dict): record format, LoRA or full, learning rate, ...
        n_rounds: rounds of the run.
        tasks_per_round: training tasks played per round (None: all of them).
        samples_per_task: rollouts per task and round.
        reward_threshold: the default filter keeps rollouts whose final reward is at least this.
        rollout_filter: a function ``(FinishedRollout) -> bool`` replacing the reward threshold.
        val_every: validate every this many rounds (0: only before the first and after the last).
        sampling: sampling parameters of training rollouts (published with the LLM resource).
        val_sampling: sampling parameters of validation rollouts (greedy by default).
        success_reward: a validation rollout counts as correct when its reward is at least this.
        run_dir: where metrics, records, checkpoints and the curve go (default: the Trainer's run folder).
        resume: continue the run in ``run_dir`` from its last checkpoint (also ``Trainer.fit(resume=True)``).
        rollout_timeout: seconds a round waits for its rollouts; unfinished ones are cancelled.
        serving: the serving backend by registered name (``"embedded"``, ``"vllm"``; ``agl plugins`` lists them).
        serving_options: keyword arguments of that backend's factory.
        max_batch_size: rows the embedded backend decodes together.
        progress: show a live progress display (rich).
    """

    def __init__(
        self,
        *,
        model: Optional[str] = None,
        config: Union[SFTConfig, Mapping[str, Any], None] = None,
        n_rounds: int = 3,
        tasks_per_round: Optional[int] = None,
        samples_per_task: int = 4,
        reward_threshold: float = 1.0,
        rollout_filter: Optional[RolloutFilter] = None,
        val_every: int = 1,
        sampling: Optional[Mapping[str, Any]] = None,
        val_sampling: Optional[Mapping[str, Any]] = None,
        success_reward: float = 1.0,
        run_dir: Union[str, Path, None] = None,
        resume: bool = False,
        rollout_timeout: float = 1800.0,
        model_name: str = "policy",
        serving: str = "embedded",
        serving_options: Optional[Mapping[str, Any]] = None,
        max_batch_size: int = 16,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if n_rounds < 0:
            raise ValueError(f"n_rounds must be >= 0, got {n_rounds}")
        if tasks_per_round is not None and tasks_per_round < 1:
            raise ValueError(f"tasks_per_round must be >= 1 or None, got {tasks_per_round}")
        if samples_per_task < 1:
            raise ValueError(f"samples_per_task must be >= 1, got {samples_per_task}")
        if val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {val_every}")
        if rollout_filter is not None and not callable(rollout_filter):
            raise TypeError(f"rollout_filter must be a function (FinishedRollout) -> bool, got {rollout_filter!r}")
        self.model = model
        self.config = config if isinstance(config, SFTConfig) else SFTConfig(**dict(config or {}))
        self.n_rounds = n_rounds
        self.tasks_per_round = tasks_per_round
        self.samples_per_task = samples_per_task
        self.reward_threshold = reward_threshold
        self.rollout_filter: RolloutFilter = rollout_filter or reward_at_least(reward_threshold)
        self.val_every = val_every
        self.sampling = {"temperature": 1.0, "max_tokens": 256, **dict(sampling or {})}
        self.val_sampling = {**self.sampling, "temperature": 0.0, **dict(val_sampling or {})}
        self.success_reward = success_reward
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.rollout_timeout = rollout_timeout
        self.model_name = model_name
        self.serving = serving
        self.serving_options = dict(serving_options or {})
        if serving == "embedded":
            self.serving_options.setdefault("max_batch_size", max_batch_size)
        self.progress = progress
        self.log: Optional[MetricsLog] = None
        self._server: Optional[ServingBackend] = None

    # ------------------------------------------------------------------------------------- set-up
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
        return Path("agl_runs") / f"sft-{time.strftime('%Y%m%d-%H%M%S')}"

    def _model_path(self) -> str:
        if self.model is not None:
            return self.model
        from agentlightning_embedded.default_model import ensure_default_model

        self.model = str(ensure_default_model())
        return self.model

    def _adapter(self) -> Union[TraceToMessages, TraceToTokenSequences]:
        """The Trainer's adapter when it is one SFT can build records with, else the record format's default."""
        try:
            adapter: Any = self.get_adapter()
        except ValueError:
            adapter = None
        wanted = TraceToTokenSequences if self.config.record_format == "tokens" else TraceToMessages
        if adapter is None:
            return wanted()
        if not isinstance(adapter, wanted):
            raise TypeError(
                f"SFT with record_format={self.config.record_format!r} builds records with {wanted.__name__}, "
                f"but the Trainer's adapter is {type(adapter).__name__}; pass such an adapter or none"
            )
        return adapter

    # -------------------------------------------------------------------------------------- run
    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        if not train_dataset:
            raise ValueError("SFT needs a non-empty train_dataset")
        store = self.get_store()
        adapter = self._adapter()
        run_dir = self._resolve_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log = MetricsLog(run_dir)
        trainer = self._trainer_or_none()
        resume = self.resume or bool(getattr(trainer, "resume", False))
        if log.records and not resume:
            raise ValueError(f"{run_dir} already holds a run; pass resume=True to continue it, or another run_dir")

        model_path = self._model_path()
        learner = await asyncio.to_thread(SFTLearner.from_pretrained, model_path, self.config)
        start_round = 0
        if resume:
            checkpoint = latest_checkpoint(run_dir / "checkpoints")
            if checkpoint is not None:
                start_round = await asyncio.to_thread(learner.load_checkpoint, checkpoint)
            log.truncate_after(start_round)
            for stale in (run_dir / "data").glob("round-*.jsonl"):
                if int(stale.stem[len("round-") :]) > start_round:
                    stale.unlink()  # records of a round the kill interrupted: that round is played again
            logger.info("resuming %s at round %d", run_dir, start_round + 1)

        server = await asyncio.to_thread(
            start_serving_backend, self.serving, model_path, served_model_name=self.model_name, **self.serving_options
        )
        self._server = server
        proxy, owns_proxy = self._proxy(store, server)
        display = _Display(self.n_rounds, start_round, enabled=self.progress)
        try:
            if start_round > 0 and self._trained_rounds(log):
                await asyncio.to_thread(self._push, learner, server, proxy, run_dir)
            validated = {int(r["round"]) for r in log.of_kind("validation")}
            for round_index in range(start_round, self.n_rounds):
                due = round_index == 0 or (self.val_every and round_index % self.val_every == 0)
                if val_dataset and due and round_index not in validated:
                    display.show(await self._validate(store, proxy, val_dataset, round_index))
                record = await self._round(
                    store, proxy, server, learner, adapter, train_dataset, round_index + 1, run_dir
                )
                display.show(record)
                plot_curves(log, run_dir / "curve.png")
            if val_dataset and self.n_rounds not in validated:
                display.show(await self._validate(store, proxy, val_dataset, self.n_rounds))
            plot_curves(log, run_dir / "curve.png")
        finally:
            display.close()
            if owns_proxy:
                proxy.stop_thread()
            else:
                proxy.update_backends([b for b in proxy.backends if b.name != POLICY_BACKEND_NAME] or [_route(server)])
            await asyncio.to_thread(server.close)
            self._server = None

    @staticmethod
    def _trained_rounds(log: MetricsLog) -> int:
        return sum(1 for r in log.of_kind("round") if not r.get("skipped"))

    # --------------------------------------------------------------------------- proxy and serving
    def _proxy(self, store: LightningStore, server: ServingBackend) -> Tuple[LLMProxy, bool]:
        """The Trainer's proxy routed to ``server`` (started if needed), or a new one; and whether it is ours."""
        proxy = self.get_llm_proxy()
        if proxy is None:
            return LLMProxy(store, [_route(server)]).start_in_thread(), True
        proxy.update_backends([*(b for b in proxy.backends if b.name != POLICY_BACKEND_NAME), _route(server)])
        if proxy.running:
            return proxy, False
        return proxy.start_in_thread(), True

    def _push(self, learner: SFTLearner, server: ServingBackend, proxy: LLMProxy, run_dir: Path) -> int:
        version = learner.push(server, run_dir / "serving" / ("lora" if learner.is_lora else "full"))
        # A backend may serve new weights under another name (vLLM's LoRA adapters): route it.
        if all(server.model_name not in (b.models or ()) for b in proxy.backends if b.name == POLICY_BACKEND_NAME):
            proxy.update_backends([*(b for b in proxy.backends if b.name != POLICY_BACKEND_NAME), _route(server)])
        return version

    # ------------------------------------------------------------------------------- rollouts
    async def _play(
        self,
        store: LightningStore,
        proxy: LLMProxy,
        tasks: List[Any],
        *,
        mode: str,
        repeats: int,
        sampling: Mapping[str, Any],
        round_index: int,
    ) -> List[Tuple[str, Optional[Rollout]]]:
        """Enqueue every task ``repeats`` times and wait; returns ``(rollout_id, finished rollout or None)``."""
        model = self._server.model_name if self._server is not None else self.model_name
        resources = await store.add_resources(
            {"main_llm": proxy.as_resource(model=model, sampling_parameters=dict(sampling))}
        )
        config = RolloutConfig(timeout_seconds=self.rollout_timeout)
        requests = [
            EnqueueRolloutRequest(
                input=task,
                mode=mode,
                resources_id=resources.resources_id,
                config=config,
                metadata={"round": round_index, "task_index": index},
            )
            for index, task in enumerate(tasks)
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
        return [(rid, finished.get(rid)) for rid in ids]

    async def _finished(self, store: LightningStore, rollout: Optional[Rollout]) -> Optional[FinishedRollout]:
        """The succeeded rollout with its spans and final reward; None for a failed or unfinished one."""
        if rollout is None or rollout.status != "succeeded":
            return None
        spans = list(await store.query_spans(rollout.rollout_id, "latest"))
        return FinishedRollout(rollout, find_final_reward(spans), spans)

    async def _validate(
        self, store: LightningStore, proxy: LLMProxy, val_dataset: Dataset[Any], round_index: int
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        tasks = [val_dataset[i] for i in range(len(val_dataset))]
        played = await self._play(
            store, proxy, tasks, mode="val", repeats=1, sampling=self.val_sampling, round_index=round_index
        )
        outcomes = [await self._finished(store, rollout) for _, rollout in played]
        rewards = [o.reward if o is not None and o.reward is not None else 0.0 for o in outcomes]
        record = {
            "kind": "validation",
            "round": round_index,
            "accuracy": sum(r >= self.success_reward for r in rewards) / len(rewards),
            "reward_mean": sum(rewards) / len(rewards),
            "failed": sum(o is None for o in outcomes),
            "n": len(rewards),
            "seconds": time.perf_counter() - started,
        }
        assert self.log is not None
        self.log.append(record)
        return record

    async def _round(
        self,
        store: LightningStore,
        proxy: LLMProxy,
        server: ServingBackend,
        learner: SFTLearner,
        adapter: Union[TraceToMessages, TraceToTokenSequences],
        train_dataset: Dataset[Any],
        round_index: int,
        run_dir: Path,
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        indices = list(range(len(train_dataset)))
        if self.tasks_per_round is not None and self.tasks_per_round < len(indices):
            indices = random.Random(self.config.seed * 1_000_003 + round_index).sample(indices, self.tasks_per_round)
        played = await self._play(
            store,
            proxy,
            [train_dataset[i] for i in indices],
            mode="train",
            repeats=self.samples_per_task,
            sampling=self.sampling,
            round_index=round_index,
        )
        rollout_seconds = time.perf_counter() - started
        built = BuiltRecords()
        rewards: List[float] = []
        failed = kept = 0
        for rollout_id, rollout in played:
            finished = await self._finished(store, rollout)
            if finished is None:
                failed += 1
                continue
            if finished.reward is not None:
                rewards.append(finished.reward)
            if not self.rollout_filter(finished):
                continue
            kept += 1
            tags = {"rollout_id": rollout_id, "round": round_index, "reward": finished.reward}
            if isinstance(adapter, TraceToTokenSequences):
                built.extend(build_token_records(finished.spans, adapter, metadata=tags))
            else:
                built.extend(build_chat_records(finished.spans, adapter, metadata=tags))

        record: Dict[str, Any] = {
            "kind": "round",
            "round": round_index,
            "rollouts": len(played),
            "failed": failed,
            "kept": kept,
            "reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "records": len(built.records),
            "excluded": dict(Counter(built.excluded)),
            "rollout_seconds": rollout_seconds,
        }
        if not built.records:
            record["skipped"] = True
            record["skip_reason"] = (
                f"no rollout passed the filter ({kept} of {len(played)} kept)"
                if not kept
                else f"no record could be built from the {kept} kept rollouts (excluded: {dict(built.excluded)})"
            )
            logger.warning("round %d: %s; training skipped", round_index, record["skip_reason"])
        else:
            write_records(records_path(run_dir, round_index), built.records)
            training = await asyncio.to_thread(learner.train, built.records, round_index, run_dir / "trl")
            record.update(skipped=False, **training.as_dict())
            record["weights_version"] = await asyncio.to_thread(self._push, learner, server, proxy, run_dir)
        learner.round = round_index
        await asyncio.to_thread(self._checkpoint, learner, run_dir, round_index)
        record["round_seconds"] = time.perf_counter() - started
        assert self.log is not None
        self.log.append(record)
        return record

    def _checkpoint(self, learner: SFTLearner, run_dir: Path, round_index: int) -> None:
        root = run_dir / "checkpoints"
        learner.save_checkpoint(checkpoint_dir(root, round_index))
        finished = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("round-"))
        for old in finished[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)


class _Display:
    """A rich progress bar over the rounds plus one line per event; silent when disabled."""

    def __init__(self, n_rounds: int, start_round: int, *, enabled: bool) -> None:
        self._progress: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]SFT"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        self._task = self._progress.add_task("rounds", total=n_rounds, completed=start_round)
        self._progress.start()

    def show(self, record: Dict[str, Any]) -> None:
        if self._progress is None:
            return
        console = self._progress.console
        if record["kind"] == "validation":
            console.print(
                f"[cyan]validation[/] round {record['round']}: accuracy {record['accuracy']:.1%} "
                f"(n={record['n']}, {record['seconds']:.0f}s)"
            )
            return
        head = (
            f"round {record['round']}: kept {record['kept']}/{record['rollouts']} rollouts, {record['records']} records"
        )
        if record["excluded"]:
            head += f" (excluded {', '.join(f'{k} {v}' for k, v in sorted(record['excluded'].items()))})"
        if record["skipped"]:
            console.print(f"{head}  [yellow]training skipped: {record['skip_reason']}[/]")
        else:
            console.print(
                f"{head}  loss {record['loss']:.4f}  {record['tokens_per_s']:.0f} tok/s  "
                f"round {record['round_seconds']:.0f}s (rollouts {record['rollout_seconds']:.0f}s)"
            )
        self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _route(server: ServingBackend) -> ProxyBackend:
    """The proxy backend for the served model: its current name and token-id request fields."""
    return ProxyBackend(
        server.base_url, models=[server.model_name], request_extras=server.request_extras(), name=POLICY_BACKEND_NAME
    )
