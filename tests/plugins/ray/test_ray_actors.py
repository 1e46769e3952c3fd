"""Runners as Ray actors on a real local Ray cluster (``ray.init(num_cpus=2)``, shared by this module)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import ray
from ray import cloudpickle

from agentlightning import plugins
from agentlightning.algorithm import Algorithm
from agentlightning.emitter import emit_reward, find_final_reward
from agentlightning.litagent import rollout
from agentlightning.server.serve import StoreServer
from agentlightning.store import InMemoryLightningStore
from agentlightning.store.client import HttpLightningStore
from agentlightning.trainer import Trainer
from agentlightning.types import RolloutConfig
from agentlightning_ray import RayExecutionStrategy

# The actors import what they run; this test module is not importable there, so its agents travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", autouse=True)
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


@rollout
def pid_agent(task: float) -> None:
    """Rewards the task and reports which process ran it."""
    emit_reward({"value": float(task), "pid": float(os.getpid())}, primary_key="value")


def reward_pids(spans: List[Any]) -> List[int]:
    return [
        int(s.attributes["agentlightning.reward.1.value"])
        for s in spans
        if "agentlightning.reward.1.value" in s.attributes
    ]


async def rollouts_with_spans(store: Any) -> List[Any]:
    return [(r, list(await store.query_spans(r.rollout_id, "latest"))) for r in await store.query_rollouts()]


def wait_until_gone(pids: Any, timeout: float = 30.0) -> List[int]:
    """The pids still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.2)
    return alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split(") ", 1)[-1].startswith("Z"))


def test_hook_agl_register_execution_strategies_provides_ray() -> None:
    assert plugins.resolve("execution_strategies", "ray") is RayExecutionStrategy
    (info,) = [c for c in plugins.list_components("execution_strategies") if c.name == "ray"]
    assert info.distribution == "agentlightning-ray"
    trainer = Trainer(strategy="ray", n_runners=3, store="memory://")
    assert isinstance(trainer.strategy, RayExecutionStrategy) and trainer.strategy.n_runners == 3


def test_n_actors_complete_m_rollouts(tmp_path: Path) -> None:
    tasks = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    with Trainer(run_dir=tmp_path, strategy="ray", n_runners=2) as trainer:
        trainer.dev(pid_agent, tasks)
        results = asyncio.run(rollouts_with_spans(trainer.store))
        workers = asyncio.run(trainer.store.query_workers())  # type: ignore[union-attr]
        strategy = trainer.strategy
    assert isinstance(strategy, RayExecutionStrategy)
    assert [r.status for r, _ in results] == ["succeeded"] * len(tasks)
    assert sorted(find_final_reward(spans) for _, spans in results) == tasks
    pids = {pid for _, spans in results for pid in reward_pids(spans)}
    assert os.getpid() not in pids  # the agents ran in the actors
    assert pids <= strategy.actor_pids and len(strategy.actor_pids) == 2
    assert len(workers) == 2 and strategy.restarts == 0
    assert wait_until_gone(strategy.actor_pids) == []  # the run stopped its actors


class EnqueueAndWait(Algorithm):
    def __init__(self, tasks: List[str], config: RolloutConfig) -> None:
        super().__init__()
        self.tasks = tasks
        self.config = config
        self.statuses: List[str] = []
        self.attempts: List[int] = []

    async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
        store = self.get_store()
        queued = [await store.enqueue_rollout(t, mode="train", config=self.config) for t in self.tasks]
        done = await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=120)
        self.statuses = [r.status for r in done]
        for r in queued:
            self.attempts.append(len(await store.query_attempts(r.rollout_id)))


def test_an_actor_killed_mid_rollout_is_replaced_and_its_rollout_retried(tmp_path: Path) -> None:
    marker = tmp_path / "killed"

    @rollout
    def agent(task: str) -> float:
        if task == "die" and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the actor's process dies in the middle of this rollout
        return 1.0

    config = RolloutConfig(unresponsive_seconds=2.0, max_attempts=3, retry_condition=["unresponsive"])
    algorithm = EnqueueAndWait(["ok-1", "die", "ok-2"], config)
    with Trainer(run_dir=tmp_path / "run", strategy="ray", n_runners=1, algorithm=algorithm) as trainer:
        trainer.fit(agent)
        strategy = trainer.strategy
    assert isinstance(strategy, RayExecutionStrategy)
    killed = int(marker.read_text())
    assert not _alive(killed)  # the actor really died
    assert strategy.restarts == 1  # ... and a new one took its place
    assert killed not in strategy.actor_pids
    assert algorithm.statuses == ["succeeded", "succeeded", "succeeded"]
    assert algorithm.attempts[1] == 2  # "die" was retried once, on the replacement actor


class Boom(Algorithm):
    async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
        store = self.get_store()
        await store.enqueue_rollout(0, mode="train")
        await store.enqueue_rollout(1, mode="train")
        for _ in range(600):  # until both actors hold a rollout
            running = await store.query_rollouts(status_in=["running"])
            if len(running) == 2:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError("algorithm failed on purpose")


def test_an_algorithm_error_kills_every_actor_at_once(tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()

    @rollout
    def slow_agent(task: int) -> float:
        (pid_dir / str(os.getpid())).touch()
        time.sleep(120)
        return 1.0

    strategy = {"type": "ray", "graceful_timeout": 60}
    trainer = Trainer(run_dir=tmp_path / "run", strategy=strategy, n_runners=2, algorithm=Boom())
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="on purpose"):
        trainer.fit(slow_agent)
    assert time.monotonic() - started < 60  # no graceful wait for rollouts after an error
    trainer.close()
    pids = [int(p.name) for p in pid_dir.iterdir()]
    assert len(pids) == 2
    assert wait_until_gone(pids) == []


def test_a_run_whose_actors_all_die_beyond_max_restarts_fails(tmp_path: Path) -> None:
    @rollout
    def always_dies(task: str) -> float:
        os.kill(os.getpid(), signal.SIGKILL)
        return 1.0

    config = RolloutConfig(unresponsive_seconds=60.0)
    strategy = RayExecutionStrategy(1, max_restarts=1)
    trainer = Trainer(run_dir=tmp_path, strategy=strategy, algorithm=EnqueueAndWait(["x", "y"], config))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"every Ray runner actor failed and max_restarts \(1\) is spent"):
        trainer.fit(always_dies)
    trainer.close()
    assert strategy.restarts == 1
    assert time.monotonic() - started < 100  # not the algorithm's 120 s wait


def test_actors_connect_to_an_existing_store_server() -> None:
    backing = InMemoryLightningStore()
    with StoreServer(backing, port=0, token="secret") as server:
        client = HttpLightningStore(server.url, token="secret")
        trainer = Trainer(store=client, strategy="ray", n_runners=2)
        trainer.dev(pid_agent, [0.5, 0.25])
        results = asyncio.run(rollouts_with_spans(backing))
    assert sorted(find_final_reward(spans) for _, spans in results) == [0.25, 0.5]
    assert all(r.status == "succeeded" for r, _ in results)


def test_auto_runner_count_fills_the_cluster(tmp_path: Path) -> None:
    strategy = RayExecutionStrategy("auto", runner_num_cpus=1.0)
    with Trainer(run_dir=tmp_path, strategy=strategy) as trainer:
        trainer.dev(pid_agent, [0.1, 0.2, 0.3])
    assert strategy.n_runners == 2  # 2 CPUs, 1 per runner
    with pytest.raises(RuntimeError, match="cannot hold one runner"):
        RayExecutionStrategy("auto", runner_num_gpus=1.0)._runner_count(ray)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_runners": 0}, "n_runners"),
        ({"n_runners": "many"}, "n_runners"),
        ({"address": "http://head:6379"}, "Ray address"),
        ({"address": "head"}, "Ray address"),
        ({"runner_num_cpus": -1}, "runner_num_cpus"),
        ({"max_restarts": -1}, "max_restarts"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RayExecutionStrategy(**options)
