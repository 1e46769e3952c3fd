"""The store server killed with SIGKILL under load, restarted on the same SQLite file: every write a
client had acknowledged is there."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from test_cli_serve import _agl, _banner

from agentlightning.errors import AgentLightningError
from agentlightning.store.client import HttpLightningStore
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.types import Span

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _url(banner: List[str]) -> str:
    for line in banner:
        if "listening:" in line:
            return line.split("listening:", 1)[1].strip().split()[0]
    raise AssertionError(f"no URL in {banner}")


async def _load(
    name: str, client: HttpLightningStore, acked: Dict[str, List[Tuple[str, str]]], stop: asyncio.Event
) -> None:
    """Enqueue, dequeue, add spans, finish; remember every write the server acknowledged."""
    index = 0
    while not stop.is_set():
        index += 1
        try:
            rollout = await client.enqueue_rollout(input={"i": index}, client_request_id=f"{name}-{index}")
            acked["enqueued"].append((rollout.rollout_id, ""))
            attempted = await client.dequeue_rollout(worker_id=name)
            if attempted is None:
                continue
            aid = attempted.attempt.attempt_id
            spans = [
                Span(
                    rollout_id=attempted.rollout_id,
                    attempt_id=aid,
                    sequence_id=k + 1,
                    trace_id="t" * 32,
                    span_id=f"{index:08x}{k:08x}",
                    name="load",
                    attributes={"k": k},
                )
                for k in range(3)
            ]
            await client.add_many_spans(spans)
            acked["spans"].extend((attempted.rollout_id, s.span_id) for s in spans)
            await client.update_attempt(attempted.rollout_id, aid, status="succeeded")
            acked["succeeded"].append((attempted.rollout_id, aid))
        except AgentLightningError:
            return  # the server is gone: what was acknowledged so far is the contract


async def test_acknowledged_writes_survive_a_server_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    server = _agl("--store", f"sqlite:///{db}", "--port", "0")
    acked: Dict[str, List[Tuple[str, str]]] = {"enqueued": [], "spans": [], "succeeded": []}
    try:
        url = _url(_banner(server))
        clients = [HttpLightningStore(url, retry_delays=(0.05,)) for _ in range(3)]
        stop = asyncio.Event()
        loaders = [asyncio.ensure_future(_load(f"loader{i}", c, acked, stop)) for i, c in enumerate(clients)]
        while len(acked["succeeded"]) < 60:  # under load...
            await asyncio.sleep(0.05)
        server.send_signal(signal.SIGKILL)  # ...killed without a chance to flush anything
        server.wait(timeout=30)
        await asyncio.wait_for(asyncio.gather(*loaders), timeout=60)
        stop.set()
        for client in clients:
            await client.close()
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=30)

    restarted = _agl("--store", f"sqlite:///{db}", "--port", "0")  # replays the journal on open
    try:
        client = HttpLightningStore(_url(_banner(restarted)))
        for rollout_id, _ in acked["enqueued"]:
            assert await client.get_rollout_by_id(rollout_id) is not None, rollout_id
        for rollout_id, attempt_id in acked["succeeded"]:
            attempt = await client.get_latest_attempt(rollout_id)
            assert attempt is not None and attempt.attempt_id == attempt_id and attempt.status == "succeeded"
        stored = {}
        for rollout_id, span_id in acked["spans"]:
            if rollout_id not in stored:
                stored[rollout_id] = {s.span_id for s in await client.query_spans(rollout_id)}
            assert span_id in stored[rollout_id], (rollout_id, span_id)
        await client.close()
    finally:
        restarted.send_signal(signal.SIGINT)
        restarted.communicate(timeout=30)
    assert len(acked["succeeded"]) >= 60
    reopened = SqliteLightningStore(db, read_only=True)
    await reopened.close()
