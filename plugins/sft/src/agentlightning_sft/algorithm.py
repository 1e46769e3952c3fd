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
nothing. The run around the rounds (run folder, resume, serving, proxy, held-out validation before the
first round, every ``val_every`` rounds and after the last, checkpoints, curve, display) is GRPO's
:class:`~agentlightning_grpo.loop.ServedModelTraining`: both algorithms train the model they serve.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from agentlightning.adapter import TraceToMessages, TraceToTokenSequences
from agentlightning.emitter.reward import find_final_reward
from agentlightning.serving import ServingBackend
from agentlightning.types import Dataset
from agentlightning_grpo.loop import RunContext, ServedModelTraining

from .config import SFTConfig
from .learner import SFTLearner
from .records import (
    BuiltRecords,
    FinishedRollout,
    RolloutFilter,
    build_chat_records,
    build_token_records,
    reward_at_least,
)
from .run_log import records_path, write_records

__all__ = ["SFT"]

logger = logging.getLogger(__name__)

POLICY_BACKEND_NAME = "sft-policy"
"""The name of the proxy backend SFT adds for the model it serves."""


class SFT(ServedModelTraining[SFTLearner]):
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

    title = "SFT"
    unit = "round"
    train_kind = "round"
    train_curve = ("kept_share", "training rollouts kept (share)")
    policy_backend_name = POLICY_BACKEND_NAME

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
        if n_rounds < 0:
            raise ValueError(f"n_rounds must be >= 0, got {n_rounds}")
        if tasks_per_round is not None and tasks_per_round < 1:
            raise ValueError(f"tasks_per_round must be >= 1 or None, got {tasks_per_round}")
        if samples_per_task < 1:
            raise ValueError(f"samples_per_task must be >= 1, got {samples_per_task}")
        if rollout_filter is not None and not callable(rollout_filter):
            raise TypeError(f"rollout_filter must be a function (FinishedRollout) -> bool, got {rollout_filter!r}")
        super().__init__(
            model=model,
            n_iterations=n_rounds,
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
        self.config = config if isinstance(config, SFTConfig) else SFTConfig(**dict(config or {}))
        self.n_rounds = n_rounds
        self.tasks_per_round = tasks_per_round
        self.samples_per_task = samples_per_task
        self.reward_threshold = reward_threshold
        self.rollout_filter: RolloutFilter = rollout_filter or reward_at_least(reward_threshold)

    # ------------------------------------------------------------------------- loop hooks
    def _load_learner(self, model_path: str) -> SFTLearner:
        return SFTLearner.from_pretrained(model_path, self.config)

    def _restore(self, learner: SFTLearner, checkpoint: Path) -> int:
        return learner.load_checkpoint(checkpoint)

    def _save_checkpoint(self, learner: SFTLearner, path: Path, index: int) -> None:
        learner.round = index
        learner.save_checkpoint(path)

    def _serve_weights(self, learner: SFTLearner, server: ServingBackend, run_dir: Path) -> int:
        return learner.push(server, run_dir / "serving" / ("lora" if learner.is_lora else "full"))

    def _on_resume(self, run_dir: Path, index: int) -> None:
        for stale in (run_dir / "data").glob("round-*.jsonl"):
            if int(stale.stem[len("round-") :]) > index:
                stale.unlink()  # records of a round the kill interrupted: that round is played again

    def _describe(self, record: Dict[str, Any]) -> str:
        head = (
            f"round {record['round']}: kept {record['kept']}/{record['rollouts']} rollouts, {record['records']} records"
        )
        if record["excluded"]:
            head += f" (excluded {', '.join(f'{k} {v}' for k, v in sorted(record['excluded'].items()))})"
        if record["skipped"]:
            return f"{head}  [yellow]training skipped: {record['skip_reason']}[/]"
        return (
            f"{head}  loss {record['loss']:.4f}  {record['tokens_per_s']:.0f} tok/s  "
            f"round {record['round_seconds']:.0f}s (rollouts {record['rollout_seconds']:.0f}s)"
        )

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

    # -------------------------------------------------------------------------- one round
    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        self._adapter()  # a Trainer adapter that cannot build the records is refused before any model loads
        await super().run(train_dataset, val_dataset)

    async def _iterate(
        self, context: RunContext, learner: SFTLearner, train_dataset: Dataset[Any], index: int
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        adapter = self._adapter()
        indices = list(range(len(train_dataset)))
        if self.tasks_per_round is not None and self.tasks_per_round < len(indices):
            indices = random.Random(self.config.seed * 1_000_003 + index).sample(indices, self.tasks_per_round)
        played = await self._play(
            context,
            [train_dataset[i] for i in indices],
            mode="train",
            repeats=self.samples_per_task,
            sampling=self.sampling,
            index=index,
        )
        rollout_seconds = time.perf_counter() - started
        built = BuiltRecords()
        rewards: List[float] = []
        failed = kept = 0
        for rollout in played:
            spans = await self._spans(context.store, rollout)
            if spans is None or rollout.rollout is None:
                failed += 1
                continue
            finished = FinishedRollout(rollout.rollout, find_final_reward(spans), spans)
            if finished.reward is not None:
                rewards.append(finished.reward)
            if not self.rollout_filter(finished):
                continue
            kept += 1
            tags = {"rollout_id": rollout.rollout_id, "round": index, "reward": finished.reward}
            if isinstance(adapter, TraceToTokenSequences):
                built.extend(build_token_records(finished.spans, adapter, metadata=tags))
            else:
                built.extend(build_chat_records(finished.spans, adapter, metadata=tags))

        record: Dict[str, Any] = {
            "rollouts": len(played),
            "failed": failed,
            "kept": kept,
            "kept_share": kept / len(played) if played else None,
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
            logger.warning("round %d: %s; training skipped", index, record["skip_reason"])
            return record
        write_records(records_path(context.run_dir, index), built.records)
        training = await asyncio.to_thread(learner.train, built.records, index, context.run_dir / "trl")
        record.update(skipped=False, **training.as_dict())
        return record
