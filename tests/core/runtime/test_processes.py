"""Trainer with runners in separate processes: a store server here, HTTP clients there."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, List

import pytest

from agentlightning.algorithm import Algorithm
from agentlightning.emitter import emit_reward, find_final_reward
from agentlightning.litagent import LitAgent, rollout
from agentlightning.store import SqliteLightningStore
from agentlightning.trainer import Trainer
from agentlightning.types import RolloutConfig

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process signals")


@rollout
def pid_agent(task: float) -> float:
    """Reports which process ran it (as the final reward's companion span) and rewards the task."""
    emit_reward({"value": float(task), "pid": float(os.getpid())}, primary_key="value")
    return None  # type: ignore[return-value]


async def finished_rollouts(store: Any) -> List[Any]:
    rollouts = list(await store.query_rollouts(sort_by="start_time"))
    out = []
    for r in rollouts:
        spans = list(await store.query_spans(r.rollout_id, "latest"))
        out.append((r, spans))
    return out


def reward_pids(spans: List[Any]) -> List[int]:
    key = "agentlightning.reward.1.value"
    return [int(span.attributes[key]) for span in spans if key in span.attributes]


def test_fit_with_runner_processes(tmp_path: Path) -> None:
    with Trainer(run_dir=tmp_path, strategy="processes", n_runners=2) as trainer:
        trainer.dev(pid_agent, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        assert isinstance(trainer.store, SqliteLightningStore)
        results = asyncio.run(finished_rollouts(trainer.store))
        workers = asyncio.run(trainer.store.query_workers())
    assert [r.status for r, _ in results] == ["succeeded"] * 6
    assert sorted(find_final_reward(spans) for _, spans in results) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    pids = {
        int(span.attributes["agentlightning.reward.1.value"])
        for _, spans in results
        for span in spans
        if "agentlightning.reward.1.value" in span.attributes
    }
    assert os.getpid() not in pids  # the agents ran in the runner processes
    assert 1 <= len(pids) <= 2
    assert len(workers) == 2


class KillOnce:
    """An agent whose first attempt of task "die" kills its own process with SIGKILL."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, task: str) -> float:
        if task == "die" and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return 1.0


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
        done = await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=60)
        self.statuses = [r.status for r in done]
        for r in queued:
            self.attempts.append(len(await store.query_attempts(r.rollout_id)))


def test_a_killed_runner_process_is_replaced_and_its_rollout_retried(tmp_path: Path) -> None:
    marker = tmp_path / "killed"

    @rollout
    def agent(task: str) -> float:
        return KillOnce(marker)(task)

    config = RolloutConfig(unresponsive_seconds=1.0, max_attempts=3, retry_condition=["unresponsive"])
    algorithm = EnqueueAndWait(["ok-1", "die", "ok-2"], config)
    with Trainer(run_dir=tmp_path / "run", strategy="processes", n_runners=1, algorithm=algorithm) as trainer:
        trainer.fit(agent)
    assert marker.exists()  # the runner process really died
    assert algorithm.statuses == ["succeeded", "succeeded", "succeeded"]
    assert algorithm.attempts[1] == 2  # "die" was retried once, on the replacement runner


class Boom(Algorithm):
    async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
        await asyncio.sleep(0.2)
        raise RuntimeError("algorithm failed on purpose")


def test_an_algorithm_error_stops_every_runner_process(tmp_path: Path) -> None:
    trainer = Trainer(run_dir=tmp_path, strategy="processes", n_runners=2, algorithm=Boom())
    with pytest.raises(RuntimeError, match="on purpose"):
        trainer.fit(pid_agent)
    trainer.close()
    import multiprocessing

    assert [p for p in multiprocessing.active_children() if p.name.startswith("agl-runner")] == []


def test_runner_processes_connect_to_an_existing_store_server(tmp_path: Path) -> None:
    from agentlightning.server.serve import StoreServer
    from agentlightning.store import InMemoryLightningStore
    from agentlightning.store.client import HttpLightningStore

    backing = InMemoryLightningStore()
    with StoreServer(backing, port=0, token="secret") as server:
        client = HttpLightningStore(server.url, token="secret")
        trainer = Trainer(store=client, strategy="processes", n_runners=2)
        trainer.dev(pid_agent, [0.5, 0.25])
        results = asyncio.run(finished_rollouts(backing))
    assert sorted(find_final_reward(spans) for _, spans in results) == [0.25, 0.5]
    assert all(r.status == "succeeded" for r, _ in results)


class PidAgent(LitAgent[float]):
    """``pid_agent`` as a class: plain pickle finds a class by name (a decorated function's name is the agent)."""

    def rollout(self, task: float, resources: Any, rollout: Any) -> float:
        emit_reward({"value": float(task), "pid": float(os.getpid())}, primary_key="value")
        return None  # type: ignore[return-value]


def test_spawned_runner_processes_get_the_runner_bundle_pickled(tmp_path: Path) -> None:
    # spawn pickles the runner bundle (runner, tracer, agent) instead of inheriting it, as Ray actors do.
    from agentlightning.execution import ProcessesExecutionStrategy

    strategy = ProcessesExecutionStrategy(n_runners=1, start_method="spawn")
    with Trainer(run_dir=tmp_path, strategy=strategy) as trainer:
        trainer.dev(PidAgent(), [0.5, 0.75])
        results = asyncio.run(finished_rollouts(trainer.store))
    assert [r.status for r, _ in results] == ["succeeded", "succeeded"]
    assert sorted(find_final_reward(spans) for _, spans in results) == [0.5, 0.75]
    pids = {pid for _, spans in results for pid in reward_pids(spans)}
    assert pids and os.getpid() not in pids
