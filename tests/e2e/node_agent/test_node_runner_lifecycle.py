"""The Node.js runner on the unhappy paths of the protocol: a rollout that times out, one cancelled
while it runs, and one whose first attempt fails and is retried. One `node runner.js` against a real
store server and proxy; the model's answers are scripted (slow ones, an error) by the fake backend."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any, Iterator, List, Tuple

import pytest
from node_helpers import EXAMPLE, Process, start_store_and_proxy

from agentlightning.store.client import HttpLightningStore
from agentlightning.types import AttemptedRollout, ProxyLLM, RolloutConfig
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

pytestmark = pytest.mark.timeout(180)
SLOW = 8.0  # seconds a scripted slow answer takes: far longer than the runner needs to react


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, FakeOpenAIServer, Process]]:
    if shutil.which("node") is None or not (EXAMPLE / "node_modules").is_dir():
        pytest.fail("needs Node.js and `npm ci` in examples/node_agent: run `nox -s node_agent`")
    folder = tmp_path_factory.mktemp("node_lifecycle")
    processes: List[Process] = []
    with FakeOpenAIServer() as fake:
        try:
            store_url, proxy_url = start_store_and_proxy(processes, fake, f"sqlite:///{folder / 'store.db'}")

            async def publish() -> None:
                store = HttpLightningStore(store_url)
                await store.add_resources({"main_llm": ProxyLLM(endpoint=f"{proxy_url}/v1", model="fake-model")})
                await store.close()

            asyncio.run(publish())
            runner = Process(
                "node runner",
                ["node", "runner.js", "--store", store_url, "--worker-id", "node-life", "--heartbeat-interval", "0.3"],
                cwd=EXAMPLE,
            )
            processes.append(runner)
            runner.wait_for_line(r"runner ready")
            yield store_url, fake, runner
        finally:
            for process in reversed(processes):
                process.stop()


async def _until(store: HttpLightningStore, rollout_id: str, done: Any, timeout: float = 15) -> AttemptedRollout:
    deadline = time.monotonic() + timeout
    while True:
        rollout = await store.get_rollout_by_id(rollout_id)
        if isinstance(rollout, AttemptedRollout) and done(rollout):
            return rollout
        assert time.monotonic() < deadline, f"rollout never got there: {rollout}"
        await asyncio.sleep(0.05)


async def test_a_rollout_past_its_timeout_is_stopped_and_marked_timeout(stack: Any) -> None:
    store_url, fake, runner = stack
    question = "What is 111 * 11? (slow)"
    fake.enqueue_for(question, FakeReply.text("Answer: 1221", delay=SLOW))
    store = HttpLightningStore(store_url)
    started = time.monotonic()
    (queued,) = await store.enqueue_many_rollouts(
        [{"input": {"question": question, "answer": 1221}, "config": RolloutConfig(timeout_seconds=1.5)}]  # type: ignore[list-item]
    )
    rollout = await _until(store, queued.rollout_id, lambda r: r.attempt.status not in ("preparing", "running"))
    assert time.monotonic() - started < SLOW / 2  # the runner aborted the call, it did not wait for the answer
    assert rollout.attempt.status == "timeout" and rollout.status == "failed"
    error = (rollout.attempt.metadata or {})["error"]
    assert "timeout_seconds=1.5" in error["message"]
    runner.wait_for_line(rf"{queued.rollout_id} \S+ timeout")
    await store.close()


async def test_a_cancelled_rollout_stops_its_agent(stack: Any) -> None:
    store_url, fake, runner = stack
    question = "What is 222 * 22? (slow)"
    fake.enqueue_for(question, FakeReply.text("Answer: 4884", delay=SLOW))
    store = HttpLightningStore(store_url)
    (queued,) = await store.enqueue_many_rollouts([{"input": {"question": question, "answer": 4884}}])  # type: ignore[list-item]
    await _until(store, queued.rollout_id, lambda r: r.attempt.status == "running")
    cancelled_at = time.monotonic()
    await store.cancel_rollout(queued.rollout_id)
    rollout = await _until(store, queued.rollout_id, lambda r: r.attempt.status != "running")
    assert time.monotonic() - cancelled_at < SLOW / 2
    assert rollout.status == "cancelled" and rollout.attempt.status == "failed"
    assert "cancelled" in (rollout.attempt.metadata or {})["error"]["message"]
    runner.wait_for_line(rf"{queued.rollout_id} \S+ failed")
    await store.close()


async def test_a_failed_attempt_is_retried_as_a_new_attempt(stack: Any) -> None:
    store_url, fake, runner = stack
    question = "What is 333 * 33? (flaky)"
    fake.enqueue_for(question, FakeReply.error(500, "the model fell over"))  # the first call only
    store = HttpLightningStore(store_url)
    config = RolloutConfig(max_attempts=2, retry_condition=["failed"])
    (queued,) = await store.enqueue_many_rollouts(
        [{"input": {"question": question, "answer": 10989}, "config": config}]  # type: ignore[list-item]
    )
    rollout = await _until(store, queued.rollout_id, lambda r: r.status in ("succeeded", "failed"))
    assert rollout.status == "succeeded"
    first, second = await store.query_attempts(queued.rollout_id)
    assert (first.status, second.status) == ("failed", "succeeded")
    assert second.sequence_id == 2 and second.attempt_id != first.attempt_id
    assert "fell over" in (first.metadata or {})["error"]["message"]
    first_spans = await store.query_spans(queued.rollout_id, first.attempt_id)
    second_spans = await store.query_spans(queued.rollout_id, second.attempt_id)
    assert {s.name for s in first_spans} >= {"agentlightning.rollout"}  # the failed try's trace stays its own
    assert "agentlightning.annotation" not in {s.name for s in first_spans}  # no reward for a failed try
    assert "agentlightning.annotation" in {s.name for s in second_spans}
    await store.close()
