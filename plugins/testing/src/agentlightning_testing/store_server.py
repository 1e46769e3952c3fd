"""Real store servers for tests: uvicorn in a thread on a free loopback port, stopped afterwards.

Needs the ``server`` extra of ``agentlightning``. Shared by the core server tests and plugins that mount
routes on the store server (their routes come through ``agl_register_server_routes``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Dict, List, Tuple

from agentlightning.server import StoreServer
from agentlightning.store.client import HttpLightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types.core import AttemptedRollout

ServeFactory = Callable[..., StoreServer]


@contextmanager
def store_servers() -> Iterator[ServeFactory]:
    """Yields ``serve(store=None, **StoreServer options)``: a started server (a fresh in-memory store by
    default) on 127.0.0.1:<free port>; every server it started is stopped on exit."""
    started: List[StoreServer] = []

    def serve(store: Any = None, **options: Any) -> StoreServer:
        options.setdefault("port", 0)
        server = StoreServer(store if store is not None else InMemoryLightningStore(), **options).start()
        started.append(server)
        return server

    try:
        yield serve
    finally:
        for server in started:
            server.stop()


async def store_state(store: HttpLightningStore) -> Dict[str, Any]:
    """Every rollout with its attempts and spans, to check that a refused request changed nothing."""
    rollouts = await store.query_rollouts(sort_by="rollout_id")
    state: Dict[str, Any] = {"rollouts": [r.model_dump() for r in rollouts]}
    for rollout in rollouts:
        state[rollout.rollout_id] = (
            [a.model_dump() for a in await store.query_attempts(rollout.rollout_id)],
            [s.model_dump() for s in await store.query_spans(rollout.rollout_id)],
        )
    return state


async def running_and_ended_attempts(store: HttpLightningStore) -> Tuple[AttemptedRollout, AttemptedRollout]:
    """Two rollouts from two workers: one attempt still running (heartbeat now), one that succeeded."""
    running = await store.start_rollout(input="running", worker_id="node-1")
    await store.update_attempt(running.rollout_id, running.attempt.attempt_id, last_heartbeat_time=time.time())
    ended = await store.start_rollout(input="ended", worker_id="node-2")
    await store.update_attempt(ended.rollout_id, ended.attempt.attempt_id, status="succeeded")
    return running, ended
