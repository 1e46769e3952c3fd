"""The verl step loop end to end on CPU: tasks -> store -> runners -> proxy -> rollout server -> spans ->
DataProto -> verl's advantages -> actor update -> new weights served and published.

Only the CUDA part (verl's FSDP actor worker group and vLLM replicas) is the stand-in of verl_standin.py.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
from verl_standin import BigramPolicy, StandInForVerlGpuWorkers
from verl_support import small_config, tool_agent

import agentlightning as agl
from agentlightning.store import InMemoryLightningStore
from agentlightning_verl import VERL

TASKS = [{"question": q} for q in ("Hi?", "Name a fruit.", "Why?", "Count to 3.")]


def run(
    tmp_path: Any, agent: Any, **settings: Any
) -> tuple[VERL, List[StandInForVerlGpuWorkers], InMemoryLightningStore]:
    built: List[StandInForVerlGpuWorkers] = []

    def workers(config: Any) -> StandInForVerlGpuWorkers:
        built.append(StandInForVerlGpuWorkers(config))
        return built[-1]

    config = settings.pop("config", small_config())
    algorithm = VERL(config, workers=workers, **{"n_steps": 2, "tasks_per_step": 2, "group_size": 4, **settings})
    store = InMemoryLightningStore()
    trainer = agl.Trainer(algorithm=algorithm, n_runners=2, store=store, run_dir=tmp_path)
    trainer.fit(agent, train_dataset=TASKS)
    return algorithm, built, store


def test_steps_train_on_rollouts_and_serve_the_new_weights(tmp_path: Any) -> None:
    config = small_config(actor_rollout_ref__actor__use_kl_loss=True, actor_rollout_ref__actor__kl_loss_coef=0.01)
    algorithm, (workers,), store = run(tmp_path, tool_agent, config=config)

    per_step = ["pause_servers", "compute_log_prob", "compute_ref_log_prob", "update_actor", "sync_weights"]
    assert workers.calls == per_step * 2 and workers.closed
    assert [r["step"] for r in algorithm.history] == [1, 2]
    for record in algorithm.history:
        assert (record["rollouts"], record["rows"], record["rollouts_left_out"]) == (8, 8, 0)
        assert 0.0 <= record["reward_mean"] <= 1.0 and "actor/pg_loss" in record

    first, second = workers.batches
    for batch in (first, second):
        uids = list(batch.non_tensor_batch["uid"])
        assert len(set(uids)) == 2 and all(uids.count(u) == 4 for u in uids)  # two groups of four
        mask = batch.batch["response_mask"]
        assert 0 < int(mask.sum()) < mask.numel()  # the tool result between the two turns is masked out
        advantages = batch.batch["advantages"]
        assert torch.all(advantages[mask == 0] == 0)
        # verl's GRPO: advantages of a group are centred.
        for uid in set(uids):
            rows = [i for i, u in enumerate(uids) if u == uid]
            firsts = torch.stack([advantages[i][mask[i] == 1][0] for i in rows])
            assert abs(float(firsts.sum())) < 1e-4

    # What the rollout server sampled step 2 with is the actor after step 1's update: the engine's
    # logprobs equal the actor's own log-probs of those tokens, and differ from the initial weights'.
    mask = second.batch["response_mask"] == 1
    served = second.batch["rollout_log_probs"][mask]
    assert torch.allclose(served, second.batch["old_log_probs"][mask], atol=1e-4)
    initial = BigramPolicy().response_log_probs(second).detach()[mask]
    assert (served - initial).abs().max() > 1e-3
    assert workers.server.version == 2

    # Each step published the policy as a new resource; its rollouts used it.
    rollouts = await_all(store)
    by_step: Dict[int, set[str]] = {}
    for rollout in rollouts:
        by_step.setdefault(rollout.metadata["step"], set()).add(rollout.resources_id)
    assert len(by_step[1]) == len(by_step[2]) == 1 and by_step[1] != by_step[2]
    resources = asyncio_run(store.get_resources_by_id(next(iter(by_step[2]))))
    assert resources is not None and resources.resources["main_llm"].model == "policy"


@agl.rollout
async def broken_agent(task: Dict[str, Any], llm: Any) -> float:
    raise RuntimeError("the agent's tool crashed")


def test_a_step_without_training_data_skips_the_update_but_keeps_serving(tmp_path: Any) -> None:
    algorithm, (workers,), _ = run(tmp_path, broken_agent, n_steps=1)
    assert workers.calls == ["pause_servers", "sync_weights"]
    (record,) = algorithm.history
    assert (record["rows"], record["rollouts_left_out"], record["reward_mean"]) == (0, 8, None)


def test_an_empty_dataset_is_refused(tmp_path: Any) -> None:
    algorithm = VERL(small_config(), workers=StandInForVerlGpuWorkers, tasks_per_step=2, group_size=4)
    with pytest.raises(ValueError, match="non-empty train_dataset"):
        agl.Trainer(algorithm=algorithm, store="memory://", run_dir=tmp_path).fit(tool_agent, train_dataset=[])


def asyncio_run(coroutine: Any) -> Any:
    import asyncio

    return asyncio.run(coroutine)


def await_all(store: InMemoryLightningStore) -> List[Any]:
    return list(asyncio_run(store.query_rollouts()))


def test_without_gpus_the_default_workers_fail_fast_naming_them(tmp_path: Any) -> None:
    # verl's own worker group on a Ray cluster without GPUs (a local one started for the run) would
    # wait forever for its placement group; the plugin says why instead.
    config = small_config(ray_kwargs__ray_init__num_cpus=1)
    algorithm = VERL(config, tasks_per_step=2, group_size=4, n_steps=1)
    trainer = agl.Trainer(algorithm=algorithm, store="memory://", run_dir=tmp_path)
    with pytest.raises(
        RuntimeError, match=r"need 1 GPUs \(trainer.n_gpus_per_node x trainer.nnodes\) but the Ray cluster has 0"
    ):
        trainer.fit(tool_agent, train_dataset=TASKS)
    import ray

    assert not ray.is_initialized()
