"""Connections that drop and a server that goes away: calls ride it out, and no acknowledged write is
lost or applied twice."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any, List, Optional

import pytest
from pg_helpers import connect, with_options

from agentlightning_postgres import PostgresUnavailableError
from agentlightning_postgres.store import PostgresLightningStore
from agentlightning_postgres.tempserver import TemporaryPostgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_server() -> Iterator[TemporaryPostgres]:
    """A server this test may stop and restart (on the same port, with the same data)."""
    with TemporaryPostgres() as server:
        yield server


async def _kill_store_connections(uri: str) -> int:
    conn = await connect(uri)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'agentlightning' AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def test_dropped_connections_are_replaced_without_losing_an_acknowledged_write(
    own_server: TemporaryPostgres,
) -> None:
    uri = with_options(own_server.uri, schema="drops")
    store = PostgresLightningStore.from_uri(uri)
    acknowledged: List[str] = []
    stop = asyncio.Event()

    async def writer(index: int) -> None:
        for n in range(60):
            rollout = await store.enqueue_rollout(input={"writer": index, "n": n})
            acknowledged.append(rollout.rollout_id)
            if n % 3 == 0:
                got = await store.dequeue_rollout(worker_id=f"w{index}")
                assert got is not None
                await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status="succeeded")

    async def killer() -> int:
        killed = 0
        while not stop.is_set():
            await asyncio.sleep(0.05)
            killed += await _kill_store_connections(uri)
        return killed

    try:
        killing = asyncio.create_task(killer())
        await asyncio.gather(*(writer(i) for i in range(4)))
        stop.set()
        killed = await killing
        assert killed >= 5, killed  # connections really were dropped under the writers
        assert len(acknowledged) == 240
        listed = await store.query_rollouts()
        assert sorted(r.rollout_id for r in listed) == sorted(acknowledged)  # all there, none twice
        stats = await store.statistics()
        assert stats["rollouts_by_status"] == {"queuing": 160, "succeeded": 80}
        assert stats["total_attempts"] == 80
    finally:
        await store.close()


async def test_calls_wait_for_a_restarting_server_and_then_succeed(own_server: TemporaryPostgres) -> None:
    uri = with_options(own_server.uri, schema="restarts", retry_seconds=60)
    store = PostgresLightningStore.from_uri(uri)
    try:
        before = await store.enqueue_rollout(input="before")
        await asyncio.to_thread(own_server.stop_server)
        during = asyncio.create_task(store.enqueue_rollout(input="during"))
        await asyncio.sleep(1.0)
        assert not during.done()  # waiting for the server, not failing
        await asyncio.to_thread(own_server.start_server)
        written = await asyncio.wait_for(during, 60)
        listed = await store.query_rollouts(sort_by="start_time")
        assert [r.rollout_id for r in listed] == [before.rollout_id, written.rollout_id]
    finally:
        await store.close()


async def test_a_server_gone_for_longer_than_retry_seconds_gives_a_typed_error(own_server: TemporaryPostgres) -> None:
    store = PostgresLightningStore.from_uri(with_options(own_server.uri, schema="gone", retry_seconds=1.5))
    try:
        await store.enqueue_rollout(input="before")
        await asyncio.to_thread(own_server.stop_server)
        with pytest.raises(PostgresUnavailableError, match=rf"127\.0\.0\.1:{own_server.port} \(database 'agl'\)"):
            await store.enqueue_rollout(input="never acknowledged")
        await asyncio.to_thread(own_server.start_server)
        listed = await store.query_rollouts()
        assert [r.input for r in listed] == ["before"]
    finally:
        await store.close()


# The simple-query message asyncpg sends to commit: 'Q', int32 length, "COMMIT;", NUL.
_COMMIT_MESSAGE = b"Q" + (4 + len(b"COMMIT;\x00")).to_bytes(4, "big") + b"COMMIT;\x00"


class _CommitSwallowingProxy:
    """A TCP proxy between the store and PostgreSQL that, once armed, forwards the next COMMIT (or,
    armed with ``b""``, the next message: a write that is its own transaction) to the server, lets it
    commit, and then drops the connection before the answer reaches the client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed: Optional[bytes] = None
        self.swallowed = 0
        self.server: Optional[asyncio.base_events.Server] = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        dropped = asyncio.Event()

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                swallow = self.armed is not None and self.armed in data
                if swallow:
                    self.armed = None
                    self.swallowed += 1
                    dropped.set()  # from now on nothing goes back to the client
                server_writer.write(data)
                await server_writer.drain()
                if swallow:
                    await asyncio.sleep(0.3)  # the server commits; its answer is never passed on
                    client_writer.transport.abort()
                    server_writer.close()
                    return

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                if dropped.is_set():
                    return
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        client_writer.transport.abort()
        server_writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.parametrize("operation", ["enqueue", "dequeue", "sequence_id"])
async def test_a_commit_whose_answer_is_lost_is_not_applied_twice(postgres_uri: str, operation: str) -> None:
    proxy = _CommitSwallowingProxy(int(postgres_uri.rsplit(":", 1)[1].split("/")[0]))
    await proxy.start()
    proxied = postgres_uri.replace(f":{proxy.target_port}/", f":{proxy.port}/")
    schema = f"agl_lost_{secrets.token_hex(4)}"
    # Opened on another thread: opening blocks its caller, and the proxy serves on this loop.
    store = await asyncio.to_thread(PostgresLightningStore.from_uri, with_options(proxied, schema=schema))
    try:
        queued = await store.enqueue_rollout(input="first")
        started = await store.start_rollout(input="seq")
        await store.get_next_span_sequence_id(started.rollout_id, started.attempt.attempt_id)
        # Sequence ids are taken by one statement that commits by itself (no COMMIT message).
        proxy.armed = b"" if operation == "sequence_id" else _COMMIT_MESSAGE
        result: Any
        if operation == "enqueue":
            result = await store.enqueue_rollout(input="second")
        elif operation == "dequeue":
            result = await store.dequeue_rollout(worker_id="w")
        else:
            result = await store.get_next_span_sequence_id(started.rollout_id, started.attempt.attempt_id)
        assert proxy.swallowed == 1
        stats = await store.statistics()
        if operation == "enqueue":
            assert stats["total_rollouts"] == 3 and result.input == "second"
        elif operation == "dequeue":
            assert result is not None and result.rollout_id == queued.rollout_id
            assert stats["total_attempts"] == 2  # one attempt for `started`, one for this dequeue
            assert await store.dequeue_rollout() is None
        else:
            assert result == 2
            assert await store.get_next_span_sequence_id(started.rollout_id, started.attempt.attempt_id) == 3
    finally:
        await store.close()
        await proxy.close()


async def test_a_wait_survives_its_listening_connection_being_dropped(open_stores: Any, store_uri: str) -> None:
    waiting, finishing = open_stores(), open_stores()
    started = await waiting.start_rollout(input="wait through a drop")
    wait = asyncio.create_task(waiting.wait_for_rollouts(rollout_ids=[started.rollout_id], timeout=60))
    await asyncio.sleep(0.5)
    assert await _kill_store_connections(store_uri) >= 1  # the LISTEN connection among them
    await asyncio.sleep(0.5)
    await finishing.update_attempt(started.rollout_id, started.attempt.attempt_id, status="succeeded")
    finished = await asyncio.wait_for(wait, 10)
    assert [r.status for r in finished] == ["succeeded"]


async def test_transaction_ids_are_kept_an_hour_then_forgotten(open_stores: Any, store_uri: str) -> None:
    store: PostgresLightningStore = open_stores(watchdog=False)
    await store.enqueue_rollout(input="recorded")
    conn = await connect(store_uri)
    try:
        table = f"{store.schema}.committed_transactions"
        await conn.execute(f"INSERT INTO {table} VALUES (gen_random_uuid(), now() - interval '61 minutes', NULL)")
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 2
        store._last_forget -= 61  # as if a minute passed since the last clean-up
        await store.enqueue_rollout(input="next")
        ages = await conn.fetch(f"SELECT now() - committed_at < interval '1 minute' AS fresh FROM {table}")
    finally:
        await conn.close()
    assert [row["fresh"] for row in ages] == [True, True]  # the old one gone, both enqueues kept
