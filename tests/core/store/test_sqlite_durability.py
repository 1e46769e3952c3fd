"""SQLite only: what survives closing, reopening, a second process, and SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List

import pytest
from store_helpers import add_spans, make_span, snapshot

from agentlightning.errors import StoreClosedError
from agentlightning.store import open_store
from agentlightning.store.sqlite import SqliteLightningStore, StoreLockedError
from agentlightning.types import LLM, EnqueueRolloutRequest, RolloutConfig

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and file locks")


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


async def test_reopen_restores_everything(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteLightningStore(path)
    r1 = await store.add_resources({"llm": LLM(endpoint="http://a/v1", model="a")})
    r2 = await store.add_resources({"llm": LLM(endpoint="http://b/v1", model="b")})
    await store.update_resources(r1.resources_id, {"llm": LLM(endpoint="http://a2/v1", model="a2")})  # latest again

    created = await store.enqueue_many_rollouts(
        [
            EnqueueRolloutRequest(input={"i": 0}, client_request_id="req-0", metadata={"m": 0}),
            EnqueueRolloutRequest(input={"i": 1}, client_request_id="req-1", mode="train"),
            EnqueueRolloutRequest(input={"i": 2}, config=RolloutConfig(max_attempts=3, retry_condition=["failed"])),
            EnqueueRolloutRequest(input={"i": 3}, resources_id=r2.resources_id),
            EnqueueRolloutRequest(input={"i": 4}),
        ]
    )
    ids = [r.rollout_id for r in created]
    a = await store.dequeue_rollout(worker_id="w-1")
    assert a is not None and a.rollout_id == ids[0]
    await add_spans(store, a.rollout_id, a.attempt.attempt_id, 3, attributes={"none": None, "nested": {"k": [1]}})
    await store.update_attempt(a.rollout_id, a.attempt.attempt_id, status="succeeded")
    b = await store.dequeue_rollout(worker_id="w-2")
    assert b is not None and b.rollout_id == ids[1]
    await add_spans(store, b.rollout_id, b.attempt.attempt_id, 1)
    c = await store.dequeue_rollout(worker_id="w-3")
    assert c is not None and c.rollout_id == ids[2]
    await store.update_attempt(c.rollout_id, c.attempt.attempt_id, status="failed")  # -> requeuing, back of queue
    await store.cancel_rollout(ids[3])  # queued, cancelled: skipped by dequeue
    await store.update_rollout(ids[0], status="queuing")  # explicit requeue of a finished rollout
    await store.update_worker("w-9", heartbeat_stats={"gpu": 0.5})
    issued = await store.get_next_span_sequence_id(b.rollout_id, b.attempt.attempt_id)  # issued, never used
    assert issued == 2
    before = await snapshot(store)
    await store.close()

    reopened = SqliteLightningStore(path)
    try:
        assert await snapshot(reopened) == before
        latest = await reopened.get_latest_resources()
        assert latest is not None and latest.resources_id == r1.resources_id and latest.version == 2
        # sequence counters continue
        assert await reopened.get_next_span_sequence_id(b.rollout_id, b.attempt.attempt_id) == 3
        assert await reopened.get_next_span_sequence_id(a.rollout_id, a.attempt.attempt_id) == 4
        # request ids still deduplicate
        again = await reopened.enqueue_rollout(input={"i": 0}, client_request_id="req-0")
        assert again.rollout_id == ids[0]
        assert (await reopened.query_rollouts()).total == 5
        # queue order: 4, then 2 (requeued after its failure), then 0 (explicit requeue); 3 was cancelled
        order = [r.rollout_id for r in await reopened.dequeue_many_rollouts(limit=10)]
        assert order == [ids[4], ids[2], ids[0]]
        attempts = await reopened.query_attempts(ids[2])
        assert [x.sequence_id for x in attempts] == [1, 2]
        # the status machine goes on where it stopped
        await reopened.update_attempt(b.rollout_id, "latest", status="succeeded")
        worker = await reopened.get_worker_by_id("w-2")
        assert worker is not None and worker.status == "idle"
    finally:
        await reopened.close()
    assert _integrity(path) == "ok"


async def test_reopen_twice_and_keep_writing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    for round_ in range(3):
        store = SqliteLightningStore(path)
        try:
            assert (await store.query_rollouts()).total == round_
            started = await store.start_rollout(input=round_)
            await store.add_span(make_span(started.rollout_id, started.attempt.attempt_id, 1))
            await store.update_attempt(started.rollout_id, "latest", status="succeeded")
        finally:
            await store.close()
    store = SqliteLightningStore(path)
    try:
        assert (await store.statistics())["total_spans"] == 3
        assert all(r.status == "succeeded" for r in await store.query_rollouts())
    finally:
        await store.close()


async def test_second_writer_is_refused_and_read_only_works_alongside(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    writer = SqliteLightningStore(path)
    try:
        started = await writer.start_rollout(input="x")
        await writer.add_span(make_span(started.rollout_id, started.attempt.attempt_id, 1))
        with pytest.raises(StoreLockedError) as info:
            SqliteLightningStore(path)
        assert str(path) in str(info.value)
        with pytest.raises(StoreLockedError):
            open_store(f"sqlite:///{path}")

        # a reader sees what the writer wrote (readers may lag the writer by a short commit interval)
        deadline = time.monotonic() + 5
        while True:
            reader = open_store(f"sqlite:///{path}?mode=ro")
            try:
                seen = await reader.get_rollout_by_id(started.rollout_id) is not None
                seen = seen and (await reader.query_spans(started.rollout_id)).total == 1
                if seen or time.monotonic() > deadline:
                    rollout = await reader.get_rollout_by_id(started.rollout_id)
                    assert rollout is not None and rollout.input == "x"
                    spans = await reader.query_spans(started.rollout_id)
                    assert spans.total == 1
                    with pytest.raises(StoreClosedError):
                        await reader.enqueue_rollout(input="from the reader")
                    break
            finally:
                await reader.close()
            await asyncio.sleep(0.05)
        # the writer is unaffected by the reader
        await writer.update_attempt(started.rollout_id, "latest", status="succeeded")
    finally:
        await writer.close()
    # once the writer is gone another one may open it
    again = SqliteLightningStore(path)
    try:
        rollout = await again.get_rollout_by_id(started.rollout_id)
        assert rollout is not None and rollout.status == "succeeded"
    finally:
        await again.close()


CHILD = textwrap.dedent(
    """
    import asyncio, secrets, sys, time
    from agentlightning.store.sqlite import SqliteLightningStore
    from agentlightning.types import Span

    def say(*parts):
        sys.stdout.write(" ".join(str(p) for p in parts) + "\\n")
        sys.stdout.flush()

    async def main(path):
        store = SqliteLightningStore(path)
        say("ready")
        i = 0
        while True:
            if i % 10 == 0:
                res = await store.add_resources({})
                say("resources", res.resources_id)
            rollout = await store.enqueue_rollout(input={"i": i}, client_request_id=f"req-{i}")
            say("enqueued", rollout.rollout_id, f"req-{i}")
            got = await store.dequeue_rollout(worker_id="child")
            say("dequeued", got.rollout_id, got.attempt.attempt_id)
            for _ in range(2):
                seq = await store.get_next_span_sequence_id(got.rollout_id, got.attempt.attempt_id)
                span_id = secrets.token_hex(8)
                now = time.time()
                await store.add_span(Span(
                    rollout_id=got.rollout_id, attempt_id=got.attempt.attempt_id, sequence_id=seq,
                    trace_id=secrets.token_hex(16), span_id=span_id, name="step",
                    attributes={"i": i, "payload": "x" * 500}, start_time=now, end_time=now,
                ))
                say("span", got.rollout_id, got.attempt.attempt_id, span_id, seq)
            status = "succeeded" if i % 3 else "failed"
            await store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=status)
            say("finished", got.rollout_id, got.attempt.attempt_id, status)
            i += 1

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    lines: List[str] = []
    try:
        assert proc.stdout is not None
        first = await asyncio.to_thread(proc.stdout.readline)
        assert first.strip() == "ready", first + proc.stderr.read() if proc.stderr else first

        def read_acks() -> None:
            assert proc.stdout is not None
            while len(lines) < 400:
                line = proc.stdout.readline()
                if not line:
                    return
                lines.append(line)

        await asyncio.wait_for(asyncio.to_thread(read_acks), timeout=60)
        assert len(lines) >= 400, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the child is still writing
        rest, _ = await asyncio.to_thread(proc.communicate, None, 30)
        lines.extend(rest.splitlines(keepends=True))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    acks = [line.split() for line in lines if line.endswith("\n")]  # a torn last line is no acknowledgement

    assert _integrity(path) == "ok"
    store = SqliteLightningStore(path)
    try:
        finished: Dict[str, str] = {}
        spans: Dict[str, int] = {}
        for ack in acks:
            kind = ack[0]
            if kind == "resources":
                assert await store.get_resources_by_id(ack[1]) is not None, ack
            elif kind == "enqueued":
                rollout = await store.get_rollout_by_id(ack[1])
                assert rollout is not None, ack
                repeat = await store.enqueue_rollout(input=None, client_request_id=ack[2])
                assert repeat.rollout_id == ack[1], ack
            elif kind == "dequeued":
                attempts = await store.query_attempts(ack[1])
                assert ack[2] in [a.attempt_id for a in attempts], ack
            elif kind == "span":
                found = await store.query_spans(ack[1], ack[2], span_id=ack[3])
                assert found.total == 1 and found[0].sequence_id == int(ack[4]), ack
                spans[ack[1]] = max(spans.get(ack[1], 0), int(ack[4]))
            elif kind == "finished":
                finished[ack[1]] = ack[3]
            else:
                raise AssertionError(f"unexpected line {ack}")
        assert len(finished) >= 50
        for rollout_id, status in finished.items():
            rollout = await store.get_rollout_by_id(rollout_id)
            assert rollout is not None and rollout.status == status, (rollout_id, status)
            attempt = await store.get_latest_attempt(rollout_id)
            assert attempt is not None and attempt.status == status
        for rollout_id, highest in spans.items():  # counters never go back to an acknowledged id
            rollout = await store.get_rollout_by_id(rollout_id)
            assert rollout is not None
            attempt_id = (await store.get_latest_attempt(rollout_id)).attempt_id  # type: ignore[union-attr]
            assert await store.get_next_span_sequence_id(rollout_id, attempt_id) > highest
        # the reopened store keeps working on top of what the killed process left
        started = await store.start_rollout(input="after the crash")
        await store.update_attempt(started.rollout_id, "latest", status="succeeded")
    finally:
        await store.close()
    assert _integrity(path) == "ok"


def _count_rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def test_sync_makes_acknowledged_writes_visible_to_other_readers(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteLightningStore(path, commit_interval=3600)  # no timer commit during this test
    try:
        r = await store.start_rollout({"q": 1})
        await add_spans(store, r.rollout_id, r.attempt.attempt_id, 4)
        assert _count_rows(path, "spans") == 0  # journaled (durable) but not yet in the database
        await store.sync()
        assert _count_rows(path, "spans") == 4
        assert _count_rows(path, "rollouts") == 1
    finally:
        await store.close()


def test_batches_commit_on_later_loops_after_the_first_loop_closed(tmp_path: Path) -> None:
    """A commit timer dies with its loop; writes from the next loop must still commit promptly."""
    path = tmp_path / "store.db"
    store = SqliteLightningStore(path, commit_interval=0.01)
    try:
        asyncio.run(store.enqueue_rollout({"first": True}))  # its loop closes right after the write

        async def second_loop() -> None:
            await store.enqueue_rollout({"second": True})
            await asyncio.sleep(0.3)  # several commit intervals, well below the 1 s safety net

        asyncio.run(second_loop())
        assert _count_rows(path, "rollouts") == 2
    finally:
        asyncio.run(store.close())
