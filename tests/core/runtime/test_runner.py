"""LitAgentRunner against real stores (every backend) and the real OtelTracer."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runtime_helpers import eventually, make_runner, running, wait_finished

import agentlightning as agl
from agentlightning.emitter import emit_message, emit_reward, find_final_reward, find_reward_spans
from agentlightning.hookspecs import hookimpl
from agentlightning.litagent import LitAgent, rollout
from agentlightning.plugins import get_plugin_manager
from agentlightning.runner import LitAgentRunner
from agentlightning.store.base import LightningStore
from agentlightning.tracer import OtelTracer, get_active_tracer
from agentlightning.types import (
    LLM,
    Hook,
    NamedResources,
    PromptTemplate,
    ProxyLLM,
    Rollout,
    RolloutConfig,
    Span,
)

# -- helpers -------------------------------------------------------------------------------------


class ReturnValue(LitAgent[Any]):
    """Sync agent returning whatever ``make(task)`` builds."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> Any:
        return self.make(task)


class BlockForever(LitAgent[Any]):
    """Async agent that waits until cancelled, recording start and cancellation."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.cancelled_at: Optional[float] = None

    async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> Any:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled_at = time.monotonic()
            self.cancelled.set()
            raise


async def spans_of(store: LightningStore, rollout_id: str, attempt_id: Optional[str] = "latest") -> List[Span]:
    return list(await store.query_spans(rollout_id, attempt_id))


async def run_one(
    store: LightningStore, tracer: OtelTracer, agent: LitAgent[Any], task: Any = "task", **rollout_options: Any
) -> Tuple[Rollout, List[Span]]:
    """Enqueue one rollout, run it with a fresh runner, return the finished rollout and its spans."""
    queued = await store.enqueue_rollout(task, **rollout_options)
    async with running(make_runner(tracer), agent, store):
        await wait_finished(store, [queued.rollout_id])
    finished = await store.get_rollout_by_id(queued.rollout_id)
    assert finished is not None
    return finished, await spans_of(store, queued.rollout_id)


class Listener:
    """A plugin recording the rollout notifications it receives."""

    def __init__(self) -> None:
        self.events: List[Tuple[Any, ...]] = []

    @hookimpl
    def agl_on_rollout_start(self, rollout: Rollout, attempt: Any, worker_id: Optional[str]) -> None:
        self.events.append(("start", rollout.rollout_id, attempt.attempt_id, worker_id))

    @hookimpl
    def agl_on_rollout_end(
        self, rollout: Rollout, attempt: Any, worker_id: Optional[str], status: str, error: Optional[BaseException]
    ) -> None:
        self.events.append(("end", rollout.rollout_id, attempt.attempt_id, worker_id, status, error))


@pytest.fixture
def listener() -> Any:
    manager = get_plugin_manager()
    plugin = Listener()
    manager.register(plugin)
    yield plugin
    manager.unregister(plugin)


# -- many rollouts at once -------------------------------------------------------------------------


async def test_async_agents_run_concurrently_as_tasks(store: LightningStore, tracer: OtelTracer) -> None:
    n = 8
    inside = 0
    all_inside = asyncio.Event()

    class Barrier(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            nonlocal inside
            inside += 1
            if inside == n:
                all_inside.set()
            # Only releases when all n agents are inside at the same time.
            await asyncio.wait_for(all_inside.wait(), 5)
            return float(task)

    queued = [await store.enqueue_rollout(i) for i in range(n)]
    async with running(make_runner(tracer, concurrency=n), Barrier(), store):
        finished = await wait_finished(store, [r.rollout_id for r in queued])
    assert {r.status for r in finished} == {"succeeded"}
    for r in queued:
        assert find_final_reward(await spans_of(store, r.rollout_id)) == float(r.input)


async def test_sync_agents_run_concurrently_in_threads(store: LightningStore, tracer: OtelTracer) -> None:
    n = 8
    barrier = threading.Barrier(n, timeout=5)
    threads: set[int] = set()

    class Blocking(LitAgent[Any]):
        def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> None:
            threads.add(threading.get_ident())
            barrier.wait()  # raises BrokenBarrierError unless all n run at once
            emit_reward(1.0)  # the trace context reached the thread

    queued = [await store.enqueue_rollout(i) for i in range(n)]
    async with running(make_runner(tracer, concurrency=n), Blocking(), store):
        finished = await wait_finished(store, [r.rollout_id for r in queued])
    errors = [(await store.get_latest_attempt(r.rollout_id)).metadata for r in finished]  # type: ignore[union-attr]
    assert {r.status for r in finished} == {"succeeded"}, errors
    assert len(threads) == n
    for r in queued:
        assert find_final_reward(await spans_of(store, r.rollout_id)) == 1.0


async def test_concurrency_bounds_rollouts_in_flight(store: LightningStore, tracer: OtelTracer) -> None:
    inside = 0
    peak = 0
    release = asyncio.Event()

    class Counting(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            await release.wait()
            inside -= 1
            return 1.0

    queued = [await store.enqueue_rollout(i) for i in range(6)]
    async with running(make_runner(tracer, concurrency=3), Counting(), store):

        async def three_inside() -> bool:
            return inside == 3

        await eventually(three_inside, what="3 agents running")
        # The others stay queued while 3 run.
        assert len(await store.query_rollouts(status_in=["queuing"])) == 3
        release.set()
        await wait_finished(store, [r.rollout_id for r in queued])
    assert peak == 3


# -- what an agent returns ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(0.75, 0.75), (2, 2.0), (True, 1.0)])
async def test_returned_number_becomes_the_final_reward_span(
    store: LightningStore, tracer: OtelTracer, value: Any, expected: float
) -> None:
    finished, spans = await run_one(store, tracer, ReturnValue(lambda task: value))
    assert finished.status == "succeeded"
    assert find_final_reward(spans) == expected
    assert len(find_reward_spans(spans)) == 1
    reward_span = find_reward_spans(spans)[0]
    assert reward_span.attempt_id == finished.attempt.attempt_id  # type: ignore[attr-defined]
    assert reward_span.sequence_id == max(s.sequence_id for s in spans)


async def test_none_with_emit_reward_inside(store: LightningStore, tracer: OtelTracer) -> None:
    @rollout
    async def agent(task: Any) -> None:
        emit_message("thinking")
        emit_reward(0.25)

    finished, spans = await run_one(store, tracer, agent)
    assert finished.status == "succeeded"
    assert find_final_reward(spans) == 0.25
    assert len(find_reward_spans(spans)) == 1
    assert {"agentlightning.message", "agentlightning.annotation"} <= {s.name for s in spans}


async def test_sync_agent_emits_inside_its_thread(store: LightningStore, tracer: OtelTracer) -> None:
    @rollout
    def agent(task: Any) -> None:
        assert get_active_tracer() is tracer
        emit_reward(0.5)

    finished, spans = await run_one(store, tracer, agent)
    assert finished.status == "succeeded"
    assert find_final_reward(spans) == 0.5


async def test_returned_list_of_span_core_fields_is_stored(store: LightningStore, tracer: OtelTracer) -> None:
    finished, spans = await run_one(
        store, tracer, ReturnValue(lambda task: [emit_reward(0.1, propagate=False), emit_reward(0.9, propagate=False)])
    )
    assert finished.status == "succeeded"
    rewards = [s for s in spans if s.name == "agentlightning.annotation"]
    assert len(rewards) == 2
    assert len({s.sequence_id for s in rewards}) == 2  # each got its own sequence id
    assert find_final_reward(spans) == 0.9


async def test_returned_list_of_readable_spans_is_stored(store: LightningStore, tracer: OtelTracer) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # a provider of the agent's own, unknown to the tracer
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def make(task: Any) -> list:
        with provider.get_tracer("agent").start_as_current_span("own-span") as span:
            span.set_attribute("answer", 42)
        return list(exporter.get_finished_spans())

    finished, spans = await run_one(store, tracer, ReturnValue(make))
    assert finished.status == "succeeded"
    (own,) = [s for s in spans if s.name == "own-span"]
    assert own.attributes["answer"] == 42
    assert own.rollout_id == finished.rollout_id


async def test_returned_list_of_spans_is_stored(store: LightningStore, tracer: OtelTracer) -> None:
    def make(task: Any) -> list:
        ro = current["rollout"]
        core = emit_reward(0.6, propagate=False)
        return [Span.from_core_fields(core, rollout_id=ro.rollout_id, attempt_id=ro.attempt.attempt_id, sequence_id=1)]

    current: Dict[str, Any] = {}

    class Agent(LitAgent[Any]):
        def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> Any:
            current["rollout"] = rollout
            return make(task)

    finished, spans = await run_one(store, tracer, Agent())
    assert finished.status == "succeeded"
    assert find_final_reward(spans) == 0.6


async def test_unsupported_return_value_fails_the_attempt(store: LightningStore, tracer: OtelTracer) -> None:
    finished, _ = await run_one(store, tracer, ReturnValue(lambda task: "not a reward"))
    assert finished.status == "failed"
    attempt = await store.get_latest_attempt(finished.rollout_id)
    assert attempt is not None and attempt.status == "failed"
    assert attempt.metadata is not None and attempt.metadata["error"]["type"] == "TypeError"


# -- failures and retries ---------------------------------------------------------------------------


async def test_exception_fails_attempt_with_error_metadata(store: LightningStore, tracer: OtelTracer) -> None:
    def explode(task: Any) -> float:
        raise ValueError(f"bad input {task}")

    finished, _ = await run_one(store, tracer, ReturnValue(explode), "x")
    assert finished.status == "failed"
    attempts = list(await store.query_attempts(finished.rollout_id))
    assert len(attempts) == 1
    (attempt,) = attempts
    assert attempt.status == "failed"
    assert attempt.end_time is not None
    error = attempt.metadata["error"]  # type: ignore[index]
    assert error["type"] == "ValueError"
    assert error["message"] == "bad input x"
    assert "Traceback" in error["traceback"] and "explode" in error["traceback"]


async def test_failed_attempt_is_requeued_and_retried(store: LightningStore, tracer: OtelTracer) -> None:
    calls: List[str] = []

    class FlakyOnce(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            calls.append(rollout.attempt.attempt_id)  # type: ignore[attr-defined]
            if len(calls) == 1:
                raise RuntimeError("first try fails")
            return 1.0

    queued = await store.enqueue_rollout("t", config=RolloutConfig(max_attempts=2, retry_condition=["failed"]))
    async with running(make_runner(tracer), FlakyOnce(), store):
        (finished,) = await wait_finished(store, [queued.rollout_id])
    assert finished.status == "succeeded"
    attempts = list(await store.query_attempts(queued.rollout_id))
    assert [a.status for a in attempts] == ["failed", "succeeded"]
    assert [a.attempt_id for a in attempts] == calls
    assert attempts[0].metadata["error"]["message"] == "first try fails"  # type: ignore[index]
    assert find_final_reward(await spans_of(store, queued.rollout_id)) == 1.0


async def test_retries_stop_at_max_attempts(store: LightningStore, tracer: OtelTracer) -> None:
    def explode(task: Any) -> float:
        raise RuntimeError("always")

    finished, _ = await run_one(
        store, tracer, ReturnValue(explode), config=RolloutConfig(max_attempts=3, retry_condition=["failed"])
    )
    assert finished.status == "failed"
    assert [a.status for a in await store.query_attempts(finished.rollout_id)] == ["failed"] * 3


# -- cancellation, timeouts, heartbeats ------------------------------------------------------------


async def test_cancel_rollout_cancels_the_running_agent_promptly(store: LightningStore, tracer: OtelTracer) -> None:
    agent = BlockForever()
    queued = await store.enqueue_rollout("t")
    # Heartbeats every 30 s: only the store's cancellation can wake the runner this fast.
    async with running(make_runner(tracer, heartbeat_interval=30.0), agent, store):
        await asyncio.wait_for(agent.started.wait(), 5)
        cancelled_at = time.monotonic()
        await store.cancel_rollout(queued.rollout_id)
        await asyncio.wait_for(agent.cancelled.wait(), 2)
        assert agent.cancelled_at is not None and agent.cancelled_at - cancelled_at < 2.0

        async def attempt_ended() -> Any:
            attempt = await store.get_latest_attempt(queued.rollout_id)
            return attempt if attempt is not None and attempt.status == "failed" else None

        attempt = await eventually(attempt_ended, what="the attempt to be marked failed")
    assert attempt.metadata["error"]["type"] == "RolloutCancelled"
    rollout_now = await store.get_rollout_by_id(queued.rollout_id)
    assert rollout_now is not None and rollout_now.status == "cancelled"


async def test_timeout_seconds_ends_attempt_as_timeout(
    store: LightningStore, tracer: OtelTracer, listener: Listener
) -> None:
    agent = BlockForever()
    queued = await store.enqueue_rollout("t", config=RolloutConfig(timeout_seconds=0.3))
    started = time.monotonic()
    async with running(make_runner(tracer, heartbeat_interval=30.0), agent, store):
        await asyncio.wait_for(agent.cancelled.wait(), 5)
        (finished,) = await wait_finished(store, [queued.rollout_id])

        async def notified() -> bool:
            return any(e[0] == "end" for e in listener.events)

        await eventually(notified, what="agl_on_rollout_end")
    assert agent.cancelled_at is not None and agent.cancelled_at - started < 3.0
    assert finished.status == "failed"
    (attempt,) = list(await store.query_attempts(queued.rollout_id))
    assert attempt.status == "timeout"
    assert attempt.end_time is not None
    assert attempt.metadata is not None and attempt.metadata["error"]["type"] == "TimeoutError"
    ends = [e for e in listener.events if e[0] == "end"]
    assert len(ends) == 1 and ends[0][4] == "timeout"


async def test_store_timing_out_the_attempt_stops_the_agent(
    store: LightningStore, tracer: OtelTracer, listener: Listener
) -> None:
    """The store's verdict (here set by hand, as its watchdog would) reaches the runner and stands."""
    agent = BlockForever()
    queued = await store.enqueue_rollout("t")
    async with running(make_runner(tracer, heartbeat_interval=30.0), agent, store):
        await asyncio.wait_for(agent.started.wait(), 5)
        attempt = await store.get_latest_attempt(queued.rollout_id)
        assert attempt is not None
        await store.update_attempt(queued.rollout_id, attempt.attempt_id, status="timeout")
        await asyncio.wait_for(agent.cancelled.wait(), 2)

        async def notified() -> bool:
            return any(e[0] == "end" for e in listener.events)

        await eventually(notified, what="agl_on_rollout_end")
    attempt = await store.get_latest_attempt(queued.rollout_id)
    assert attempt is not None and attempt.status == "timeout"
    assert attempt.metadata is not None and attempt.metadata["error"]["type"] == "TimeoutError"
    assert [e[4] for e in listener.events if e[0] == "end"] == ["timeout"]


async def test_cancelling_a_sync_agent_drops_its_late_result(store: LightningStore, tracer: OtelTracer) -> None:
    entered, release = threading.Event(), threading.Event()

    class BlockingSync(LitAgent[Any]):
        def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            entered.set()
            release.wait(10)
            return 1.0

    queued = await store.enqueue_rollout("t")
    try:
        async with running(make_runner(tracer), BlockingSync(), store):
            await asyncio.to_thread(entered.wait, 5)
            cancelled_at = time.monotonic()
            await store.cancel_rollout(queued.rollout_id)

            async def attempt_failed() -> bool:
                attempt = await store.get_latest_attempt(queued.rollout_id)
                return attempt is not None and attempt.status == "failed"

            # The thread cannot be interrupted, but the attempt ends at once.
            await eventually(attempt_failed, timeout=2.0, what="the attempt to end")
            assert time.monotonic() - cancelled_at < 2.0
            release.set()
    finally:
        release.set()
    rollout_now = await store.get_rollout_by_id(queued.rollout_id)
    assert rollout_now is not None and rollout_now.status == "cancelled"
    assert find_final_reward(await spans_of(store, queued.rollout_id)) is None  # the late 1.0 was dropped


async def test_timed_out_attempt_is_retried_when_configured(store: LightningStore, tracer: OtelTracer) -> None:
    calls = 0

    class SlowOnce(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.Event().wait()
            return 1.0

    queued = await store.enqueue_rollout(
        "t", config=RolloutConfig(timeout_seconds=0.3, max_attempts=2, retry_condition=["timeout"])
    )
    async with running(make_runner(tracer), SlowOnce(), store):
        (finished,) = await wait_finished(store, [queued.rollout_id])
    assert finished.status == "succeeded"
    assert [a.status for a in await store.query_attempts(queued.rollout_id)] == ["timeout", "succeeded"]


async def test_heartbeats_update_the_attempt_while_the_agent_runs(store: LightningStore, tracer: OtelTracer) -> None:
    release = asyncio.Event()

    class Long(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            await release.wait()
            return 1.0

    queued = await store.enqueue_rollout("t")
    seen: List[float] = []
    async with running(make_runner(tracer, heartbeat_interval=0.05), Long(), store):

        async def beats() -> bool:
            attempt = await store.get_latest_attempt(queued.rollout_id)
            if attempt is not None and attempt.last_heartbeat_time is not None:
                if not seen or attempt.last_heartbeat_time > seen[-1]:
                    seen.append(attempt.last_heartbeat_time)
                assert attempt.status == "running"
            return len(seen) >= 3

        await eventually(beats, what="three heartbeats")
        release.set()
        (finished,) = await wait_finished(store, [queued.rollout_id])
    assert finished.status == "succeeded"
    assert seen == sorted(seen)


async def test_heartbeats_keep_up_with_unresponsive_seconds(store: LightningStore, tracer: OtelTracer) -> None:
    """A quiet agent is not declared unresponsive because the runner's own interval is longer."""
    release = asyncio.Event()

    class Quiet(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            await release.wait()
            return 1.0

    queued = await store.enqueue_rollout("t", config=RolloutConfig(unresponsive_seconds=0.3))
    async with running(make_runner(tracer, heartbeat_interval=30.0), Quiet(), store):
        attempt = await eventually(
            lambda: store.get_latest_attempt(queued.rollout_id), what="the rollout to be dequeued"
        )
        # Watch the attempt for well over unresponsive_seconds.
        deadline = time.time() + 0.8
        while time.time() < deadline:
            attempt = await store.get_latest_attempt(queued.rollout_id)
            assert attempt is not None and attempt.status in ("preparing", "running"), attempt
            await asyncio.sleep(0.05)
        release.set()
        (finished,) = await wait_finished(store, [queued.rollout_id])
    assert finished.status == "succeeded"


# -- hooks and plugin notifications ---------------------------------------------------------------


class RecordingHook(Hook):
    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[str, str]] = []
        self.end_spans: List[Span] = []
        self.tracer_during_trace: Any = None

    async def on_rollout_start(self, *, agent: Any, runner: Any, rollout: Rollout) -> None:
        self.calls.append(("on_rollout_start", rollout.rollout_id))

    async def on_trace_start(self, *, agent: Any, runner: Any, tracer: Any, rollout: Rollout) -> None:
        self.tracer_during_trace = get_active_tracer()
        self.calls.append(("on_trace_start", rollout.rollout_id))

    async def on_trace_end(self, *, agent: Any, runner: Any, tracer: Any, rollout: Rollout) -> None:
        self.calls.append(("on_trace_end", rollout.rollout_id))

    async def on_rollout_end(self, *, agent: Any, runner: Any, rollout: Rollout, spans: List[Span]) -> None:
        self.end_spans = list(spans)
        self.calls.append(("on_rollout_end", rollout.rollout_id))


class RaisingHook(Hook):
    async def on_rollout_start(self, **kwargs: Any) -> None:
        raise RuntimeError("hook bug")

    async def on_trace_start(self, **kwargs: Any) -> None:
        raise RuntimeError("hook bug")

    async def on_trace_end(self, **kwargs: Any) -> None:
        raise RuntimeError("hook bug")

    async def on_rollout_end(self, **kwargs: Any) -> None:
        raise RuntimeError("hook bug")


async def test_hooks_called_once_each_in_order(store: LightningStore, tracer: OtelTracer) -> None:
    recorder = RecordingHook()
    queued = await store.enqueue_rollout("t")
    async with running(make_runner(tracer), ReturnValue(lambda t: 0.5), store, hooks=[RaisingHook(), recorder]):
        (finished,) = await wait_finished(store, [queued.rollout_id])
    assert finished.status == "succeeded"  # the raising hook did not fail the rollout
    rid = queued.rollout_id
    assert recorder.calls == [
        ("on_rollout_start", rid),
        ("on_trace_start", rid),
        ("on_trace_end", rid),
        ("on_rollout_end", rid),
    ]
    assert recorder.tracer_during_trace is tracer
    assert find_final_reward(recorder.end_spans) == 0.5


async def test_hooks_see_the_end_of_a_failed_rollout(store: LightningStore, tracer: OtelTracer) -> None:
    recorder = RecordingHook()

    def explode(task: Any) -> float:
        raise RuntimeError("boom")

    queued = await store.enqueue_rollout("t")
    async with running(make_runner(tracer), ReturnValue(explode), store, hooks=[recorder]):
        await wait_finished(store, [queued.rollout_id])
    # on_trace_end pairs with on_trace_start even when the agent raised in between.
    assert [name for name, _ in recorder.calls] == [
        "on_rollout_start",
        "on_trace_start",
        "on_trace_end",
        "on_rollout_end",
    ]


async def test_plugin_notified_once_per_attempt_with_final_status(
    store: LightningStore, tracer: OtelTracer, listener: Listener
) -> None:
    outcomes = {"ok": 1.0, "bad": None}

    class Agent(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> Any:
            if outcomes[task] is None:
                raise KeyError("no reward")
            return outcomes[task]

    runner = make_runner(tracer)
    ok = await store.enqueue_rollout("ok")
    bad = await store.enqueue_rollout("bad")
    async with running(runner, Agent(), store):
        await wait_finished(store, [ok.rollout_id, bad.rollout_id])

        async def both_ended() -> bool:
            return sum(e[0] == "end" for e in listener.events) == 2

        await eventually(both_ended, what="two end notifications")
    by_rollout: Dict[str, List[Tuple[Any, ...]]] = {}
    for event in listener.events:
        by_rollout.setdefault(event[1], []).append(event)
    ok_attempt = await store.get_latest_attempt(ok.rollout_id)
    bad_attempt = await store.get_latest_attempt(bad.rollout_id)
    assert ok_attempt is not None and bad_attempt is not None
    assert [e[0] for e in by_rollout[ok.rollout_id]] == ["start", "end"]
    assert by_rollout[ok.rollout_id][0] == ("start", ok.rollout_id, ok_attempt.attempt_id, runner.worker_name)
    assert by_rollout[ok.rollout_id][1][2:5] == (ok_attempt.attempt_id, runner.worker_name, "succeeded")
    assert by_rollout[ok.rollout_id][1][5] is None
    assert [e[0] for e in by_rollout[bad.rollout_id]] == ["start", "end"]
    assert by_rollout[bad.rollout_id][1][4] == "failed"
    assert isinstance(by_rollout[bad.rollout_id][1][5], KeyError)


async def test_plugin_notified_for_every_retry(store: LightningStore, tracer: OtelTracer, listener: Listener) -> None:
    def explode(task: Any) -> float:
        raise RuntimeError("again")

    finished, _ = await run_one(
        store, tracer, ReturnValue(explode), config=RolloutConfig(max_attempts=2, retry_condition=["failed"])
    )
    attempts = [a.attempt_id for a in await store.query_attempts(finished.rollout_id)]
    assert [(e[0], e[2]) for e in listener.events] == [
        ("start", attempts[0]),
        ("end", attempts[0]),
        ("start", attempts[1]),
        ("end", attempts[1]),
    ]
    assert [e[4] for e in listener.events if e[0] == "end"] == ["failed", "failed"]


async def test_a_raising_plugin_does_not_fail_the_rollout(store: LightningStore, tracer: OtelTracer) -> None:
    class Broken:
        @hookimpl
        def agl_on_rollout_start(self, rollout: Rollout, attempt: Any, worker_id: Optional[str]) -> None:
            raise RuntimeError("plugin bug")

        @hookimpl
        def agl_on_rollout_end(
            self, rollout: Rollout, attempt: Any, worker_id: Optional[str], status: str, error: Any
        ) -> None:
            raise RuntimeError("plugin bug")

    manager = get_plugin_manager()
    broken = Broken()
    manager.register(broken)
    try:
        finished, spans = await run_one(store, tracer, ReturnValue(lambda t: 1.0))
    finally:
        manager.unregister(broken)
    assert finished.status == "succeeded"
    assert find_final_reward(spans) == 1.0


# -- the loop: max_rollouts, stopping, workers, step ---------------------------------------------------


async def test_max_rollouts_is_respected(store: LightningStore, tracer: OtelTracer) -> None:
    queued = [await store.enqueue_rollout(i) for i in range(5)]
    runner = make_runner(tracer, max_rollouts=2, concurrency=2)
    runner.init(ReturnValue(lambda t: 1.0))
    runner.init_worker(0, store)
    try:
        await asyncio.wait_for(runner.iter(), 10)  # returns on its own, no stop event
    finally:
        runner.teardown_worker(0)
        runner.teardown()
    statuses = [(await store.get_rollout_by_id(r.rollout_id)).status for r in queued]  # type: ignore[union-attr]
    assert statuses == ["succeeded", "succeeded", "queuing", "queuing", "queuing"]


async def test_iter_stops_on_event_and_leaves_nothing_running(store: LightningStore, tracer: OtelTracer) -> None:
    agent = BlockForever()
    queued = await store.enqueue_rollout("t")
    runner = make_runner(tracer, graceful_timeout=0.2)
    async with running(runner, agent, store) as task:
        await asyncio.wait_for(agent.started.wait(), 5)
        task.stop_event.set()  # type: ignore[attr-defined]
        await asyncio.wait_for(asyncio.shield(task), 5)
    assert agent.cancelled.is_set()
    attempt = await store.get_latest_attempt(queued.rollout_id)
    assert attempt is not None and attempt.status == "failed"
    assert attempt.end_time is not None
    rollout_now = await store.get_rollout_by_id(queued.rollout_id)
    assert rollout_now is not None and rollout_now.status == "failed"


async def test_iter_lets_in_flight_rollouts_finish_within_graceful_timeout(
    store: LightningStore, tracer: OtelTracer
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    class Finishing(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            started.set()
            await release.wait()
            return 1.0

    queued = await store.enqueue_rollout("t")
    async with running(make_runner(tracer, graceful_timeout=5.0), Finishing(), store) as task:
        await asyncio.wait_for(started.wait(), 5)
        task.stop_event.set()  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert not task.done()  # draining, not cancelling
        release.set()
        await asyncio.wait_for(asyncio.shield(task), 5)
    rollout_now = await store.get_rollout_by_id(queued.rollout_id)
    assert rollout_now is not None and rollout_now.status == "succeeded"


async def test_worker_ids_are_unique_and_visible_in_the_store(store: LightningStore, tracer: OtelTracer) -> None:
    first, second = make_runner(tracer), make_runner(tracer)
    agent = ReturnValue(lambda t: 1.0)
    async with running(first, agent, store, worker_id=0), running(second, agent, store, worker_id=0):

        async def both_visible() -> bool:
            ids = {w.worker_id for w in await store.query_workers()}
            return {first.worker_name, second.worker_name} <= ids

        await eventually(both_visible, what="both workers in query_workers")
        queued = await store.enqueue_rollout("t")
        await wait_finished(store, [queued.rollout_id])
    assert first.worker_name != second.worker_name
    attempt = await store.get_latest_attempt(queued.rollout_id)
    assert attempt is not None and attempt.worker_id in (first.worker_name, second.worker_name)
    worker = await store.get_worker_by_id(attempt.worker_id)
    assert worker is not None and worker.last_heartbeat_time is not None


async def test_explicit_worker_id_is_used(store: LightningStore, tracer: OtelTracer) -> None:
    runner = make_runner(tracer, worker_id="runner-on-host-a")
    queued = await store.enqueue_rollout("t")
    async with running(runner, ReturnValue(lambda t: 1.0), store):
        await wait_finished(store, [queued.rollout_id])
    assert runner.worker_name == "runner-on-host-a"
    attempt = await store.get_latest_attempt(queued.rollout_id)
    assert attempt is not None and attempt.worker_id == "runner-on-host-a"


async def test_step_bypasses_the_queue(store: LightningStore, tracer: OtelTracer) -> None:
    seen: List[Tuple[Any, NamedResources]] = []

    class Agent(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            seen.append((task, resources))
            return 0.5

    queued = await store.enqueue_rollout("queued task")
    runner = make_runner(tracer)
    prompt = PromptTemplate(template="hi {x}", engine="f-string")
    with runner.run_context(agent=Agent(), store=store):
        result = await runner.step("direct task", resources={"prompt": prompt}, mode="train")
    assert result.status == "succeeded"
    assert result.input == "direct task" and result.mode == "train"
    assert seen == [("direct task", {"prompt": prompt})]
    assert find_final_reward(await spans_of(store, result.rollout_id)) == 0.5
    still = await store.get_rollout_by_id(queued.rollout_id)
    assert still is not None and still.status == "queuing"


async def test_step_raises_the_agent_error(store: LightningStore, tracer: OtelTracer) -> None:
    def explode(task: Any) -> float:
        raise ValueError("step failure")

    runner = make_runner(tracer)
    with runner.run_context(agent=ReturnValue(explode), store=store), pytest.raises(ValueError, match="step failure"):
        await runner.step("t")
    (failed,) = list(await store.query_rollouts())
    assert failed.status == "failed"


# -- resources and modes ----------------------------------------------------------------------------


async def test_agent_gets_the_resources_its_rollout_is_pinned_to(store: LightningStore, tracer: OtelTracer) -> None:
    seen: List[str] = []

    @rollout
    def agent(task: Any, prompt_template: PromptTemplate) -> float:
        seen.append(prompt_template.template)
        return 1.0

    old = await store.add_resources({"p": PromptTemplate(template="old", engine="f-string")})
    pinned = await store.enqueue_rollout("a", resources_id=old.resources_id)
    await store.add_resources({"p": PromptTemplate(template="new", engine="f-string")})
    latest = await store.enqueue_rollout("b")  # pins the latest at enqueue time
    async with running(make_runner(tracer), agent, store):
        await wait_finished(store, [pinned.rollout_id, latest.rollout_id])
    assert seen == ["old", "new"]


async def test_missing_resources_fail_the_attempt(store: LightningStore, tracer: OtelTracer) -> None:
    finished, _ = await run_one(store, tracer, ReturnValue(lambda t: 1.0), resources_id="rs-does-not-exist")
    assert finished.status == "failed"
    attempt = await store.get_latest_attempt(finished.rollout_id)
    assert attempt is not None and "rs-does-not-exist" in attempt.metadata["error"]["message"]  # type: ignore[index]


async def test_proxy_llm_reaches_the_agent_as_its_attempt_route(store: LightningStore, tracer: OtelTracer) -> None:
    endpoints: List[Tuple[str, str, str]] = []

    @rollout
    async def agent(task: Any, llm: LLM, rollout: Rollout) -> float:
        endpoints.append((llm.endpoint, rollout.rollout_id, rollout.attempt.attempt_id))  # type: ignore[attr-defined]
        assert type(llm) is LLM
        return 1.0

    await store.add_resources({"main": ProxyLLM(endpoint="http://proxy:4000/v1", model="m")})
    finished, _ = await run_one(store, tracer, agent)
    assert finished.status == "succeeded"
    ((endpoint, rid, aid),) = endpoints
    assert endpoint == f"http://proxy:4000/rollout/{rid}/attempt/{aid}/v1"


@pytest.mark.parametrize("mode, expected", [("train", "training"), ("val", "validation"), (None, "validation")])
async def test_mode_selects_training_or_validation_rollout(
    store: LightningStore, tracer: OtelTracer, mode: Any, expected: str
) -> None:
    called: List[str] = []

    class Agent(LitAgent[Any]):
        async def training_rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            called.append("training")
            return 1.0

        async def validation_rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            called.append("validation")
            return 1.0

    finished, _ = await run_one(store, tracer, Agent(), mode=mode)
    assert finished.status == "succeeded"
    assert called == [expected]


def test_runner_rejects_bad_options_and_agents(tracer: OtelTracer) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        LitAgentRunner(tracer, concurrency=0)
    with pytest.raises(ValueError, match="max_rollouts"):
        LitAgentRunner(tracer, max_rollouts=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        LitAgentRunner(tracer, heartbeat_interval=0)
    runner = LitAgentRunner(tracer)
    with pytest.raises(TypeError, match="LitAgent"):
        runner.init(lambda task: 1.0)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="init_worker"):
        _ = runner.store
    with pytest.raises(RuntimeError, match="iter"):
        runner.run()


def test_runner_is_exported_under_its_03_names() -> None:
    assert agl.LitAgentRunner is LitAgentRunner
    assert issubclass(agl.LitAgentRunner, agl.Runner)
