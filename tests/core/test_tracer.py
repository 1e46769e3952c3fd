"""Tracers: attribution of spans to rollouts via context variables, batching to the store, providers."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import multiprocessing
import os
import random
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import pytest
import pytest_asyncio
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from agentlightning.emitter import emit_reward, get_reward_value
from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.tracer import (
    AgentOpsTracer,
    DummyTracer,
    OtelTracer,
    Tracer,
    clear_active_tracer,
    get_active_tracer,
    set_active_tracer,
)
from agentlightning.tracer.otel import LightningSpanProcessor
from agentlightning.types import Span


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LightningStore]:
    backend: LightningStore
    if request.param == "memory":
        backend = InMemoryLightningStore()
    else:
        backend = SqliteLightningStore(tmp_path / "store.db")
    yield backend
    await backend.close()


@pytest.fixture(autouse=True)
def _no_process_tracer() -> Iterator[None]:
    clear_active_tracer()
    yield
    clear_active_tracer()


@pytest.fixture
def fresh_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend no global TracerProvider was set yet (OpenTelemetry only allows setting it once)."""
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace_api, "_TRACER_PROVIDER_SET_ONCE", Once())


async def new_attempt(store: LightningStore) -> Tuple[str, str]:
    rollout = await store.start_rollout(input={"task": "t"})
    return rollout.rollout_id, rollout.attempt.attempt_id


async def stored(store: LightningStore, rollout_id: str) -> List[Span]:
    return list(await store.query_spans(rollout_id))


async def wait_for_stored(store: LightningStore, rollout_id: str, count: int, timeout: float = 5.0) -> List[Span]:
    deadline = time.monotonic() + timeout
    while True:
        spans = await stored(store, rollout_id)
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.02)


def otel() -> trace_api.Tracer:
    return trace_api.get_tracer("test.agent")


# -- active tracer ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_trace_context_requires_both_ids_or_none() -> None:
    tracer = DummyTracer()
    with pytest.raises(ValueError, match="together"):
        async with tracer.trace_context(rollout_id="r"):
            pass
    with pytest.raises(ValueError, match="together"):
        async with tracer.trace_context(attempt_id="a"):
            pass


@pytest.mark.asyncio
async def test_active_tracer_follows_the_context() -> None:
    outer, inner = OtelTracer(), DummyTracer()
    assert get_active_tracer() is None
    async with outer.trace_context():
        assert get_active_tracer() is outer
        async with inner.trace_context():
            assert get_active_tracer() is inner
        assert get_active_tracer() is outer
    assert get_active_tracer() is None

    seen: dict[str, Any] = {}

    async def run(name: str, tracer: Tracer) -> None:
        async with tracer.trace_context():
            await asyncio.sleep(0.01)
            seen[name] = get_active_tracer()

    await asyncio.gather(run("a", outer), run("b", inner))
    assert seen == {"a": outer, "b": inner}


def test_process_wide_tracer_is_a_fallback() -> None:
    first, second = DummyTracer(), DummyTracer()
    set_active_tracer(first)
    set_active_tracer(first)  # same tracer again: fine
    with pytest.raises(RuntimeError, match="already set"):
        set_active_tracer(second)
    assert get_active_tracer() is first
    # Visible from other threads too.
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(get_active_tracer()))
    thread.start()
    thread.join()
    assert result == [first]
    clear_active_tracer()
    assert get_active_tracer() is None
    set_active_tracer(second)
    assert get_active_tracer() is second


@pytest.mark.asyncio
async def test_context_tracer_wins_over_process_tracer() -> None:
    fallback, scoped = DummyTracer(), DummyTracer()
    set_active_tracer(fallback)
    async with scoped.trace_context():
        assert get_active_tracer() is scoped
    assert get_active_tracer() is fallback


# -- spans reach the store -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_spans_are_in_the_store_when_the_context_exits(store: LightningStore) -> None:
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context("run", rollout_id=rollout_id, attempt_id=attempt_id) as handle:
        with otel().start_as_current_span("llm", attributes={"gen_ai.request.model": "m"}):
            pass
        with handle.start_as_current_span("via-handle"):
            pass
        emit_reward(0.75)
    spans = await stored(store, rollout_id)
    assert sorted(s.name for s in spans) == ["agentlightning.annotation", "llm", "via-handle"]
    assert {(s.rollout_id, s.attempt_id) for s in spans} == {(rollout_id, attempt_id)}
    assert sorted(s.sequence_id for s in spans) == [1, 2, 3]
    llm = next(s for s in spans if s.name == "llm")
    assert llm.attributes["gen_ai.request.model"] == "m"
    reward_span = next(s for s in spans if s.name == "agentlightning.annotation")
    assert get_reward_value(reward_span) == 0.75

    last = tracer.get_last_trace()
    assert [(s.span_id, s.sequence_id) for s in last] == sorted(
        [(s.span_id, s.sequence_id) for s in spans], key=lambda item: item[1]
    )


@pytest.mark.asyncio
async def test_sequence_ids_follow_start_order_not_end_order(store: LightningStore) -> None:
    tracer = OtelTracer(batch_size=1000, flush_interval=60)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        with otel().start_as_current_span("parent"):
            with otel().start_as_current_span("child1"):
                await asyncio.sleep(0.001)
            with otel().start_as_current_span("child2"):
                pass
    by_name = {s.name: s for s in await stored(store, rollout_id)}
    assert by_name["parent"].sequence_id < by_name["child1"].sequence_id < by_name["child2"].sequence_id
    assert by_name["child1"].parent_id == by_name["parent"].span_id


@pytest.mark.asyncio
async def test_spans_outside_a_trace_context_are_not_stored(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    with otel().start_as_current_span("before"):
        pass
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        with otel().start_as_current_span("inside"):
            pass
        # A plain thread does not inherit the context: its span belongs to no rollout.
        thread = threading.Thread(target=lambda: otel().start_span("stray").end())
        thread.start()
        thread.join()
    with otel().start_as_current_span("after"):
        pass
    await asyncio.sleep(0.3)  # give any (wrong) background write a chance
    assert [s.name for s in await stored(store, rollout_id)] == ["inside"]
    assert [s.name for s in tracer.get_last_trace()] == ["inside"]


@pytest.mark.asyncio
async def test_thread_with_an_explicit_parent_inherits_the_rollout(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        with otel().start_as_current_span("parent") as parent:
            parent_ctx = trace_api.set_span_in_context(parent)
            thread = threading.Thread(target=lambda: otel().start_span("child", context=parent_ctx).end())
            thread.start()
            thread.join()
    spans = {s.name: s for s in await stored(store, rollout_id)}
    assert set(spans) == {"parent", "child"}
    assert spans["child"].parent_id == spans["parent"].span_id


@pytest.mark.asyncio
async def test_trace_context_without_ids_keeps_spans_locally(store: LightningStore) -> None:
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    rollout_id, _ = await new_attempt(store)
    async with tracer.trace_context():
        with otel().start_as_current_span("a"):
            pass
        emit_reward(1.0)
    last = tracer.get_last_trace()
    assert [s.name for s in last] == ["a", "agentlightning.annotation"]
    assert {(s.rollout_id, s.attempt_id) for s in last} == {("rollout-dummy", "attempt-dummy")}
    assert [s.sequence_id for s in last] == [1, 2]
    assert await stored(store, rollout_id) == []


@pytest.mark.asyncio
async def test_nested_trace_contexts_write_to_their_own_rollouts(store: LightningStore) -> None:
    tracer = OtelTracer()
    outer_ids = await new_attempt(store)
    inner_ids = await new_attempt(store)
    async with tracer.trace_context(rollout_id=outer_ids[0], attempt_id=outer_ids[1], store=store):
        emit_reward(1.0)
        async with tracer.trace_context(rollout_id=inner_ids[0], attempt_id=inner_ids[1], store=store):
            emit_reward(2.0)
        assert [get_reward_value(s) for s in tracer.get_last_trace()] == [2.0]
        emit_reward(3.0)
    assert [get_reward_value(s) for s in await stored(store, outer_ids[0])] == [1.0, 3.0]
    assert [get_reward_value(s) for s in await stored(store, inner_ids[0])] == [2.0]


# -- many rollouts in one process ------------------------------------------------------------------

SPANS_PER_ROLLOUT = 4


def _child_span(owner: str, label: str) -> None:
    with otel().start_as_current_span(f"offloaded-{label}", attributes={"owner": owner}):
        time.sleep(random.random() * 0.002)


async def _rollout(
    tracer: OtelTracer, store: LightningStore, rollout_id: str, attempt_id: str, value: float
) -> List[Span]:
    async with tracer.trace_context(rollout_id, rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        for step in range(SPANS_PER_ROLLOUT):
            with otel().start_as_current_span(f"step-{step}", attributes={"owner": rollout_id}):
                await asyncio.sleep(random.random() * 0.005)
                if step == 1:
                    await asyncio.to_thread(_child_span, rollout_id, "to_thread")
                if step == 2:
                    ctx = contextvars.copy_context()
                    await asyncio.get_running_loop().run_in_executor(None, ctx.run, _child_span, rollout_id, "executor")
        emit_reward(value, attributes={"owner": rollout_id})
    return tracer.get_last_trace()


@pytest.mark.asyncio
async def test_fifty_concurrent_rollouts_never_mix_spans(store: LightningStore) -> None:
    # Small batches and a short age make background writes interleave with everything else.
    tracer = OtelTracer(batch_size=3, flush_interval=0.02)
    tracer.init_worker(0, store)
    ids = [await new_attempt(store) for _ in range(50)]
    values = {rollout_id: float(index) for index, (rollout_id, _) in enumerate(ids)}

    in_tasks, in_threads = ids[:40], ids[40:]
    thread_results: dict[str, List[Span]] = {}
    errors: list[BaseException] = []

    def thread_main(rollout_id: str, attempt_id: str) -> None:
        try:
            thread_results[rollout_id] = asyncio.run(
                _rollout(tracer, store, rollout_id, attempt_id, values[rollout_id])
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=pair) for pair in in_threads]
    for thread in threads:
        thread.start()
    task_results = await asyncio.gather(*(_rollout(tracer, store, r, a, values[r]) for r, a in in_tasks))

    def join_all() -> None:
        for thread in threads:
            thread.join()

    await asyncio.to_thread(join_all)
    assert errors == []

    last_traces = {rollout_id: spans for (rollout_id, _), spans in zip(in_tasks, task_results, strict=True)}
    last_traces.update(thread_results)
    expected_names = {f"step-{i}" for i in range(SPANS_PER_ROLLOUT)} | {
        "offloaded-to_thread",
        "offloaded-executor",
        "agentlightning.annotation",
    }
    for rollout_id, attempt_id in ids:
        spans = await stored(store, rollout_id)
        assert {s.name for s in spans} == expected_names, rollout_id
        assert len(spans) == len(expected_names)
        assert all(s.attributes.get("owner") == rollout_id for s in spans)
        assert all((s.rollout_id, s.attempt_id) == (rollout_id, attempt_id) for s in spans)
        assert sorted(s.sequence_id for s in spans) == list(range(1, len(spans) + 1))
        rewards = [get_reward_value(s) for s in spans if s.name == "agentlightning.annotation"]
        assert rewards == [values[rollout_id]]
        # Offloaded spans keep their OpenTelemetry parent.
        by_name = {s.name: s for s in spans}
        assert by_name["offloaded-to_thread"].parent_id == by_name["step-1"].span_id
        assert by_name["offloaded-executor"].parent_id == by_name["step-2"].span_id
        # get_last_trace in each task/thread returned that rollout's spans only.
        assert {s.span_id for s in last_traces[rollout_id]} == {s.span_id for s in spans}


# -- batching --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_full_buffers_are_written_before_the_context_exits(store: LightningStore) -> None:
    tracer = OtelTracer(batch_size=4, flush_interval=60)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        for index in range(10):
            tracer.create_span(f"s{index}")
        streamed = await wait_for_stored(store, rollout_id, 8)
        assert len(streamed) >= 8  # two full batches, streamed while the rollout still runs
    spans = await stored(store, rollout_id)
    assert [s.name for s in sorted(spans, key=lambda s: s.sequence_id)] == [f"s{i}" for i in range(10)]


@pytest.mark.asyncio
async def test_old_buffers_are_written_in_the_background(store: LightningStore) -> None:
    tracer = OtelTracer(batch_size=1000, flush_interval=0.1)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        tracer.create_span("heartbeat")
        assert [s.name for s in await wait_for_stored(store, rollout_id, 1)] == ["heartbeat"]
        # The first span moves the attempt to running: streaming doubles as a heartbeat.
        attempt = await store.get_latest_attempt(rollout_id)
        assert attempt is not None and attempt.status == "running"


class _FailingStore(InMemoryLightningStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures_left = failures
        self.calls = 0

    async def add_many_spans(self, spans: Sequence[Span]) -> List[Span]:
        self.calls += 1
        if self.failures_left != 0:
            self.failures_left -= 1
            raise RuntimeError("disk full")
        return await super().add_many_spans(spans)


@pytest.mark.asyncio
async def test_store_errors_are_logged_and_spans_kept(caplog: pytest.LogCaptureFixture) -> None:
    store = _FailingStore(failures=-1)  # always fails
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    with caplog.at_level(logging.ERROR, logger="agentlightning.tracer.otel"):
        async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
            tracer.create_span("a")
            emit_reward(0.5)
    assert "disk full" in caplog.text and "2 span(s)" in caplog.text
    last = tracer.get_last_trace()
    assert [s.name for s in last] == ["a", "agentlightning.annotation"]
    assert get_reward_value(last[1]) == 0.5
    assert await stored(store, rollout_id) == []


@pytest.mark.asyncio
async def test_failed_background_write_is_retried_at_exit() -> None:
    store = _FailingStore(failures=1)
    tracer = OtelTracer(batch_size=2, flush_interval=60)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        tracer.create_span("s0")
        tracer.create_span("s1")  # fills a batch: a background write that fails
        deadline = time.monotonic() + 5
        while store.calls == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert store.calls == 1
        tracer.create_span("s2")
    spans = sorted(await stored(store, rollout_id), key=lambda s: s.sequence_id)
    assert [s.name for s in spans] == ["s0", "s1", "s2"]
    assert len({s.sequence_id for s in spans}) == 3
    assert len(tracer.get_last_trace()) == 3


@pytest.mark.asyncio
async def test_background_writes_back_off_from_a_broken_store(caplog: pytest.LogCaptureFixture) -> None:
    store = _FailingStore(failures=-1)
    tracer = OtelTracer(batch_size=1, flush_interval=0.2)
    rollout_id, attempt_id = await new_attempt(store)
    with caplog.at_level(logging.ERROR, logger="agentlightning.tracer.otel"):
        async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
            tracer.create_span("s")
            await asyncio.sleep(1.0)
            background_calls = store.calls
    # Retried after 0.4 s, then 0.8 s later: not on every 0.1 s tick.
    assert 1 <= background_calls <= 3
    assert store.calls == background_calls + 1  # one last try at exit
    assert [s.name for s in tracer.get_last_trace()] == ["s"]


@pytest.mark.asyncio
async def test_cancelled_rollout_still_writes_its_spans(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    started = asyncio.Event()

    async def agent() -> None:
        async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
            tracer.create_span("before-cancel")
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(agent())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [s.name for s in await stored(store, rollout_id)] == ["before-cancel"]


@pytest.mark.asyncio
async def test_span_ending_after_the_context_is_still_written(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        late = otel().start_span("late")
        tracer.create_span("on-time")
    assert [s.name for s in await stored(store, rollout_id)] == ["on-time"]
    late.end()
    assert sorted(s.name for s in await wait_for_stored(store, rollout_id, 2)) == ["late", "on-time"]


def _traced_child_process(result: Any) -> None:
    async def main() -> int:
        store = InMemoryLightningStore()
        rollout_id, attempt_id = await new_attempt(store)
        tracer = OtelTracer(batch_size=1, flush_interval=0.05)
        async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
            tracer.create_span("in-child")
            # Needs a background flusher that works in the forked child.
            streamed = await wait_for_stored(store, rollout_id, 1, timeout=3)
        return len(streamed)

    result.put(asyncio.run(main()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.asyncio
async def test_tracing_works_in_a_forked_child(store: LightningStore) -> None:
    # Start the parent's flusher thread first: the child must not rely on it.
    tracer = OtelTracer(batch_size=1, flush_interval=0.05)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        tracer.create_span("in-parent")
        await wait_for_stored(store, rollout_id, 1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        process = ctx.Process(target=_traced_child_process, args=(queue,))
        process.start()
    await asyncio.to_thread(process.join, 20)
    assert process.exitcode == 0
    assert queue.get(timeout=1) == 1


# -- span helpers ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_create_span_and_operation_context_fields(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    when = time.time() - 100
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        core = tracer.create_span(
            "point", attributes={"k": {"nested": None}, "drop": None}, timestamp=when, status="OK"
        )
        with tracer.operation_context("op", attributes={"a": 1}, start_time=when, end_time=when + 5) as rec:
            rec.record_attributes({"b": [1, "x"]})
        with pytest.raises(KeyError), tracer.operation_context("failing") as failing:
            raise KeyError("missing")
    assert core.start_time == core.end_time == when
    assert core.attributes == {"k": '{"nested": null}'}
    assert core.status.status_code == "OK"
    recorded = rec.get_recorded_span()
    assert (recorded.start_time, recorded.end_time) == (when, when + 5)
    assert failing.get_recorded_span().status.status_code == "ERROR"

    spans = {s.name: s for s in await stored(store, rollout_id)}
    assert spans["point"].start_time == pytest.approx(when) and spans["point"].end_time == pytest.approx(when)
    assert spans["point"].status.status_code == "OK"
    assert spans["op"].start_time == pytest.approx(when) and spans["op"].end_time == pytest.approx(when + 5)
    assert spans["op"].attributes == {"a": 1, "b": '[1, "x"]'}
    assert spans["failing"].status.status_code == "ERROR"
    assert spans["failing"].attributes["exception.type"] == "KeyError"
    assert [e.name for e in spans["failing"].events] == ["exception"]


@pytest.mark.asyncio
async def test_dummy_tracer_keeps_spans_in_memory_only(store: LightningStore) -> None:
    tracer = DummyTracer()
    tracer.init_worker(0, store)
    rollout_id, attempt_id = await new_attempt(store)
    outside = tracer.create_span("outside", attributes={"x": 1})
    assert outside.name == "outside" and outside.start_time == outside.end_time
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id):
        tracer.create_span("inside", status="OK")
        with pytest.raises(ValueError), tracer.operation_context("op", attributes={"a": 1}) as rec:
            rec.record_attributes({"b": 2})
            raise ValueError("bad")
    op = rec.get_recorded_span()
    assert op.status.status_code == "ERROR" and op.attributes["a"] == 1 and op.attributes["b"] == 2
    last = tracer.get_last_trace()
    assert [s.name for s in last] == ["inside", "op"]
    assert {s.rollout_id for s in last} == {rollout_id}
    assert await stored(store, rollout_id) == []


# -- providers -------------------------------------------------------------------------------------


def _our_processors(provider: TracerProvider) -> list[Any]:
    return [p for p in provider._active_span_processor._span_processors if isinstance(p, LightningSpanProcessor)]


@pytest.mark.asyncio
async def test_existing_user_provider_is_kept(fresh_global_provider: None, store: LightningStore) -> None:
    exporter = InMemorySpanExporter()
    user_provider = TracerProvider()
    user_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_api.set_tracer_provider(user_provider)

    first, second = OtelTracer(), OtelTracer()
    first.init_worker(0, store)
    second.init_worker(1, store)
    assert trace_api.get_tracer_provider() is user_provider
    assert first.tracer_provider is user_provider and second.tracer_provider is user_provider
    assert len(_our_processors(user_provider)) == 1

    rollout_id, attempt_id = await new_attempt(store)
    async with second.trace_context(rollout_id=rollout_id, attempt_id=attempt_id):
        with trace_api.get_tracer("some.library").start_as_current_span("library-call"):
            emit_reward(0.3)
    exported = sorted(s.name for s in exporter.get_finished_spans())
    assert exported == ["agentlightning.annotation", "library-call"]
    assert sorted(s.name for s in await stored(store, rollout_id)) == exported
    assert len(second.get_last_trace()) == 2  # one processor: no duplicates


def test_a_provider_is_created_when_there_is_none(fresh_global_provider: None) -> None:
    assert not isinstance(trace_api.get_tracer_provider(), TracerProvider)
    tracer = OtelTracer()
    tracer.init()
    provider = trace_api.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert tracer.tracer_provider is provider
    assert len(_our_processors(provider)) == 1
    OtelTracer().init()
    assert len(_our_processors(provider)) == 1


def test_configured_span_exporters_are_attached(
    fresh_global_provider: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGL_SPAN_EXPORTERS", "console, no-such-exporter")
    with caplog.at_level(logging.WARNING, logger="agentlightning.tracer.otel"):
        tracer = OtelTracer()
        tracer.init()
    processors = tracer.tracer_provider._active_span_processor._span_processors
    assert len(processors) == 2  # ours + the console exporter's; the unknown name is skipped
    assert "no-such-exporter" in caplog.text


# -- compatibility ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agentops_tracer_is_a_deprecated_otel_tracer(store: LightningStore) -> None:
    from agentlightning.tracer.agentops import AgentOpsTracer as FromModule

    assert FromModule is AgentOpsTracer
    with pytest.warns(DeprecationWarning, match="AgentOps is not used"):
        tracer = AgentOpsTracer(agentops_managed=True, instrument_managed=False, daemon=False)
    assert isinstance(tracer, OtelTracer)
    rollout_id, attempt_id = await new_attempt(store)
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        emit_reward(1.0)
    assert [get_reward_value(s) for s in await stored(store, rollout_id)] == [1.0]


def test_tracer_constructor_validation() -> None:
    with pytest.raises(ValueError):
        OtelTracer(batch_size=0)
    with pytest.raises(ValueError):
        OtelTracer(flush_interval=0)


def test_deprecated_trace_run_and_lifespan() -> None:
    tracer = DummyTracer()

    def work(x: int) -> int:
        tracer.create_span("work")
        return x * 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert tracer.trace_run(work, 21) == 42
    assert [s.name for s in tracer.get_last_trace()] == ["work"]
    with tracer.lifespan() as same:
        assert same is tracer and tracer.worker_id == 0


def test_tracer_package_exports() -> None:
    import agentlightning.tracer as package

    assert set(package.__all__) >= {
        "Tracer",
        "OtelTracer",
        "AgentOpsTracer",
        "DummyTracer",
        "get_active_tracer",
        "set_active_tracer",
        "clear_active_tracer",
    }
