"""Fixtures for the store server tests: real servers (uvicorn in a thread) on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from agentlightning.server import StoreServer
from agentlightning_testing.store_server import ServeFactory, store_servers


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """``serve(store=None, **StoreServer options)`` -> a started server on 127.0.0.1:<free port>."""
    with store_servers() as serve:
        yield serve


@pytest.fixture
def server(serve: ServeFactory) -> StoreServer:
    """A server in front of a fresh in-memory store, with a 1 MiB body limit."""
    return serve(max_body_bytes=1 << 20)


@pytest.fixture
def http(server: StoreServer) -> Iterator[httpx.Client]:
    """A plain HTTP client of ``server`` (for requests the typed client would never send)."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
