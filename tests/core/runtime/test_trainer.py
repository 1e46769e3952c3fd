"""Trainer: wiring algorithm, store, runners and strategy; fit() and dev() end to end, in process."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import agentlightning as agl
from agentlightning.adapter import TraceAdapter
from agentlightning.algorithm import Algorithm, Baseline, algo
from agentlightning.emitter import find_final_reward
from agentlightning.errors import ComponentResolutionError, UnknownStoreURIError
from agentlightning.execution import ProcessesExecutionStrategy, SharedMemoryExecutionStrategy
from agentlightning.litagent import LitAgent, rollout
from agentlightning.runner import LitAgentRunner
from agentlightning.store import InMemoryLightningStore, SqliteLightningStore, open_store
from agentlightning.store.base import LightningStore
from agentlightning.trainer import Trainer
from agentlightning.types import Hook, NamedResources, PromptTemplate, Rollout

# -- helpers -------------------------------------------------------------------------------------------


@rollout
def reward_agent(task: float) -> float:
    """Rewards each task with its own value."""
    return float(task)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def rollouts_and_rewards(store: LightningStore) -> List[tuple]:
    result = []
    for r in await store.query_rollouts(sort_by="start_time"):
        spans = list(await store.query_spans(r.rollout_id, "latest"))
        result.append((r.input, r.mode, r.status, find_final_reward(spans)))
    return result


class EnqueueAndWait(Algorithm):
    """An async algorithm: enqueue every train sample, wait for all, record final rewards."""

    def __init__(self) -> None:
        super().__init__()
        self.rewards: Dict[Any, Optional[float]] = {}

    async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
        store = self.get_store()
        queued = [await store.enqueue_rollout(x, mode="train") for x in train_dataset]
        finished = await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=20)
        assert len(finished) == len(queued)
        for r in queued:
            self.rewards[r.input] = find_final_reward(list(await store.query_spans(r.rollout_id, "latest")))


@pytest.fixture
def memory_store() -> Any:
    store = InMemoryLightningStore()
    yield store
    run(store.close())


# -- stores ----------------------------------------------------------------------------------------------


def test_dev_defaults_to_a_sqlite_file_in_run_dir(tmp_path: Path) -> None:
    trainer = Trainer(run_dir=tmp_path, n_runners=2)
    trainer.dev(reward_agent, [0.1, 0.2, 0.3], val_dataset=[0.9])
    db = tmp_path / "store.db"
    assert db.exists()
    assert isinstance(trainer.store, SqliteLightningStore)

    async def inspect() -> List[tuple]:
        reader = open_store(f"sqlite:///{db}?mode=ro")  # another reader, while the trainer's store is open
        try:
            return await rollouts_and_rewards(reader)
        finally:
            await reader.close()

    try:
        assert sorted(run(inspect())) == [
            (0.1, "train", "succeeded", 0.1),
            (0.2, "train", "succeeded", 0.2),
            (0.3, "train", "succeeded", 0.3),
            (0.9, "val", "succeeded", 0.9),
        ]
    finally:
        run(trainer.store.close())
    assert isinstance(trainer.algorithm, Baseline)
    assert sorted(r.final_reward for r in trainer.algorithm.reports) == [0.1, 0.2, 0.3, 0.9]  # type: ignore[misc]


def test_without_run_dir_a_fresh_one_is_made_under_agl_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = Trainer()
    trainer.dev(reward_agent, [1.0])
    try:
        (db,) = list((tmp_path / "agl_runs").glob("*/store.db"))
        assert trainer.run_dir is not None and db.parent.resolve() == trainer.run_dir.resolve()
    finally:
        run(trainer.store.close())  # type: ignore[union-attr]


def test_the_store_is_built_with_the_trainer_and_usable_at_once(tmp_path: Path) -> None:
    # 0.3 code reads `trainer.store` right after construction, e.g. to enqueue work or add resources.
    trainer = Trainer(store=f"sqlite:///{tmp_path / 'early.db'}")
    assert isinstance(trainer.store, SqliteLightningStore)
    early = run(trainer.store.enqueue_rollout(input=0.5, mode="train"))
    trainer.dev(reward_agent, [0.25])
    rollouts = {r.rollout_id: r for r in run(trainer.store.query_rollouts())}
    assert rollouts[early.rollout_id].status == "succeeded" and len(rollouts) == 2
    trainer.close()
    assert trainer.store is None and (tmp_path / "early.db").exists()


def test_the_default_store_is_opened_on_first_use(tmp_path: Path) -> None:
    trainer = Trainer(run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # constructing a Trainer leaves no files behind
    store = trainer.store
    assert isinstance(store, SqliteLightningStore) and (tmp_path / "run" / "store.db").exists()
    assert trainer.store is store
    trainer.close()


class _OwnStore(InMemoryLightningStore):
    closed = 0

    async def close(self) -> None:
        type(self).closed += 1
        await super().close()


@pytest.mark.parametrize(
    "spec",
    [
        _OwnStore,
        lambda: _OwnStore(),
        f"{__name__}:_OwnStore",
        {"type": f"{__name__}._OwnStore", "thread_safe": True},
    ],
    ids=["class", "factory", "import-string", "dict"],
)
def test_store_given_as_a_component_spec_is_built_and_closed_by_the_trainer(spec: Any) -> None:
    _OwnStore.closed = 0
    with Trainer(store=spec) as trainer:
        assert isinstance(trainer.store, _OwnStore)
        trainer.dev(reward_agent, [0.5])
        assert run(rollouts_and_rewards(trainer.store)) == [(0.5, "train", "succeeded", 0.5)]
    assert _OwnStore.closed == 1 and trainer.store is None


def test_a_bad_store_spec_is_refused_when_the_trainer_is_built() -> None:
    with pytest.raises(ComponentResolutionError, match="store"):
        Trainer(store=42)
    with pytest.raises(ComponentResolutionError, match="LightningStore"):
        Trainer(store="agentlightning.tracer:OtelTracer")
    with pytest.raises(UnknownStoreURIError, match="nosuchscheme"):
        Trainer(store="nosuchscheme://x")


def test_store_given_as_a_uri() -> None:
    trainer = Trainer(store="memory://")
    trainer.dev(reward_agent, [0.5])
    assert isinstance(trainer.store, InMemoryLightningStore)
    assert run(rollouts_and_rewards(trainer.store)) == [(0.5, "train", "succeeded", 0.5)]


async def test_store_given_as_an_object_of_every_backend(store: LightningStore) -> None:
    trainer = Trainer(store=store)
    # Trainer.dev from inside a running loop (a notebook, this test) runs in a helper thread.
    await asyncio.to_thread(trainer.dev, reward_agent, [0.25, 0.75])
    assert trainer.store is store
    assert sorted(await rollouts_and_rewards(store)) == [
        (0.25, "train", "succeeded", 0.25),
        (0.75, "train", "succeeded", 0.75),
    ]


async def test_dev_called_inside_a_running_loop(memory_store: LightningStore) -> None:
    trainer = Trainer(store=memory_store)
    trainer.dev(reward_agent, [1.0])  # blocks this loop, runs its own in a helper thread
    assert [status for _, _, status, _ in await rollouts_and_rewards(memory_store)] == ["succeeded"]


# -- algorithms ------------------------------------------------------------------------------------------


def test_algorithm_by_name(memory_store: LightningStore) -> None:
    trainer = Trainer(algorithm="baseline", store=memory_store)
    assert isinstance(trainer.algorithm, Baseline)
    trainer.dev(reward_agent, [0.3])
    assert [r.final_reward for r in trainer.algorithm.reports] == [0.3]


def test_custom_async_algorithm(memory_store: LightningStore) -> None:
    algorithm = EnqueueAndWait()
    adapter = TraceAdapter[Any]()
    trainer = Trainer(algorithm=algorithm, store=memory_store, adapter=adapter, n_runners=2)
    trainer.fit(reward_agent, [1.0, 2.0, 3.0])
    assert algorithm.rewards == {1.0: 1.0, 2.0: 2.0, 3.0: 3.0}
    assert algorithm.get_trainer() is trainer
    assert algorithm.get_store() is memory_store
    assert algorithm.get_adapter() is adapter
    assert reward_agent.get_trainer() is trainer


def test_custom_sync_algorithm(memory_store: LightningStore) -> None:
    seen: Dict[str, Any] = {}

    class SyncAlgorithm(Algorithm):
        def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
            seen["thread"] = threading.current_thread()
            # A blocking algorithm talks to the async store through its own loop; the runners keep going.
            seen["rewards"] = asyncio.run(self._collect(train_dataset))

        async def _collect(self, dataset: Any) -> List[Optional[float]]:
            store = self.get_store()
            queued = [await store.enqueue_rollout(x) for x in dataset]
            await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=20)
            return [find_final_reward(list(await store.query_spans(r.rollout_id, "latest"))) for r in queued]

    Trainer(algorithm=SyncAlgorithm(), store=memory_store).fit(reward_agent, [0.4, 0.6])
    assert seen["rewards"] == [0.4, 0.6]
    assert seen["thread"] is not threading.main_thread()


def test_algo_function_as_algorithm(memory_store: LightningStore) -> None:
    results: List[Any] = []

    @algo
    async def my_algo(store: LightningStore, train_dataset: Any) -> None:
        queued = [await store.enqueue_rollout(x) for x in train_dataset]
        await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=20)
        results.extend([(await store.get_rollout_by_id(r.rollout_id)).status for r in queued])  # type: ignore[union-attr]

    Trainer(algorithm=my_algo, store=memory_store).fit(reward_agent, [1.0, 1.0])
    assert results == ["succeeded", "succeeded"]


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_failing_algorithm_fails_fit_and_stops_the_runners(memory_store: LightningStore, kind: str) -> None:
    started = threading.Event()
    cancelled = threading.Event()
    error = ValueError("algorithm bug")

    class Stuck(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1.0

    async def enqueue_then_fail(store: LightningStore) -> None:
        await store.enqueue_rollout("t")
        await asyncio.to_thread(started.wait, 10)
        raise error

    class AsyncFailing(Algorithm):
        async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
            await enqueue_then_fail(self.get_store())

    class SyncFailing(Algorithm):
        def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
            asyncio.run(enqueue_then_fail(self.get_store()))

    algorithm = AsyncFailing() if kind == "async" else SyncFailing()
    trainer = Trainer(algorithm=algorithm, store=memory_store, n_runners=2)
    with pytest.raises(ValueError, match="algorithm bug") as info:
        trainer.fit(Stuck(), [1])
    assert info.value is error
    assert cancelled.is_set()  # the runner stopped the agent it was running

    async def states() -> List[tuple]:
        (r,) = list(await memory_store.query_rollouts())
        attempt = await memory_store.get_latest_attempt(r.rollout_id)
        return [(r.status, attempt.status if attempt else None)]

    assert run(states()) == [("failed", "failed")]  # nothing left "running"


def test_dev_requires_a_fast_algorithm() -> None:
    trainer = Trainer(algorithm=EnqueueAndWait(), store="memory://")
    with pytest.raises(TypeError, match="FastAlgorithm"):
        trainer.dev(reward_agent, [1.0])
    assert trainer.store is not None
    assert len(run(trainer.store.query_rollouts())) == 0  # nothing was started


def test_fit_rejects_the_v01_server_url() -> None:
    trainer = Trainer(algorithm=EnqueueAndWait(), store="memory://")
    with pytest.raises(TypeError, match="dataset"):
        trainer.fit(reward_agent, "http://localhost:9999/")  # type: ignore[arg-type]


def test_agent_must_be_a_litagent() -> None:
    def plain(task: Any) -> float:
        return 1.0

    with pytest.raises(TypeError, match="rollout"):
        Trainer(store="memory://").dev(plain, [1.0])  # type: ignore[arg-type]


# -- runners -----------------------------------------------------------------------------------------


class RecordingRunner(LitAgentRunner):
    instances: List["RecordingRunner"] = []

    def init_worker(self, worker_id: int, store: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().init_worker(worker_id, store, **kwargs)
        RecordingRunner.instances.append(self)


def test_n_runners_gives_distinct_runners_and_worker_ids(memory_store: LightningStore) -> None:
    RecordingRunner.instances = []
    algorithm = EnqueueAndWait()
    trainer = Trainer(algorithm=algorithm, store=memory_store, n_runners=3, runner=RecordingRunner)
    trainer.fit(reward_agent, [float(i) for i in range(6)])
    runners = RecordingRunner.instances
    assert len(runners) == 3
    assert len({id(r) for r in runners}) == 3
    assert sorted(r.worker_id for r in runners) == [0, 1, 2]  # type: ignore[type-var]
    names = {r.worker_name for r in runners}
    assert len(names) == 3
    assert all(r.tracer is trainer.tracer for r in runners)  # optional default reached the class

    async def workers() -> set:
        return {w.worker_id for w in await memory_store.query_workers()}

    assert names <= run(workers())
    assert algorithm.rewards == {float(i): float(i) for i in range(6)}


def test_runner_given_as_a_dict_gets_the_trainer_defaults(memory_store: LightningStore) -> None:
    trainer = Trainer(store=memory_store, runner={"type": LitAgentRunner, "concurrency": 4}, max_rollouts=7)
    assert isinstance(trainer.runner, LitAgentRunner)
    assert trainer.runner.concurrency == 4
    assert trainer.runner.max_rollouts == 7
    assert trainer.runner.tracer is trainer.tracer


def test_hooks_reach_the_runners(memory_store: LightningStore) -> None:
    ended: List[str] = []

    class OnEnd(Hook):
        async def on_rollout_end(self, *, agent: Any, runner: Any, rollout: Rollout, spans: Any) -> None:
            ended.append(rollout.input)

    Trainer(store=memory_store, hooks=[OnEnd()], n_runners=2).dev(reward_agent, [1.0, 2.0, 3.0])
    assert sorted(ended) == [1.0, 2.0, 3.0]


def test_without_algorithm_runners_serve_until_max_rollouts(memory_store: LightningStore) -> None:
    async def enqueue() -> None:
        for x in (1.0, 2.0, 3.0):
            await memory_store.enqueue_rollout(x)

    run(enqueue())
    trainer = Trainer(store=memory_store, max_rollouts=2)
    assert trainer.algorithm is None
    trainer.fit(reward_agent)  # returns once the runner has done its 2 rollouts
    statuses = [status for _, _, status, _ in run(rollouts_and_rewards(memory_store))]
    assert statuses == ["succeeded", "succeeded", "queuing"]


# -- resources -----------------------------------------------------------------------------------------


def test_initial_resources_reach_the_agent(memory_store: LightningStore) -> None:
    seen: List[str] = []

    @rollout
    def agent(task: Any, prompt_template: PromptTemplate) -> float:
        seen.append(prompt_template.format(x=task))
        return 1.0

    trainer = Trainer(
        store=memory_store, initial_resources={"prompt": PromptTemplate(template="say {x}", engine="f-string")}
    )
    trainer.dev(agent, ["a", "b"])
    assert sorted(seen) == ["say a", "say b"]


def test_initial_resources_are_published_without_an_algorithm(memory_store: LightningStore) -> None:
    seen: List[str] = []

    @rollout
    def agent(task: Any, prompt_template: PromptTemplate) -> float:
        seen.append(prompt_template.template)
        return 1.0

    async def enqueue() -> None:
        await memory_store.enqueue_rollout("t")

    run(enqueue())
    Trainer(store=memory_store, max_rollouts=1, initial_resources={"p": PromptTemplate(template="T")}).fit(agent)
    assert seen == ["T"]


# -- arguments -------------------------------------------------------------------------------------------


def test_deprecated_arguments_warn_and_map() -> None:
    with pytest.warns(DeprecationWarning, match="n_workers"):
        trainer = Trainer(n_workers=2, store="memory://")
    assert trainer.n_runners == 2
    with pytest.warns(DeprecationWarning, match="max_tasks"):
        trainer = Trainer(max_tasks=3, store="memory://")
    assert trainer.max_rollouts == 3
    assert trainer.runner.max_rollouts == 3  # type: ignore[attr-defined]
    adapter = TraceAdapter[Any]()
    with pytest.warns(DeprecationWarning, match="triplet_exporter"):
        trainer = Trainer(triplet_exporter=adapter, store="memory://")
    assert trainer.adapter is adapter
    with pytest.warns(DeprecationWarning, match="dev"):
        Trainer(dev=True, store="memory://")


@pytest.mark.parametrize("name", ["processes", "cs", "client-server"])
def test_process_strategy_names(name: str) -> None:
    trainer = Trainer(strategy=name, n_runners=3)
    assert isinstance(trainer.strategy, ProcessesExecutionStrategy)
    assert trainer.strategy.n_runners == 3


def test_strategy_forms_and_its_n_runners() -> None:
    assert isinstance(Trainer(strategy="shm").strategy, SharedMemoryExecutionStrategy)
    trainer = Trainer(strategy={"type": "shm", "n_runners": 3}, n_runners=1)
    assert trainer.n_runners == 3  # the strategy's own n_runners wins
    trainer = Trainer(strategy="shm", n_runners=2)
    assert trainer.strategy.n_runners == 2  # the trainer's reaches a strategy built by name
    with pytest.raises(ComponentResolutionError, match="warp"):
        Trainer(strategy="warp")
    with pytest.raises(ValueError, match="n_runners"):
        Trainer(n_runners=0)


def test_trainer_is_exported() -> None:
    assert agl.Trainer is Trainer


def test_close_releases_a_store_the_trainer_opened(tmp_path: Path) -> None:
    with Trainer(run_dir=tmp_path) as trainer:
        trainer.dev(reward_agent, [0.25])
        assert isinstance(trainer.store, SqliteLightningStore)
    assert trainer.store is None
    # the file is released: a second trainer can write the same run directory in this process
    second = Trainer(run_dir=tmp_path)
    second.dev(reward_agent, [0.75])
    try:
        assert sorted(run(rollouts_and_rewards(second.store))) == [  # type: ignore[arg-type]
            (0.25, "train", "succeeded", 0.25),
            (0.75, "train", "succeeded", 0.75),
        ]
    finally:
        second.close()


def test_close_leaves_a_store_passed_in_open(memory_store: InMemoryLightningStore) -> None:
    trainer = Trainer(store=memory_store)
    trainer.dev(reward_agent, [0.5])
    trainer.close()
    assert trainer.store is memory_store
    assert len(run(memory_store.query_rollouts())) == 1
