"""The HTTP store client: retries that never duplicate, typed errors, tokens, long-poll waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List, Tuple

import pytest

from agentlightning.errors import (
    RolloutNotFoundError,
    StoreAuthError,
    StoreClosedError,
    StoreServerError,
    StoreUnavailableError,
)
from agentlightning.server import StoreServer
from agentlightning.store import open_store
from agentlightning.store.client import HttpLightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import Span

FAST_RETRIES = (0.01, 0.02, 0.05)


class LossyProxy:
    """A TCP proxy in front of a server that swallows the answer to the first ``drop`` requests: the
    server applies them, the client sees its connection close without a response."""

    def __init__(self, upstream_port: int, drop: int) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.requests = 0
        self.server: Any = None
        self.port = 0

    async def start(self) -> "LossyProxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests += 1
                up_writer.write(head + body)
                await up_writer.drain()
                answer_head = await up_reader.readuntil(b"\r\n\r\n")
                answer_length = 0
                for line in answer_head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        answer_length = int(line.split(b":", 1)[1])
                answer = await up_reader.readexactly(answer_length)
                if self.drop > 0:
                    self.drop -= 1
                    return  # the server did the work; the client never hears of it
                writer.write(answer_head + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            up_writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def _lossy_client(server: StoreServer, drop: int) -> Tuple[HttpLightningStore, LossyProxy]:
    proxy = await LossyProxy(server.port, drop).start()
    return HttpLightningStore(f"http://127.0.0.1:{proxy.port}", retry_delays=FAST_RETRIES), proxy


async def test_retried_enqueue_never_duplicates(serve: Any) -> None:
    backing = InMemoryLightningStore()
    server = serve(backing)
    client, proxy = await _lossy_client(server, drop=2)
    rollout = await client.enqueue_rollout(input={"task": 1})
    assert proxy.requests == 3  # two answers lost, the third try heard back
    assert (await backing.query_rollouts()).total == 1
    assert (await backing.get_rollout_by_id(rollout.rollout_id)) is not None
    await client.close()
    await proxy.stop()


async def test_retried_mutations_apply_once(serve: Any) -> None:
    backing = InMemoryLightningStore()
    server = serve(backing)
    client, proxy = await _lossy_client(server, drop=0)
    started = await client.start_rollout(input=1)
    for call in (
        lambda: client.start_rollout(input=2),
        lambda: client.enqueue_many_rollouts([{"input": 3}, {"input": 4}]),  # type: ignore[list-item]
        lambda: client.dequeue_rollout(worker_id="w"),
        lambda: client.start_attempt(started.rollout_id),
        lambda: client.add_resources({}),
    ):
        proxy.drop = 1
        await call()
    stats = await backing.statistics()
    assert stats["total_rollouts"] == 4 and stats["total_resources"] == 1
    assert stats["total_attempts"] == 4  # 2 started, 1 dequeued, 1 explicit retry: none doubled
    # a span batch whose answer was lost is reported as added (the replayed answer), not as duplicates
    span = Span(
        rollout_id=started.rollout_id,
        attempt_id=started.attempt.attempt_id,
        sequence_id=1,
        trace_id="a" * 32,
        span_id="b" * 16,
        name="s",
    )
    proxy.drop = 1
    assert await client.add_span(span) is span
    assert (await backing.query_spans(started.rollout_id)).total == 1
    await client.close()
    await proxy.stop()


async def test_client_errors_are_typed_and_not_retried(serve: Any) -> None:
    server = serve()
    client, proxy = await _lossy_client(server, drop=0)
    with pytest.raises(RolloutNotFoundError, match="ro-nope") as info:
        await client.start_attempt("ro-nope")
    assert info.value.item_id == "ro-nope"  # type: ignore[attr-defined]
    assert proxy.requests == 1
    with pytest.raises(TypeError):
        await client.start_rollout(input=object())  # not JSON: refused before sending
    assert proxy.requests == 1
    await client.close()
    await proxy.stop()


class FlakyStore(InMemoryLightningStore):
    """Fails (a server-side bug: 500) on the first statistics() calls."""

    failures = 2

    async def statistics(self) -> Any:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("transient failure")
        return await super().statistics()


async def test_server_errors_are_retried_and_the_server_keeps_serving(serve: Any, caplog: Any) -> None:
    backing = FlakyStore()
    server = serve(backing)
    client = HttpLightningStore(server.url, retry_delays=FAST_RETRIES)
    assert (await client.statistics())["total_rollouts"] == 0  # third try
    backing.failures = 10
    with pytest.raises(StoreServerError, match="transient failure"):
        await client.statistics()
    assert (await client.start_rollout(input=1)).status == "preparing"
    await client.close()


async def test_unreachable_server() -> None:
    client = HttpLightningStore("http://127.0.0.1:9", retry_delays=FAST_RETRIES, connect_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        await client.statistics()
    assert time.monotonic() - t0 < 5
    await client.close()


async def test_token(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(token="t0ken")
    monkeypatch.delenv("AGL_STORE_TOKEN", raising=False)
    anonymous = HttpLightningStore(server.url)
    with pytest.raises(StoreAuthError, match="Authorization"):
        await anonymous.statistics()
    await anonymous.close()
    explicit = HttpLightningStore(server.url, token="t0ken")
    assert (await explicit.statistics())["total_rollouts"] == 0
    await explicit.close()
    monkeypatch.setenv("AGL_STORE_TOKEN", "t0ken")
    from_env = open_store(server.url)
    assert isinstance(from_env, HttpLightningStore)
    assert (await from_env.statistics())["total_rollouts"] == 0
    await from_env.close()


def test_urls() -> None:
    assert HttpLightningStore("http://127.0.0.1:4747/").base_url == "http://127.0.0.1:4747"
    assert HttpLightningStore("http://127.0.0.1:4747/v1/agl").base_url == "http://127.0.0.1:4747"
    assert HttpLightningStore("https://store.example:443/prefix").base_url == "https://store.example:443/prefix"
    assert open_store("https://127.0.0.1:1").otlp_traces_endpoint() == "https://127.0.0.1:1/v1/traces"
    with pytest.raises(ValueError, match="AGL_STORE_TOKEN"):
        HttpLightningStore("http://user:secret@127.0.0.1:4747")
    with pytest.raises(ValueError, match="http://host:port"):
        HttpLightningStore("http://")
    with pytest.raises(ValueError, match="query"):
        HttpLightningStore("http://127.0.0.1:1?token=x")


async def test_long_waits_loop_over_short_server_polls(serve: Any) -> None:
    server = serve(max_wait_seconds=0.1)
    client = HttpLightningStore(server.url, wait_chunk_seconds=0.15)
    a = await client.start_rollout(input=1)
    b = await client.start_rollout(input=2)

    async def finish_later() -> None:
        await asyncio.sleep(0.5)
        await client.update_attempt(a.rollout_id, "latest", status="succeeded")
        await asyncio.sleep(0.3)
        await client.update_attempt(b.rollout_id, "latest", status="failed")

    writer = asyncio.create_task(finish_later())
    t0 = time.monotonic()
    done = await client.wait_for_rollouts(rollout_ids=[a.rollout_id, b.rollout_id])  # no timeout at all
    assert 0.7 < time.monotonic() - t0 < 3
    assert [(r.rollout_id, r.status) for r in done] == [(a.rollout_id, "succeeded"), (b.rollout_id, "failed")]
    await writer
    c = await client.start_rollout(input=3)
    t0 = time.monotonic()
    assert await client.wait_for_rollouts(rollout_ids=[c.rollout_id], timeout=0.5) == []
    assert 0.45 < time.monotonic() - t0 < 2
    await client.close()


async def test_closed_client(serve: Any) -> None:
    client = HttpLightningStore(serve().url)
    await client.statistics()
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await client.statistics()


async def test_one_client_from_many_loops_and_threads(serve: Any) -> None:
    client = HttpLightningStore(serve().url)

    def in_thread(index: int) -> List[str]:
        async def work() -> List[str]:
            made = [await client.enqueue_rollout(input=index * 10 + i) for i in range(5)]
            return [r.rollout_id for r in made]

        return asyncio.run(work())

    results = await asyncio.gather(*(asyncio.to_thread(in_thread, i) for i in range(4)))
    ids = [rid for chunk in results for rid in chunk]
    assert len(set(ids)) == 20
    assert (await client.query_rollouts()).total == 20
    await client.close()


async def _raw_server(answers: List[bytes], close_after_each: bool) -> Tuple[Any, int, List[bytes]]:
    """A bare HTTP server answering requests with the given raw responses, in order."""
    seen: List[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                seen.append(head + await reader.readexactly(length))
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after_each:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_client_reads_chunked_answers_and_survives_closed_idle_connections() -> None:
    ok = b'{"status":"ok","api_version":"1"}'
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
        + ok[:5]
        + b"\r\n"
        + (f"{len(ok) - 5:x}".encode() + b"\r\n" + ok[5:] + b"\r\n0\r\n\r\n")
    )
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ok), ok)
    # the server closes each connection after answering, without saying so: the pooled connection is stale
    server, port, seen = await _raw_server([chunked, plain, plain], close_after_each=True)
    client = HttpLightningStore(f"http://127.0.0.1:{port}", token="x", retry_delays=FAST_RETRIES, connect_timeout=1)
    for _ in range(3):
        assert await client.health() == {"status": "ok", "api_version": "1"}
        await asyncio.sleep(0.01)
    assert len(seen) >= 3 and all(b"Authorization: Bearer x" in request for request in seen)
    await client.close()
    server.close()
    await server.wait_closed()
    client = HttpLightningStore(f"http://127.0.0.1:{port}", retry_delays=FAST_RETRIES, connect_timeout=1)
    with pytest.raises(StoreUnavailableError):
        await client.health()  # nobody listens any more
    await client.close()
