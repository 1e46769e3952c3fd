"""The ``verl`` algorithm: verl's PPO/GRPO update, fed by this product's rollouts.

One step, as verl's own trainer does it but with rollouts played by the agents:

1. draw ``tasks_per_step`` tasks and enqueue each ``group_size`` times, with the policy published as
   a resource of the LLM proxy, which routes to verl's rollout servers (vLLM) and records every call's
   token ids;
2. wait for the rollouts (runners play them), read their spans, and turn them into one verl
   ``DataProto`` (:mod:`agentlightning_verl.batch`: left-padded prompts, right-padded responses,
   tool tokens masked out, rewards on the last token, ``uid`` = the task's group);
3. pause the rollout servers, compute old (and reference) log-probs on the actor, apply KL-in-reward
   when configured, compute advantages with verl's estimator (``algorithm.adv_estimator``);
4. update the actor (verl's PPO mini-batches), load the new weights into the rollout servers, and
   publish the resource again, so the next step's rollouts sample from the new policy.

The workers (actor, reference, rollout servers) come from ``workers=`` (a factory taking the verl
config); by default :class:`agentlightning_verl.gpu.VerlRayWorkers`, which needs GPUs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union

from agentlightning.algorithm.base import Algorithm
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.store.base import LightningStore
from agentlightning.types import Dataset, EnqueueRolloutRequest, RolloutConfig

from .batch import BatchRow, TruncationCounts, rows_from_spans, rows_to_dataproto
from .settings import build_verl_config
from .workers import PolicyWorkers, WorkersFactory

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from verl import DataProto

__all__ = ["VERL", "POLICY_BACKEND_PREFIX"]

logger = logging.getLogger(__name__)

POLICY_BACKEND_PREFIX = "verl-rollout-"
"""Names of the proxy backends (one per rollout server) this algorithm adds."""


class VERL(Algorithm):
    """verl's PPO/GRPO trainer driven by rollouts from the store.

    Args:
        config: verl's config (nested dict, ``DictConfig`` or YAML path) over its ``ppo_trainer``
            defaults; may hold an ``agentlightning`` section of :class:`VerlSettings`.
        workers: builds the actor/rollout workers from the validated config; default: verl's Ray
            worker group with vLLM rollout servers (:class:`~agentlightning_verl.gpu.VerlRayWorkers`, GPUs).
        **settings: :class:`VerlSettings` fields (``tasks_per_step``, ``group_size``, ``agent_match``,
            ``reward_policy``, ...).

    Everything is validated here, before anything starts: a bad key raises
    :class:`~agentlightning_verl.VerlConfigError` naming it.
    """

    def __init__(
        self,
        config: Union[Mapping[str, Any], "DictConfig", str, None] = None,
        *,
        workers: Optional[WorkersFactory] = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.config, self.settings = build_verl_config(config, **settings)
        self.workers_factory = workers
        self.history: List[Dict[str, Any]] = []
        self._kl_controller: Any = None

    # -------------------------------------------------------------------------------------- run
    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        if not train_dataset:
            raise ValueError("VERL needs a non-empty train_dataset")
        store = self.get_store()
        workers = await asyncio.to_thread(self._start_workers)
        proxy, owns_proxy = self._proxy(store, workers)
        try:
            for step in range(1, self.settings.n_steps + 1):
                record = await self._step(store, proxy, workers, train_dataset, step)
                self.history.append(record)
                logger.info(
                    "verl step %d/%d: reward %s, %d rows (%d rollouts without data), %.1fs",
                    step,
                    self.settings.n_steps,
                    "n/a" if record["reward_mean"] is None else f"{record['reward_mean']:.3f}",
                    record["rows"],
                    record["rollouts_left_out"],
                    record["step_seconds"],
                )
        finally:
            if owns_proxy:
                proxy.stop_thread()
            else:
                kept = [b for b in proxy.backends if not (b.name or "").startswith(POLICY_BACKEND_PREFIX)]
                if kept:
                    proxy.update_backends(kept)
            await asyncio.to_thread(workers.close)

    def _start_workers(self) -> PolicyWorkers:
        if self.workers_factory is not None:
            return self.workers_factory(self.config)
        from .gpu import VerlRayWorkers

        return VerlRayWorkers(self.config)

    def _routes(self, workers: PolicyWorkers) -> List[ProxyBackend]:
        """One proxy backend per rollout server; agents ask for ``model_name``, the servers get theirs."""
        return [
            ProxyBackend.vllm(
                url,
                models=[self.settings.model_name],
                upstream_model=workers.served_model,
                name=f"{POLICY_BACKEND_PREFIX}{index}",
            )
            for index, url in enumerate(workers.server_urls)
        ]

    def _proxy(self, store: LightningStore, workers: PolicyWorkers) -> Tuple[LLMProxy, bool]:
        """The Trainer's proxy routed to the rollout servers (started if needed), or a new one; and whether it is ours."""
        proxy = self.get_llm_proxy()
        if proxy is None:
            return LLMProxy(store, self._routes(workers)).start_in_thread(), True
        others = [b for b in proxy.backends if not (b.name or "").startswith(POLICY_BACKEND_PREFIX)]
        proxy.update_backends([*others, *self._routes(workers)])
        if proxy.running:
            return proxy, False
        return proxy.start_in_thread(), True

    # ------------------------------------------------------------------------------------- step
    async def _step(
        self, store: LightningStore, proxy: LLMProxy, workers: PolicyWorkers, train_dataset: Dataset[Any], step: int
    ) -> Dict[str, Any]:
        started = time.perf_counter()
        draw = random.Random(self.settings.seed * 1_000_003 + step)
        count = min(self.settings.tasks_per_step, len(train_dataset))
        tasks = [train_dataset[i] for i in draw.sample(range(len(train_dataset)), count)]
        rows, rewards, left_out = await self._play(store, proxy, tasks, step)
        rollout_seconds = time.perf_counter() - started
        record: Dict[str, Any] = {
            "step": step,
            "rollouts": len(tasks) * self.settings.group_size,
            "rollouts_left_out": left_out,
            "rows": len(rows),
            "reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "rollout_seconds": rollout_seconds,
        }
        await asyncio.to_thread(workers.pause_servers)
        if rows:
            truncated = TruncationCounts()
            data = rows_to_dataproto(
                rows,
                pad_token_id=workers.pad_token_id,
                max_prompt_length=int(self.config.data.max_prompt_length),
                max_response_length=int(self.config.data.max_response_length),
                meta_info={
                    "global_steps": step,
                    "temperature": float(self.config.actor_rollout_ref.rollout.temperature),
                },
                truncated=truncated,
            )
            data, metrics = await asyncio.to_thread(self.train_on, data, workers)
            record.update(metrics)
            record["truncated_prompts"], record["truncated_responses"] = truncated.prompts, truncated.responses
        else:
            logger.warning("verl step %d: no rollout produced training data; the actor is not updated", step)
        await asyncio.to_thread(workers.sync_weights, step)
        record["step_seconds"] = time.perf_counter() - started
        return record

    async def _play(
        self, store: LightningStore, proxy: LLMProxy, tasks: List[Any], step: int
    ) -> Tuple[List[BatchRow], List[float], int]:
        """Enqueue every task ``group_size`` times, wait, and turn the finished rollouts into batch rows."""
        rollout = self.config.actor_rollout_ref.rollout
        sampling = {"temperature": float(rollout.temperature), "top_p": float(rollout.top_p)}
        sampling["max_tokens"] = int(self.config.data.max_response_length)
        resources = await store.add_resources(
            {"main_llm": proxy.as_resource(model=self.settings.model_name, sampling_parameters=sampling)}
        )
        config = RolloutConfig(timeout_seconds=self.settings.rollout_timeout)
        requests, groups = [], []
        for index, task in enumerate(tasks):
            for _ in range(self.settings.group_size):
                groups.append(f"train-{step}-{index}")
                requests.append(
                    EnqueueRolloutRequest(
                        input=task,
                        mode="train",
                        resources_id=resources.resources_id,
                        config=config,
                        metadata={"step": step, "group": groups[-1]},
                    )
                )
        enqueued = await store.enqueue_many_rollouts(requests)
        ids = [r.rollout_id for r in enqueued]
        finished = {
            r.rollout_id: r
            for r in await store.wait_for_rollouts(rollout_ids=ids, timeout=self.settings.rollout_timeout)
        }
        rows: List[BatchRow] = []
        rewards: List[float] = []
        left_out = 0
        for rollout_id, group in zip(ids, groups, strict=True):
            done = finished.get(rollout_id)
            if done is None:
                logger.warning(
                    "rollout %s did not finish in %.0f s; cancelling it", rollout_id, self.settings.rollout_timeout
                )
                try:
                    await store.cancel_rollout(rollout_id)
                except ValueError:
                    pass
            produced: List[BatchRow] = []
            if done is not None and done.status == "succeeded":
                spans = list(await store.query_spans(rollout_id, "latest"))
                produced = rows_from_spans(
                    spans,
                    uid=group,
                    agent_match=self.settings.agent_match,
                    llm_call_match=self.settings.llm_call_match,
                    reward_policy=self.settings.reward_policy,
                    missing_reward=self.settings.missing_reward,
                )
            if not produced:
                left_out += 1
                continue
            rows.extend(produced)
            rewards.append(sum(produced[-1].rewards.values()))
        return rows, rewards, left_out

    # ------------------------------------------------------------------------------------ update
    def train_on(self, data: "DataProto", workers: PolicyWorkers) -> Tuple["DataProto", Dict[str, Any]]:
        """Log-probs, rewards, advantages (verl's estimator) and one actor update on ``data``; its metrics."""
        from verl.trainer.ppo import core_algos
        from verl.trainer.ppo.ray_trainer import apply_kl_penalty, compute_advantage
        from verl.trainer.ppo.utils import need_reference_policy
        from verl.utils.config import omega_conf_to_dataclass

        metrics: Dict[str, Any] = {}
        algorithm = self.config.algorithm
        data = data.union(workers.compute_log_prob(data))
        if need_reference_policy(self.config):
            data = data.union(workers.compute_ref_log_prob(data))
        if algorithm.use_kl_in_reward:
            if self._kl_controller is None:
                self._kl_controller = core_algos.get_kl_controller(algorithm.kl_ctrl)
            data, kl_metrics = apply_kl_penalty(data, self._kl_controller, kl_penalty=algorithm.kl_penalty)
            metrics.update(kl_metrics)
        else:
            data.batch["token_level_rewards"] = data.batch["token_level_scores"]
        data = compute_advantage(
            data,
            adv_estimator=algorithm.adv_estimator,
            gamma=algorithm.gamma,
            lam=algorithm.lam,
            num_repeat=self.settings.group_size,
            norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo,
            config=omega_conf_to_dataclass(algorithm),
        )
        metrics.update(workers.update_actor(data))
        return data, metrics
