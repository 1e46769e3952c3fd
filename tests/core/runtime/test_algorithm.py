"""Algorithm base, @algo, Baseline, and algorithms looked up by name."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any, Dict, List, Optional, Sequence

import pytest
from runtime_helpers import eventually

import agentlightning as agl
from agentlightning import plugins
from agentlightning.adapter import TraceAdapter
from agentlightning.algorithm import Algorithm, Baseline, FastAlgorithm, FunctionalAlgorithm, algo
from agentlightning.emitter import emit_reward
from agentlightning.store import open_store
from agentlightning.store.base import LightningStore
from agentlightning.types import PromptTemplate, Span

# -- Algorithm base -----------------------------------------------------------------------------


class Referent:
    pass


def test_algorithm_links_and_their_errors() -> None:
    algorithm = Algorithm()
    with pytest.raises(ValueError, match="store"):
        algorithm.get_store()
    with pytest.raises(ValueError, match="adapter"):
        algorithm.get_adapter()
    with pytest.raises(ValueError, match="Trainer"):
        algorithm.get_trainer()
    assert algorithm.get_llm_proxy() is None
    assert algorithm.get_initial_resources() is None

    store = open_store("memory://")
    trainer, adapter, proxy = Referent(), TraceAdapter[Any](), Referent()
    resources = {"p": PromptTemplate(template="x")}
    algorithm.set_store(store)
    algorithm.set_trainer(trainer)  # type: ignore[arg-type]
    algorithm.set_adapter(adapter)
    algorithm.set_llm_proxy(proxy)
    algorithm.set_initial_resources(resources)  # type: ignore[arg-type]
    assert algorithm.get_store() is store
    assert algorithm.get_trainer() is trainer
    assert algorithm.get_adapter() is adapter
    assert algorithm.get_llm_proxy() is proxy
    assert algorithm.get_initial_resources() == resources

    # Trainer, adapter and proxy are weak references; the store is held.
    del trainer, adapter, proxy, store
    gc.collect()
    with pytest.raises(ValueError, match="Trainer"):
        algorithm.get_trainer()
    with pytest.raises(ValueError, match="adapter"):
        algorithm.get_adapter()
    assert algorithm.get_llm_proxy() is None
    assert isinstance(algorithm.get_store(), LightningStore)
    algorithm.set_llm_proxy(None)
    assert algorithm.get_llm_proxy() is None


async def test_is_async_and_call_runs() -> None:
    calls: List[Any] = []

    class Sync(Algorithm):
        def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
            calls.append(("sync", train_dataset, val_dataset))

    class Async(Algorithm):
        async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
            calls.append(("async", train_dataset, val_dataset))

    assert not Sync().is_async()
    assert Async().is_async()
    assert Sync()([1], [2]) is None
    await Async()(train_dataset=[3])  # type: ignore[misc]
    assert calls == [("sync", [1], [2]), ("async", [3], None)]
    with pytest.raises(NotImplementedError, match="run"):
        Algorithm().run()
    assert issubclass(Baseline, FastAlgorithm) and not issubclass(Algorithm, FastAlgorithm)


# -- @algo -----------------------------------------------------------------------------------------


async def test_algo_injects_only_what_the_function_declares() -> None:
    received: Dict[str, Any] = {}

    @algo
    async def my_algo(store: Any, train_dataset: Any, initial_resources: Any) -> None:
        received.update(store=store, train_dataset=train_dataset, initial_resources=initial_resources)

    assert isinstance(my_algo, FunctionalAlgorithm) and isinstance(my_algo, Algorithm)
    assert my_algo.is_async()
    store = open_store("memory://")
    resources = {"p": PromptTemplate(template="x")}
    my_algo.set_store(store)
    my_algo.set_initial_resources(resources)  # type: ignore[arg-type]
    await my_algo.run(train_dataset=[1, 2])  # type: ignore[misc]
    assert received == {"store": store, "train_dataset": [1, 2], "initial_resources": resources}


def test_algo_injects_adapter_llm_proxy_and_val_dataset() -> None:
    received: Dict[str, Any] = {}

    @algo
    def everything(
        store: Any, adapter: Any, llm_proxy: Any, initial_resources: Any, train_dataset: Any, val_dataset: Any
    ) -> None:
        received.update(
            store=store,
            adapter=adapter,
            llm_proxy=llm_proxy,
            initial_resources=initial_resources,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
        )

    assert not everything.is_async()
    store, adapter = open_store("memory://"), TraceAdapter[Any]()
    everything.set_store(store)
    everything.set_adapter(adapter)
    assert everything.run(train_dataset=None, val_dataset=["v"]) is None
    assert received == {
        "store": store,
        "adapter": adapter,
        "llm_proxy": None,
        "initial_resources": None,
        "train_dataset": None,
        "val_dataset": ["v"],
    }


def test_algo_with_no_parameters_and_defaults() -> None:
    calls: List[Any] = []

    @algo
    def nothing() -> None:
        calls.append("nothing")

    @algo
    def with_default(store: Any, retries: int = 3) -> None:
        calls.append(retries)

    nothing.run()
    with_default.set_store(open_store("memory://"))
    with_default.run()
    assert calls == ["nothing", 3]


def test_algo_rejects_parameters_it_cannot_supply() -> None:
    def needs_model(store: Any, model_name: str) -> None:
        pass

    with pytest.raises(TypeError) as info:
        algo(needs_model)
    message = str(info.value)
    assert "model_name" in message and "needs_model" in message and "train_dataset" in message


def test_algo_rejects_a_dataset_it_does_not_declare() -> None:
    @algo
    def train_only(train_dataset: Any) -> None:
        pass

    @algo
    def no_data(store: Any) -> None:
        pass

    train_only.run(train_dataset=[1])
    with pytest.raises(TypeError, match="val_dataset"):
        train_only.run(train_dataset=[1], val_dataset=[2])
    no_data.set_store(open_store("memory://"))
    with pytest.raises(TypeError, match="train_dataset"):
        no_data.run(train_dataset=[1])
    no_data.run()  # nothing given: fine


def test_algo_store_must_be_set_before_running() -> None:
    @algo
    def needs_store(store: Any) -> None:
        pass

    with pytest.raises(ValueError, match="store"):
        needs_store.run()


def test_algo_function_stays_callable() -> None:
    @algo
    def add(store: Any, train_dataset: Any) -> Any:
        """Adds."""
        return (store, train_dataset)

    assert add("s", [1]) == ("s", [1])
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert agl.algo is algo


# -- Baseline ----------------------------------------------------------------------------------------


async def complete(store: LightningStore, reward: Optional[float] = None, status: str = "succeeded") -> str:
    """Act as a runner for the oldest queued rollout."""
    attempted = await store.dequeue_rollout(worker_id="test-runner")
    assert attempted is not None
    rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
    if reward is not None:
        core = emit_reward(reward, propagate=False)
        seq = await store.get_next_span_sequence_id(rid, aid)
        await store.add_span(Span.from_core_fields(core, rollout_id=rid, attempt_id=aid, sequence_id=seq))
    await store.update_attempt(rid, aid, status=status)
    return rid


async def open_count(store: LightningStore) -> int:
    return len(await store.query_rollouts(status_in=["queuing", "requeuing", "preparing", "running"]))


async def test_baseline_bounds_rollouts_in_flight_and_reports_each(store: LightningStore) -> None:
    baseline = Baseline(max_queue_length=2)
    baseline.set_store(store)
    run = asyncio.ensure_future(baseline.run(train_dataset=[0.0, 0.1, 0.2, 0.3], val_dataset=[0.4]))
    completed: List[str] = []
    for remaining in (5, 4, 3, 2, 1):

        async def filled(expected: int = min(2, remaining)) -> bool:
            return await open_count(store) == expected

        await eventually(filled, what=f"{min(2, remaining)} rollouts in flight")
        await asyncio.sleep(0.05)  # let Baseline try to overfill the queue
        assert await open_count(store) <= 2
        queued = await store.query_rollouts(status_in=["queuing"], sort_by="start_time")
        completed.append(await complete(store, reward=float(queued[0].input)))
    await asyncio.wait_for(run, 5)

    assert [r.rollout.rollout_id for r in baseline.reports] == completed
    assert [r.final_reward for r in baseline.reports] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert [r.rollout.mode for r in baseline.reports] == ["train"] * 4 + ["val"]
    assert {r.rollout.status for r in baseline.reports} == {"succeeded"}
    assert all(len(r.spans) == 1 for r in baseline.reports)


async def test_baseline_reports_failed_rollouts_too(store: LightningStore) -> None:
    baseline = Baseline()
    baseline.set_store(store)
    run = asyncio.ensure_future(baseline.run(train_dataset=["a"]))

    async def queued() -> bool:
        return await open_count(store) == 1

    await eventually(queued, what="the rollout to be enqueued")
    await complete(store, status="failed")
    await asyncio.wait_for(run, 5)
    (report,) = baseline.reports
    assert report.rollout.status == "failed" and report.final_reward is None


async def test_baseline_epochs_publish_initial_resources_and_adapt(store: LightningStore) -> None:
    class CountSpans(TraceAdapter[int]):
        def adapt(self, source: Sequence[Span], /) -> int:
            return len(source)

    adapter = CountSpans()
    baseline = Baseline(n_epochs=2, max_queue_length=10)
    baseline.set_store(store)
    baseline.set_adapter(adapter)
    baseline.set_initial_resources({"prompt": PromptTemplate(template="hello {x}")})  # type: ignore[arg-type]
    run = asyncio.ensure_future(baseline.run(train_dataset=["t1", "t2"], val_dataset=["v1"]))

    async def all_queued() -> bool:
        return await open_count(store) == 6

    await eventually(all_queued, what="6 rollouts (2 epochs x 3 samples)")
    resources = await store.get_resources_by_id("default")
    assert resources is not None and resources.resources["prompt"].template == "hello {x}"  # type: ignore[union-attr]
    queued = list(await store.query_rollouts(sort_by="start_time"))
    assert [(r.input, r.mode) for r in queued] == [("t1", "train"), ("t2", "train"), ("v1", "val")] * 2
    assert {r.resources_id for r in queued} == {"default"}
    for _ in range(6):
        await complete(store, reward=1.0)
    await asyncio.wait_for(run, 5)
    assert [r.adapted for r in baseline.reports] == [1] * 6


async def test_baseline_survives_a_failing_adapter(store: LightningStore, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(TraceAdapter[Any]):
        def adapt(self, source: Sequence[Span], /) -> Any:
            raise RuntimeError("adapter bug")

    adapter = Broken()
    baseline = Baseline()
    baseline.set_store(store)
    baseline.set_adapter(adapter)
    run = asyncio.ensure_future(baseline.run(train_dataset=["a", "b"]))
    for _ in range(2):

        async def one_queued() -> bool:
            return len(await store.query_rollouts(status_in=["queuing"])) >= 1

        await eventually(one_queued, what="a queued rollout")
        await complete(store, reward=0.5)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(run, 5)
    assert [r.final_reward for r in baseline.reports] == [0.5, 0.5]
    assert [r.adapted for r in baseline.reports] == [None, None]


async def test_baseline_with_nothing_to_do_returns(store: LightningStore) -> None:
    baseline = Baseline()
    baseline.set_store(store)
    await asyncio.wait_for(baseline.run(), 5)
    assert baseline.reports == []


def test_baseline_arguments() -> None:
    with pytest.warns(DeprecationWarning, match="train_split"):
        Baseline(train_split=0.3)
    with pytest.warns(DeprecationWarning, match="polling_interval"):
        Baseline(polling_interval=1.0)
    with pytest.raises(TypeError, match="n_rollouts"):
        Baseline(n_rollouts=3)
    with pytest.raises(ValueError, match="n_epochs"):
        Baseline(n_epochs=0)
    with pytest.raises(ValueError, match="max_queue_length"):
        Baseline(max_queue_length=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        baseline = Baseline(n_epochs=2, max_queue_length=8, span_verbosity="none")
    assert (baseline.n_epochs, baseline.max_queue_length, baseline.span_verbosity) == (2, 8, "none")


# -- algorithms by name -------------------------------------------------------------------------------


@pytest.fixture
def no_algorithm_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any installed apo/verl plugin: these tests are about a machine without them."""
    real = plugins.entry_points

    def filtered(**kwargs: Any) -> Any:
        found = real(**kwargs)
        if kwargs.get("group") == plugins.ALGORITHM_ENTRY_POINT_GROUP:
            return [ep for ep in found if ep.name not in ("apo", "verl")]
        return found

    monkeypatch.setattr(plugins, "entry_points", filtered)


@pytest.mark.usefixtures("no_algorithm_plugins")
@pytest.mark.parametrize(
    "factory, name, package", [(agl.APO, "apo", "agentlightning-apo"), (agl.VERL, "verl", "agentlightning-verl")]
)
def test_plugin_algorithms_without_their_plugin_raise_a_clear_error(factory: Any, name: str, package: str) -> None:
    with pytest.raises(LookupError) as info:
        factory(config={})
    message = str(info.value)
    assert repr(name) in message
    assert f"pip install {package}" in message
    assert "baseline" in message  # what is available instead


@pytest.mark.usefixtures("no_algorithm_plugins")
def test_trainer_names_the_missing_plugin_too() -> None:
    with pytest.raises(agl.ComponentResolutionError) as info:
        agl.Trainer(algorithm="apo")
    assert "'apo'" in str(info.value) and "agentlightning-apo" in str(info.value)


def test_baseline_is_found_by_name() -> None:
    assert plugins.resolve("algorithms", "baseline") is Baseline
