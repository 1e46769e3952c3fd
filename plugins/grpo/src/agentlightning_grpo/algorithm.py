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

The run around the steps (run folder, resume, serving, proxy, validation every ``val_every`` steps and
at the start and the end, checkpoints, curve, display) is :class:`~agentlightning_grpo.loop.ServedModelTraining`,
which SFT shares.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from agentlightning.adapter import Adapter, TokenSequence, TraceToTokenSequences
from agentlightning.emitter.reward import find_final_reward
from agentlightning.serving import ServingBackend
from agentlightning.store.base import LightningStore
from agentlightning.types import Dataset, Span

from .advantages import RolloutReward, compute_group_advantages
from .config import GRPOConfig
from .loop import PlayedRollout, RunContext, ServedModelTraining
from .policy import TrainablePolicy

__all__ = ["GRPO"]

POLICY_BACKEND_NAME = "grpo-policy"
"""The name of the proxy backend GRPO adds for the policy it serves."""


class GRPO(ServedModelTraining[TrainablePolicy]):
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

    title = "GRPO"
    unit = "step"
    train_kind = "train"
    policy_backend_name = POLICY_BACKEND_NAME

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
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be >= 1, got {tasks_per_step}")
        super().__init__(
            model=model,
            n_iterations=n_steps,
            val_every=val_every,
            sampling=sampling,
            val_sampling=val_sampling,
            success_reward=success_reward,
            run_dir=run_dir,
            resume=resume,
            rollout_timeout=rollout_timeout,
            model_name=model_name,
            serving=serving,
            serving_options=serving_options,
            max_batch_size=max_batch_size,
            progress=progress,
        )
        self.config = config if isinstance(config, GRPOConfig) else GRPOConfig(**dict(config or {}))
        self.n_steps = n_steps
        self.tasks_per_step = tasks_per_step
        self._tokenizer: Any = None

    # ------------------------------------------------------------------------- loop hooks
    def _load_learner(self, model_path: str) -> TrainablePolicy:
        return TrainablePolicy.from_pretrained(model_path, self.config)

    def _restore(self, learner: TrainablePolicy, checkpoint: Path) -> int:
        learner.load_checkpoint(checkpoint)
        return learner.step

    def _save_checkpoint(self, learner: TrainablePolicy, path: Path, index: int) -> None:
        learner.save_checkpoint(path, extra_state={"step": index})

    def _serving_options_for(self, learner: TrainablePolicy) -> Dict[str, Any]:
        options = dict(self.serving_options)
        if self.serving == "embedded" and learner.is_lora:
            # The embedded server of a LoRA policy runs in the trainer's dtype so that it can read the
            # policy's frozen base weights instead of holding a second copy (see below).
            options.setdefault("dtype", self.config.dtype)
        return options

    def _on_server_started(self, learner: TrainablePolicy, server: ServingBackend) -> None:
        share = getattr(server, "share_base_weights", None)  # an optional backend method (embedded)
        if learner.is_lora and callable(share):
            share(learner.frozen_base_weights())

    def _serve_weights(self, learner: TrainablePolicy, server: ServingBackend, run_dir: Path) -> int:
        """Serve the policy's current weights: tensors in memory when the backend takes them, else a folder."""
        if learner.is_lora:
            if server.accepts_state_dicts:
                model: Any = learner.model
                return server.load_lora(learner.adapter_state_dict(), model.peft_config["default"])
            return server.load_lora(learner.export_adapter(run_dir / "serving" / "lora"))
        if server.accepts_state_dicts:
            return server.load_weights(learner.merged_state_dict())
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._model_path())
        return server.load_weights(learner.export_full_model(run_dir / "serving" / "full", self._tokenizer))

    def _describe(self, record: Dict[str, Any]) -> str:
        reward = record["reward_mean"]
        return (
            f"step {record['step']}: reward {reward if reward is None else f'{reward:.3f}'}  loss {record['loss']:.4f}  "
            f"kl {record['kl']:.4f}  {record['tokens_per_s']:.0f} tok/s  step {record['step_seconds']:.0f}s "
            f"(rollouts {record['rollout_seconds']:.0f}s)"
        )

    # --------------------------------------------------------------------------- one step
    def _adapter(self) -> Adapter[Sequence[Span], List[TokenSequence]]:
        """The Trainer's adapter when it has one, else :class:`TraceToTokenSequences`."""
        try:
            adapter: Adapter[Sequence[Span], List[TokenSequence]] = self.get_adapter()
        except ValueError:
            adapter = TraceToTokenSequences()
        return adapter

    async def _outcome(
        self, store: LightningStore, played: PlayedRollout
    ) -> Tuple[Optional[float], List[TokenSequence]]:
        spans = await self._spans(store, played)
        if spans is None:
            return None, []
        adapter = self._adapter()
        sequences = adapter.adapt(spans)
        if not isinstance(sequences, list) or not all(isinstance(s, TokenSequence) for s in sequences):
            raise TypeError(
                f"GRPO trains on token sequences, but the adapter {type(adapter).__name__} returned "
                f"{type(sequences).__name__}; use TraceToTokenSequences (adapter='token-sequences') or no adapter"
            )
        return find_final_reward(spans), sequences

    async def _iterate(
        self, context: RunContext, learner: TrainablePolicy, train_dataset: Dataset[Any], index: int
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        draw = random.Random(self.config.seed * 1_000_003 + index)
        count = min(self.tasks_per_step, len(train_dataset))
        tasks = [train_dataset[i] for i in draw.sample(range(len(train_dataset)), count)]
        played = await self._play(
            context, tasks, mode="train", repeats=self.config.group_size, sampling=self.sampling, index=index
        )
        rollout_seconds = time.perf_counter() - started
        outcomes: List[RolloutReward] = []
        sequences: List[TokenSequence] = []
        for rollout in played:
            reward, rollout_sequences = await self._outcome(context.store, rollout)
            if not rollout_sequences:
                reward = None  # nothing to train on: leave it out of its group
            outcomes.append(RolloutReward(rollout.rollout_id, f"train-{index}-{rollout.task_index}", reward))
            sequences.extend(rollout_sequences)
        advantages = compute_group_advantages(
            outcomes, scale_by_std=self.config.scale_rewards, eps=self.config.advantage_eps
        )
        trained = [s for s in sequences if s.rollout_id in advantages.advantages]
        metrics = await asyncio.to_thread(learner.update, trained, advantages.advantages)
        rewards = [o.reward for o in outcomes if o.reward is not None]
        return {
            "reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "accuracy": sum(r >= self.success_reward for r in rewards) / len(rewards) if rewards else None,
            "rollouts": len(outcomes),
            "failed": len(advantages.excluded),
            "informative_groups": advantages.informative_groups,
            "rollout_seconds": rollout_seconds,
            **{k: v for k, v in metrics.as_dict().items() if k not in ("step", "dropped_rollouts")},
        }
