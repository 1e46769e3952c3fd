"""Real store servers (uvicorn in a thread) on free loopback ports, with this plugin's route mounted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, List

import pytest

from agentlightning.server import StoreServer
from agentlightning.store.memory import InMemoryLightningStore

ServeFactory = Callable[..., StoreServer]


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """``serve(store=None, **StoreServer options)`` -> a started server on 127.0.0.1:<free port>."""
    started: List[StoreServer] = []

    def make(store: Any = None, **options: Any) -> StoreServer:
        options.setdefault("port", 0)
        server = StoreServer(store if store is not None else InMemoryLightningStore(), **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(serve: ServeFactory) -> StoreServer:
    """A server in front of a fresh in-memory store, with a 1 MiB body limit."""
    return serve(max_body_bytes=1 << 20)
