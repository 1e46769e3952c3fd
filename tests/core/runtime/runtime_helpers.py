"""Helpers shared by the runtime tests (imported as a plain module next to them)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, List, Optional, Sequence

from agentlightning.litagent import LitAgent
from agentlightning.runner import LitAgentRunner
from agentlightning.store.base import LightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Hook


def make_runner(tracer: OtelTracer, **options: Any) -> LitAgentRunner:
    """A runner with intervals short enough for tests (each can be overridden)."""
    options.setdefault("poll_interval", 0.02)
    options.setdefault("interval_jitter", 0.0)
    options.setdefault("heartbeat_interval", 30.0)
    options.setdefault("graceful_timeout", 5.0)
    return LitAgentRunner(tracer, **options)


@asynccontextmanager
async def running(
    runner: LitAgentRunner,
    agent: LitAgent[Any],
    store: LightningStore,
    *,
    hooks: Optional[Sequence[Hook]] = None,
    worker_id: int = 0,
) -> AsyncIterator["asyncio.Task[None]"]:
    """Run ``runner.iter`` in the background on this loop; stop it (event) and tear down on exit."""
    event = threading.Event()
    runner.init(agent, hooks=hooks)
    runner.init_worker(worker_id, store)
    task = asyncio.ensure_future(runner.iter(event=event))
    task.stop_event = event  # type: ignore[attr-defined]
    try:
        yield task
    finally:
        event.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            runner.teardown_worker(worker_id)
            runner.teardown()


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_finished(store: LightningStore, rollout_ids: List[str], timeout: float = 10.0) -> List[Any]:
    finished = await store.wait_for_rollouts(rollout_ids=rollout_ids, timeout=timeout)
    assert len(finished) == len(rollout_ids), f"only {len(finished)} of {len(rollout_ids)} rollouts finished"
    return finished
