"""Two store servers (`agl store serve --store postgresql://...`, real processes) on one database:
runners talking to either one get each rollout exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from typing import List

import pytest

from agentlightning.store.client import HttpLightningStore

pytestmark = pytest.mark.postgres


def _serve(store_uri: str) -> "tuple[subprocess.Popen[str], str]":
    env = {k: v for k, v in os.environ.items() if k != "AGL_STORE_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "agentlightning.cli", "store", "serve", "--store", store_uri, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: List[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"listening:\s+(http://127\.0\.0\.1:\d+)", line)
        if found:
            password = store_uri.split("@")[0].rsplit(":", 1)[1]
            assert password not in "".join(lines) and ":***@127.0.0.1" in "".join(lines)  # never printed
            return process, found.group(1)
    process.kill()
    raise AssertionError(f"no server: {''.join(lines)} {process.stderr.read() if process.stderr else ''}")


async def test_runners_on_two_store_servers_sharing_one_database_get_each_rollout_once(store_uri: str) -> None:
    servers = [_serve(store_uri) for _ in range(2)]
    clients = [HttpLightningStore(url) for _, url in servers]
    try:
        # The algorithm enqueues through one server; 8 runners, 4 on each server, drain the queue.
        enqueued = await clients[0].enqueue_many_rollouts([{"input": i} for i in range(200)])
        dequeued: List[List[str]] = [[] for _ in range(8)]

        async def runner(index: int) -> None:
            client = clients[index % 2]
            while True:
                rollout = await client.dequeue_rollout(worker_id=f"runner-{index}")
                if rollout is None:
                    return
                dequeued[index].append(rollout.rollout_id)
                await client.update_attempt(rollout.rollout_id, rollout.attempt.attempt_id, status="succeeded")

        await asyncio.gather(*(runner(i) for i in range(8)))
        taken = [rollout_id for got in dequeued for rollout_id in got]
        assert len(taken) == len(set(taken)) == 200
        assert set(taken) == {r.rollout_id for r in enqueued}
        assert sum(len(got) for got in dequeued[1::2]) > 0 and sum(len(got) for got in dequeued[0::2]) > 0
        # Both servers see the same store: every rollout finished, with one attempt each.
        finished = await clients[1].wait_for_rollouts(rollout_ids=[r.rollout_id for r in enqueued], timeout=30)
        assert len(finished) == 200 and {r.status for r in finished} == {"succeeded"}
        for client in clients:
            stats = await client.statistics()
            assert stats["total_attempts"] == 200 and stats["rollouts_by_status"] == {"succeeded": 200}
    finally:
        for client in clients:
            await client.close()
        for process, _ in servers:
            process.send_signal(signal.SIGINT)
        for process, _ in servers:
            _, stderr = process.communicate(timeout=30)
            assert process.returncode == 0, stderr


def test_serving_a_database_that_is_down_says_so_without_a_traceback(postgres_uri: str) -> None:
    down = re.sub(r":(\d+)/", ":1/", postgres_uri)
    process = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "store", "serve", "--store", down, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert "cannot reach PostgreSQL at 127.0.0.1:1 (database 'agl')" in process.stderr
    assert "Traceback" not in process.stderr
