"""The GPU path: verl's actor worker group and vLLM rollout replicas, built as verl's own trainer builds them.

:class:`VerlRayWorkers` reuses verl 0.9.1's ``RayPPOTrainer`` for everything that runs on GPUs
(``init_workers``: the FSDP ``ActorRolloutRefWorker`` group, the vLLM replicas, the checkpoint engine
that moves weights from the actor to the replicas) and for its log-prob and update calls; the step
loop itself is :class:`~agentlightning_verl.VERL`'s, with rollouts played by the agents.

This module was written against verl 0.9.1's source and has NOT been executed: this project's
machines have no GPU (verl registers its FSDP engine and vLLM replicas for CUDA/NPU only). The
README gives the command to run it on a GPU node.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, cast

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from verl import DataProto

__all__ = ["VerlRayWorkers"]

logger = logging.getLogger(__name__)


class VerlRayWorkers:
    """verl's hybrid-engine worker group (actor + reference + vLLM rollout) on a Ray cluster with GPUs."""

    def __init__(self, config: "DictConfig") -> None:
        import ray
        from omegaconf import OmegaConf
        from verl.trainer.main_ppo_v0 import BaseTaskRunner
        from verl.trainer.ppo.ray_trainer import RayPPOTrainer
        from verl.utils.config import omega_conf_to_dataclass

        class _Trainer(RayPPOTrainer):
            # Tasks come from the Trainer's dataset through the store, not from verl's parquet files.
            def _create_dataloader(self, *args: Any, **kwargs: Any) -> None:
                return None

        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray_init: Any = OmegaConf.to_container(config.ray_kwargs.get("ray_init", {}), resolve=True)
            ray.init(**ray_init)
        wanted = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
        available = ray.cluster_resources().get("GPU", 0)
        if available < wanted:
            # verl would wait forever for the placement group: say so now.
            self.close()
            raise RuntimeError(
                f"verl's workers need {wanted} GPUs (trainer.n_gpus_per_node x trainer.nnodes) but the Ray cluster "
                f"has {available:g}; run on GPU nodes (see the agentlightning-verl README) or pass workers="
            )
        OmegaConf.resolve(config)
        runner = BaseTaskRunner()
        _, worker_group_cls = runner.add_actor_rollout_worker(config)
        runner.add_reward_model_resource_pool(config)
        runner.add_teacher_model_resource_pool(config)
        model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        self._tokenizer = model.tokenizer
        # verl's trainer is untyped: Any, so its attributes set in init_workers type-check.
        self._trainer: Any = cast(
            Any,
            _Trainer(
                config=config,
                tokenizer=model.tokenizer,
                processor=model.processor,
                role_worker_mapping=runner.role_worker_mapping,
                resource_pool_manager=runner.init_resource_pool_mgr(config),
                ray_worker_group_cls=worker_group_cls,
            ),
        )
        self._trainer.init_workers()
        self._trainer.checkpoint_manager.update_weights(0)  # load the weights into the replicas, wake them
        replicas = self._trainer.llm_server_manager.get_replicas()
        self._urls = [f"http://{replica.server_address}/v1" for replica in replicas]
        self._served_model = _served_model(self._urls[0])
        self._world_size = int(self._trainer.actor_rollout_wg.world_size)

    @property
    def server_urls(self) -> List[str]:
        return list(self._urls)

    @property
    def served_model(self) -> str:
        return self._served_model

    @property
    def pad_token_id(self) -> int:
        pad = self._tokenizer.pad_token_id
        return int(pad if pad is not None else self._tokenizer.eos_token_id)

    def _padded(self, batch: "DataProto") -> tuple["DataProto", int]:
        # The worker group splits a batch evenly over its ranks; padding rows copy real rows and get
        # an all-zero response mask, so they add nothing to a loss.
        from verl.protocol import pad_dataproto_to_divisor

        padded, pad_size = pad_dataproto_to_divisor(batch, self._world_size)
        if pad_size:
            padded.batch["response_mask"][-pad_size:] = 0
        return padded, pad_size

    def compute_log_prob(self, batch: "DataProto") -> "DataProto":
        from verl.protocol import unpad_dataproto

        padded, pad_size = self._padded(batch)
        output, _mfu = self._trainer._compute_old_log_prob(padded)
        result: "DataProto" = unpad_dataproto(output, pad_size)
        return result

    def compute_ref_log_prob(self, batch: "DataProto") -> "DataProto":
        from verl.protocol import unpad_dataproto

        padded, pad_size = self._padded(batch)
        result: "DataProto" = unpad_dataproto(self._trainer._compute_ref_log_prob(padded), pad_size)
        return result

    def update_actor(self, batch: "DataProto") -> Dict[str, Any]:
        from verl.utils.metric import reduce_metrics

        padded, _ = self._padded(batch)
        output = self._trainer._update_actor(padded)
        metrics: Dict[str, Any] = reduce_metrics(output.meta_info["metrics"])
        return metrics

    def pause_servers(self) -> None:
        self._trainer.checkpoint_manager.sleep_replicas()

    def sync_weights(self, step: int) -> None:
        self._trainer.checkpoint_manager.update_weights(step)

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


def _served_model(base_url: str, timeout: float = 30.0) -> str:
    """The model name a vLLM server answers to (its ``/v1/models``), e.g. the model's local path."""
    import httpx

    response = httpx.get(f"{base_url}/models", timeout=timeout)
    response.raise_for_status()
    models: Optional[List[Dict[str, Any]]] = response.json().get("data")
    if not models:
        raise RuntimeError(f"the rollout server at {base_url} serves no model")
    return str(models[0]["id"])
