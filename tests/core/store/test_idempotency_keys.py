"""Calls made with an idempotency key (what the store server does for a request's Idempotency-Key):
a repeat gets the first answer instead of being applied again, and that answer is durable with the
call's own writes, so a retry after the server was killed is not applied twice either."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from agentlightning.store.engine import IDEMPOTENCY_KEY
from agentlightning.types import LLM

pytestmark = pytest.mark.timeout(120)


@contextmanager
def key(value: str) -> Iterator[None]:
    token = IDEMPOTENCY_KEY.set(value)
    try:
        yield
    finally:
        IDEMPOTENCY_KEY.reset(token)


@pytest.fixture
def keyed_store(store_factory: Any) -> Any:
    if store_factory.backend == "http":
        pytest.skip("the HTTP client sends its own keys (tests/core/server covers them)")
    return store_factory()


async def test_a_repeated_key_gets_the_first_answer_and_changes_nothing(keyed_store: Any) -> None:
    store = keyed_store
    with key("start"):
        started = await store.start_rollout(input={"n": 1})
        again = await store.start_rollout(input={"n": 2})
    assert (again.rollout_id, again.attempt.attempt_id) == (started.rollout_id, started.attempt.attempt_id)
    assert again.input == {"n": 1}

    first = await store.enqueue_rollout(input="a")
    second = await store.enqueue_rollout(input="b")
    with key("dequeue"):
        taken = await store.dequeue_many_rollouts(limit=1, worker_id="w1")
        retried = await store.dequeue_many_rollouts(limit=1, worker_id="w1")
    assert [r.rollout_id for r in taken] == [first.rollout_id]
    assert [(r.rollout_id, r.attempt.attempt_id) for r in retried] == [
        (r.rollout_id, r.attempt.attempt_id) for r in taken
    ]
    assert (await store.dequeue_rollout(worker_id="w2")).rollout_id == second.rollout_id  # still queued

    with key("attempt"):
        attempt = await store.start_attempt(first.rollout_id)
        attempt_again = await store.start_attempt(first.rollout_id)
    assert attempt_again.attempt.attempt_id == attempt.attempt.attempt_id
    assert [a.sequence_id for a in await store.query_attempts(first.rollout_id)] == [1, 2]

    llm = LLM(endpoint="http://localhost:1/v1", model="m")
    with key("resources"):
        update = await store.add_resources({"main": llm})
        update_again = await store.add_resources({"main": llm})
    assert update_again.resources_id == update.resources_id
    assert len(await store.query_resources()) == 1

    assert len(await store.query_rollouts()) == 3  # started, a, b: nothing applied twice


async def test_another_key_or_no_key_is_applied(keyed_store: Any) -> None:
    store = keyed_store
    with key("one"):
        one = await store.start_rollout(input=1)
    with key("two"):
        two = await store.start_rollout(input=1)
    three = await store.start_rollout(input=1)
    assert len({one.rollout_id, two.rollout_id, three.rollout_id}) == 3


async def test_an_answer_is_a_copy(keyed_store: Any) -> None:
    store = keyed_store
    with key("copy"):
        started = await store.start_rollout(input=1, metadata={"a": 1})
        started.metadata["a"] = 2
        again = await store.start_rollout(input=1)
    assert again.metadata == {"a": 1}


# -- across a killed server -----------------------------------------------------------------------
def _store_uri(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    base = os.environ.get("AGL_TEST_POSTGRES_URI")
    if not base:
        pytest.skip("AGL_TEST_POSTGRES_URI is not set")
    return f"{base}{'&' if '?' in base else '?'}schema=agl_test_{uuid.uuid4().hex[:12]}"


def _start_server(uri: str, port: int, cwd: Path) -> "subprocess.Popen[str]":
    command = [sys.executable, "-m", "agentlightning.cli", "store", "serve", "--store", uri, "--port", str(port)]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_healthy(url: str, process: "subprocess.Popen[str]") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"{url}/v1/agl/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not come up")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_retry_after_the_server_was_killed_is_not_applied_twice(backend: str, tmp_path: Path) -> None:
    uri, port = _store_uri(backend, tmp_path), _free_port()
    url = f"http://127.0.0.1:{port}"
    api = f"{url}/v1/agl"
    server = _start_server(uri, port, tmp_path)
    try:
        _wait_healthy(url, server)
        httpx.post(
            f"{api}/queues/rollouts/enqueue", json={"rollouts": [{"input": i} for i in range(3)]}
        ).raise_for_status()
        requests: List[Dict[str, Any]] = [
            {"path": "/rollouts", "json": {"input": "started"}},
            {"path": "/queues/rollouts/dequeue", "json": {"limit": 1, "worker_id": "runner-1"}},
        ]
        first = []
        for i, request in enumerate(requests):
            response = httpx.post(f"{api}{request['path']}", json=request["json"], headers={"Idempotency-Key": f"k{i}"})
            response.raise_for_status()
            first.append(response.json())
        server.send_signal(signal.SIGKILL)  # no shutdown, no flush: what a crash leaves
        server.wait(10)

        server = _start_server(uri, port, tmp_path)
        _wait_healthy(url, server)
        for i, request in enumerate(requests):  # the client's retries, as if the answers had been lost
            response = httpx.post(f"{api}{request['path']}", json=request["json"], headers={"Idempotency-Key": f"k{i}"})
            response.raise_for_status()
            assert response.json() == first[i], request
        rollouts = httpx.get(f"{api}/rollouts").json()["items"]
        assert len(rollouts) == 4  # 3 enqueued + 1 started, nothing twice
        assert sorted(r["status"] for r in rollouts) == ["preparing", "preparing", "queuing", "queuing"]
        # a new key is a new request
        fresh = httpx.post(f"{api}/queues/rollouts/dequeue", json={"limit": 1}, headers={"Idempotency-Key": "k9"})
        assert [r["rollout_id"] for r in fresh.json()] != [r["rollout_id"] for r in first[1]]
    finally:
        server.kill()
        server.wait(10)
