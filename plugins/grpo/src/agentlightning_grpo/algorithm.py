"""The GRPO algorithm: play each task ``group_size`` times, learn from the exact tokens, serve the new policy.

One step:

1. pick ``tasks_per_step`` tasks (a seeded draw per step, so a resumed run draws the same ones);
2. enqueue each ``group_size`` times with the current policy published as a
   :class:`~agentlightning.ProxyLLM`: agents call the LLM proxy, which records every call with the
   serving engine's token ids and logprobs, and forwards it to the serving backend (``serving=``,
   a name registered through ``agl_register_serving_backends``: ``"embedded"`` by default, ``"vllm"``);
3. wait for the rollouts, turn each into token sequences with the rollout's final reward (the
   Trainer's adapter when it has one, else :class:`TraceToTokenSequences`: tool results and other
   context masked out);
4. group-relative advantages (a failed rollout leaves its group with a warning);
5. one clipped policy-gradient update (:class:`TrainablePolicy`, LoRA through PEFT by default);
6. push the new adapter (or merged weights) to the serving backend, checkpoint, log metrics, redraw the curve.

The proxy is the Trainer's ``llm_proxy`` when it has one (the policy's backend is added to its
backends, and it is started if it is not running), else one started for the run.

Every ``val_every`` steps (and at the start and the end) the held-out tasks are played once each with
greedy decoding; accuracy is the share of rewards at or above ``success_reward``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from agentlightning.adapter import Adapter, TokenSequence, TraceToTokenSequences
from agentlightning.algorithm.base import Algorithm
from agentlightning.emitter.reward import find_final_reward
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.serving import ServingBackend, start_serving_backend
from agentlightning.store.base import LightningStore
from agentlightning.types import Dataset, EnqueueRolloutRequest, Rollout, RolloutConfig, Span

from .advantages import RolloutReward, compute_group_advantages
from .config import GRPOConfig
from .memory import release_freed_memory
from .policy import TrainablePolicy, checkpoint_dir, latest_checkpoint
from .run_log import MetricsLog, plot_curves

__all__ = ["GRPO"]

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
POLICY_BACKEND_NAME = "grpo-policy"
"""The name of the proxy backend GRPO adds for the policy it serves."""


class GRPO(Algorithm):
    """Group Relative Policy Optimization on the agent's own multi-call trajectories.

    Args:
        model: a local Hugging Face model folder or hub id; ``None`` is the embedded default model
            (Qwen2.5-Coder-0.5B-Instruct from the ``agentlightning-embedded[default-model]`` packages).
        serving: the serving backend that serves the policy, by registered name: ``"embedded"`` (the
            default, agentlightning-embedded: transformers in this process) or ``"vllm"``
            (agentlightning-vllm); ``agl plugins`` lists those installed.
        serving_options: keyword arguments of that backend's factory (e.g. ``{"dtype": "bfloat16"}``).
        config: :class:`GRPOConfig` (or its fields as a dict): group size, learning rate, LoRA, ...
        n_steps: training steps of the run.
        tasks_per_step: distinct tasks per step; each is played ``config.group_size`` times.
        val_every: validate every this many steps (0: only at the start and the end).
        sampling: sampling parameters of training rollouts (published with the LLM resource).
        val_sampling: sampling parameters of validation rollouts (greedy by default).
        success_reward: a validation rollout counts as correct when its reward is at least this.
        run_dir: where checkpoints, metrics and the curve go (default: the Trainer's run folder).
        resume: continue the run in ``run_dir`` from its last checkpoint (also ``Trainer.fit(resume=True)``).
        rollout_timeout: seconds a step waits for its rollouts; unfinished ones count as failed.
        max_batch_size: rows the embedded backend decodes together (a ``serving_options`` entry for it).
        progress: show a live progress display (rich).
    """

    def __init__(
        self,
        *,
        model: Optional[str] = None,
        config: Union[GRPOConfig, Mapping[str, Any], None] = None,
        n_steps: int = 10,
        tasks_per_step: int = 4,
        val_every: int = 5,
        sampling: Optional[Mapping[str, Any]] = None,
        val_sampling: Optional[Mapping[str, Any]] = None,
        success_reward: float = 1.0,
        run_dir: Union[str, Path, None] = None,
        resume: bool = False,
        rollout_timeout: float = 1800.0,
        max_batch_size: int = 16,
        model_name: str = "policy",
        progress: bool = True,
        serving: str = "embedded",
        serving_options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be >= 1, got {tasks_per_step}")
        if val_every < 0:
            raise ValueError(f"val_every must be >= 0, got {val_every}")
        self.model = model
        self.config = config if isinstance(config, GRPOConfig) else GRPOConfig(**dict(config or {}))
        self.n_steps = n_steps
        self.tasks_per_step = tasks_per_step
        self.val_every = val_every
        self.sampling = {"temperature": 1.0, "max_tokens": 256, **dict(sampling or {})}
        self.val_sampling = {**self.sampling, "temperature": 0.0, **dict(val_sampling or {})}
        self.success_reward = success_reward
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.rollout_timeout = rollout_timeout
        self.max_batch_size = max_batch_size
        self.model_name = model_name
        self.progress = progress
        self.serving = serving
        self.serving_options = dict(serving_options or {})
        if serving == "embedded":
            self.serving_options.setdefault("max_batch_size", max_batch_size)
        self.log: Optional[MetricsLog] = None
        self._model_path_cache: Optional[str] = None
        self._server: Optional[ServingBackend] = None
        self._tokenizer: Any = None

    # ------------------------------------------------------------------------------------- set-up
    def _resolve_run_dir(self) -> Path:
        if self.run_dir is not None:
            return self.run_dir
        trainer = self._trainer_or_none()
        if trainer is not None and getattr(trainer, "run_dir", None) is not None:
            return Path(trainer.run_dir)
        return Path("agl_runs") / f"grpo-{time.strftime('%Y%m%d-%H%M%S')}"

    def _trainer_or_none(self) -> Any:
        try:
            return self.get_trainer()
        except (RuntimeError, ValueError):
            return None

    def _resume_requested(self) -> bool:
        trainer = self._trainer_or_none()
        return self.resume or bool(getattr(trainer, "resume", False))

    def _model_path(self) -> str:
        if self.model is not None:
            return self.model
        if self._model_path_cache is None:
            from agentlightning_embedded.default_model import ensure_default_model

            self._model_path_cache = str(ensure_default_model())
        return self._model_path_cache

    # -------------------------------------------------------------------------------------- run
    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        if not train_dataset:
            raise ValueError("GRPO needs a non-empty train_dataset")
        store = self.get_store()
        run_dir = self._resolve_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log = MetricsLog(run_dir)
        resume = self._resume_requested()
        if log.records and not resume:
            raise ValueError(f"{run_dir} already holds a run; pass resume=True to continue it, or another run_dir")

        model_path = self._model_path()
        policy = await asyncio.to_thread(TrainablePolicy.from_pretrained, model_path, self.config)
        start_step = 0
        if resume:
            checkpoint = latest_checkpoint(run_dir / "checkpoints")
            if checkpoint is not None:
                await asyncio.to_thread(policy.load_checkpoint, checkpoint)
                start_step = policy.step
            log.truncate_after(start_step)
            logger.info("resuming %s at step %d", run_dir, start_step + 1)

        options = dict(self.serving_options)
        if self.serving == "embedded" and policy.is_lora:
            # The embedded server of a LoRA policy runs in the trainer's dtype so that it can read the
            # policy's frozen base weights instead of holding a second copy (see below).
            options.setdefault("dtype", self.config.dtype)
        server = await asyncio.to_thread(
            start_serving_backend, self.serving, model_path, served_model_name=self.model_name, **options
        )
        self._server = server
        share = getattr(server, "share_base_weights", None)  # an optional backend method (embedded)
        if policy.is_lora and callable(share):
            share(policy.frozen_base_weights())
        proxy, owns_proxy = self._proxy(store, server)
        display = _Display(self.n_steps, start_step, enabled=self.progress)
        try:
            if start_step > 0:
                await asyncio.to_thread(self._push, server, policy, proxy, run_dir)
            validated = {int(r["step"]) for r in log.of_kind("validation")}
            for step in range(start_step, self.n_steps):
                if (
                    val_dataset
                    and step not in validated
                    and (step == 0 or (self.val_every and step % self.val_every == 0))
                ):
                    display.show(await self._validate(store, proxy, val_dataset, step))
                display.show(await self._train_step(store, proxy, server, policy, train_dataset, step + 1, run_dir))
                plot_curves(log, run_dir / "curve.png")
            if val_dataset and self.n_steps not in validated:
                display.show(await self._validate(store, proxy, val_dataset, self.n_steps))
            plot_curves(log, run_dir / "curve.png")
        finally:
            display.close()
            if owns_proxy:
                proxy.stop_thread()
            else:
                proxy.update_backends([b for b in proxy.backends if b.name != POLICY_BACKEND_NAME] or [_route(server)])
            await asyncio.to_thread(server.close)
            self._server = None

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

    def _push(self, server: ServingBackend, policy: TrainablePolicy, proxy: LLMProxy, run_dir: Path) -> int:
        """Serve ``policy``'s current weights: tensors in memory when the backend takes them, else a folder."""
        if policy.is_lora:
            if server.accepts_state_dicts:
                model: Any = policy.model
                version = server.load_lora(policy.adapter_state_dict(), model.peft_config["default"])
            else:
                version = server.load_lora(policy.export_adapter(run_dir / "serving" / "lora"))
        elif server.accepts_state_dicts:
            version = server.load_weights(policy.merged_state_dict())
        else:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self._model_path())
            version = server.load_weights(policy.export_full_model(run_dir / "serving" / "full", self._tokenizer))
        # A backend may serve new weights under another name (vLLM's LoRA adapters): route it.
        if all(server.model_name not in (b.models or ()) for b in proxy.backends if b.name == POLICY_BACKEND_NAME):
            proxy.update_backends([*(b for b in proxy.backends if b.name != POLICY_BACKEND_NAME), _route(server)])
        return version

    def _adapter(self) -> Adapter[Sequence[Span], List[TokenSequence]]:
        """The Trainer's adapter when it has one, else :class:`TraceToTokenSequences`."""
        try:
            adapter: Adapter[Sequence[Span], List[TokenSequence]] = self.get_adapter()
        except ValueError:
            adapter = TraceToTokenSequences()
        return adapter

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
        step: int,
    ) -> List[Tuple[str, str, Optional[Rollout]]]:
        """Enqueue every task ``repeats`` times and wait; returns ``(rollout_id, group_id, rollout)``."""
        # The name the backend serves the newest weights under (vLLM names its LoRA adapter).
        model = self._server.model_name if self._server is not None else self.model_name
        # The policy replaces the LLM; every other initial resource (a prompt APO optimized before this
        # stage, say) is carried into each version the agent gets.
        carried = {name: r for name, r in (self.get_initial_resources() or {}).items() if name != "main_llm"}
        resources = await store.add_resources(
            {**carried, "main_llm": proxy.as_resource(model=model, sampling_parameters=dict(sampling))}
        )
        config = RolloutConfig(timeout_seconds=self.rollout_timeout)
        requests: List[EnqueueRolloutRequest] = []
        groups: List[str] = []
        for index, task in enumerate(tasks):
            for _ in range(repeats):
                groups.append(f"{mode}-{step}-{index}")
                requests.append(
                    EnqueueRolloutRequest(
                        input=task,
                        mode=mode,
                        resources_id=resources.resources_id,
                        config=config,
                        metadata={"step": step, "group": groups[-1]},
                    )
                )
        rollouts = await store.enqueue_many_rollouts(requests)
        ids = [r.rollout_id for r in rollouts]
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
        return [(rid, group, finished.get(rid)) for rid, group in zip(ids, groups, strict=True)]

    async def _outcome(
        self, store: LightningStore, rollout_id: str, rollout: Optional[Rollout]
    ) -> Tuple[Optional[float], List[TokenSequence]]:
        if rollout is None or rollout.status != "succeeded":
            return None, []
        spans = list(await store.query_spans(rollout_id, "latest"))
        adapter = self._adapter()
        sequences = adapter.adapt(spans)
        if not isinstance(sequences, list) or not all(isinstance(s, TokenSequence) for s in sequences):
            raise TypeError(
                f"GRPO trains on token sequences, but the adapter {type(adapter).__name__} returned "
                f"{type(sequences).__name__}; use TraceToTokenSequences (adapter='token-sequences') or no adapter"
            )
        return find_final_reward(spans), sequences

    async def _validate(
        self, store: LightningStore, proxy: LLMProxy, val_dataset: Dataset[Any], step: int
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        played = await self._play(
            store,
            proxy,
            [val_dataset[i] for i in range(len(val_dataset))],
            mode="val",
            repeats=1,
            sampling=self.val_sampling,
            step=step,
        )
        rewards = [(await self._outcome(store, rid, rollout))[0] for rid, _, rollout in played]
        scored = [r if r is not None else 0.0 for r in rewards]
        record = {
            "kind": "validation",
            "step": step,
            "accuracy": sum(r >= self.success_reward for r in scored) / len(scored),
            "reward_mean": sum(scored) / len(scored),
            "failed": sum(r is None for r in rewards),
            "n": len(scored),
            "seconds": time.perf_counter() - started,
            # In the dataset's order, so that two validations can be compared problem by problem.
            "rewards": scored,
        }
        assert self.log is not None
        self.log.append(record)
        release_freed_memory()
        return record

    async def _train_step(
        self,
        store: LightningStore,
        proxy: LLMProxy,
        server: ServingBackend,
        policy: TrainablePolicy,
        train_dataset: Dataset[Any],
        step: int,
        run_dir: Path,
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        draw = random.Random(self.config.seed * 1_000_003 + step)
        count = min(self.tasks_per_step, len(train_dataset))
        tasks = [train_dataset[i] for i in draw.sample(range(len(train_dataset)), count)]
        played = await self._play(
            store, proxy, tasks, mode="train", repeats=self.config.group_size, sampling=self.sampling, step=step
        )
        rollout_seconds = time.perf_counter() - started
        outcomes: List[RolloutReward] = []
        sequences: List[TokenSequence] = []
        for rollout_id, group, rollout in played:
            reward, rollout_sequences = await self._outcome(store, rollout_id, rollout)
            if not rollout_sequences:
                reward = None  # nothing to train on: leave it out of its group
            outcomes.append(RolloutReward(rollout_id, group, reward))
            sequences.extend(rollout_sequences)
        advantages = compute_group_advantages(
            outcomes, scale_by_std=self.config.scale_rewards, eps=self.config.advantage_eps
        )
        trained = [s for s in sequences if s.rollout_id in advantages.advantages]
        metrics = await asyncio.to_thread(policy.update, trained, advantages.advantages)
        release_freed_memory()  # the update's activations, before decoding needs memory again
        if not metrics.skipped:
            await asyncio.to_thread(self._push, server, policy, proxy, run_dir)
        await asyncio.to_thread(self._checkpoint, policy, run_dir, step)
        rewards = [o.reward for o in outcomes if o.reward is not None]
        record: Dict[str, Any] = {
            "kind": "train",
            "step": step,
            "reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "accuracy": sum(r >= self.success_reward for r in rewards) / len(rewards) if rewards else None,
            "rollouts": len(outcomes),
            "failed": len(advantages.excluded),
            "informative_groups": advantages.informative_groups,
            "rollout_seconds": rollout_seconds,
            "step_seconds": time.perf_counter() - started,
            **{k: v for k, v in metrics.as_dict().items() if k not in ("step", "dropped_rollouts")},
        }
        assert self.log is not None
        self.log.append(record)
        release_freed_memory()
        return record

    def _checkpoint(self, policy: TrainablePolicy, run_dir: Path, step: int) -> None:
        root = run_dir / "checkpoints"
        policy.save_checkpoint(checkpoint_dir(root, step), extra_state={"step": step})
        finished = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
        )
        for old in finished[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)


class _Display:
    """A rich progress bar over the steps plus one line per event; silent when disabled."""

    def __init__(self, n_steps: int, start_step: int, *, enabled: bool) -> None:
        self._progress: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        self._task = self._progress.add_task("steps", total=n_steps, completed=start_step)
        self._progress.start()

    def show(self, record: Dict[str, Any]) -> None:
        if self._progress is None:
            return
        if record["kind"] == "validation":
            self._progress.console.print(
                f"[cyan]validation[/] step {record['step']}: accuracy {record['accuracy']:.1%} "
                f"(n={record['n']}, {record['seconds']:.0f}s)"
            )
            return
        reward = record["reward_mean"]
        self._progress.console.print(
            f"step {record['step']}: reward {reward if reward is None else f'{reward:.3f}'}  loss {record['loss']:.4f}  "
            f"kl {record['kl']:.4f}  {record['tokens_per_s']:.0f} tok/s  step {record['step_seconds']:.0f}s "
            f"(rollouts {record['rollout_seconds']:.0f}s)"
        )
        self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _route(server: ServingBackend) -> ProxyBackend:
    """The proxy backend for the policy's server: its current model name and token-id request fields."""
    return ProxyBackend(
        server.base_url, models=[server.model_name], request_extras=server.request_extras(), name=POLICY_BACKEND_NAME
    )
