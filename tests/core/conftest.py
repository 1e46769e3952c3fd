"""Fixtures shared by the core tests.

The store backends under test are listed ONCE, in ``STORE_BACKENDS``: every test that asks for the
``store`` (or ``store_factory``) fixture runs against each of them. A new backend (an HTTP client in
front of a store server, PostgreSQL, ...) only adds an entry there.

``AGL_TEST_POSTGRES_URI=postgresql://...`` adds ``postgres`` (the ``agentlightning-postgres`` plugin,
imported only then): each store gets a schema of its own in that database. The ``plugins/postgres``
nox session starts a server and runs these tests with ``-k postgres``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlencode

import pytest
import pytest_asyncio

from agentlightning.server import StoreServer
from agentlightning.store import open_store
from agentlightning.store.base import LightningStore
from agentlightning.store.client import HttpLightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.sqlite import SqliteLightningStore

StoreFactory = Callable[..., LightningStore]
"""``make(**options)`` -> a fresh, empty store; options are backend constructor options such as
``scan_debounce_seconds`` or ``watchdog``. Without options the store is opened by its URI."""


def _memory(tmp_path: Path, index: int, options: Dict[str, Any]) -> LightningStore:
    if not options:
        return open_store("memory://")
    return InMemoryLightningStore(**options)


def _sqlite(tmp_path: Path, index: int, options: Dict[str, Any]) -> LightningStore:
    path = tmp_path / ("store.db" if index == 0 else f"store-{index}.db")
    if not options:
        return open_store(f"sqlite:///{path}")
    return SqliteLightningStore(path, **options)


class ServedStore(HttpLightningStore):
    """An HTTP client of a real store server (uvicorn in a background thread, on a free loopback port)
    in front of a fresh in-memory store built with the test's options; ``close()`` stops the server too."""

    def __init__(self, backing: LightningStore) -> None:
        self.server = StoreServer(backing, host="127.0.0.1", port=0, close_store=True).start()
        super().__init__(self.server.url, token=None, retry_delays=(0.05, 0.1))

    async def close(self) -> None:
        await super().close()
        self.server.stop(wait=False)  # the server thread finishes and closes the store in the background


def _http(tmp_path: Path, index: int, options: Dict[str, Any]) -> LightningStore:
    return ServedStore(InMemoryLightningStore(**options))


def _postgres(tmp_path: Path, index: int, options: Dict[str, Any]) -> LightningStore:
    # Built from its URI (options travel as URI options) without the plugin registry, which some
    # tests switch off; the plugin's own tests check that open_store finds it.
    from agentlightning_postgres.store import PostgresLightningStore

    query = {"schema": f"agl_test_{secrets.token_hex(6)}", **{k: str(v).lower() for k, v in options.items()}}
    base = os.environ["AGL_TEST_POSTGRES_URI"]
    return PostgresLightningStore.from_uri(f"{base}{'&' if '?' in base else '?'}{urlencode(query)}")


STORE_BACKENDS: Dict[str, Callable[[Path, int, Dict[str, Any]], LightningStore]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "http": _http,
}
if os.environ.get("AGL_TEST_POSTGRES_URI"):
    STORE_BACKENDS["postgres"] = _postgres


@pytest_asyncio.fixture(params=list(STORE_BACKENDS), ids=list(STORE_BACKENDS))
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Builds stores of the parametrized backend; every store built is closed after the test."""
    build = STORE_BACKENDS[request.param]
    created: List[LightningStore] = []

    def make(**options: Any) -> LightningStore:
        store = build(tmp_path, len(created), options)
        created.append(store)
        return store

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for store in reversed(created):
        await store.close()


@pytest_asyncio.fixture
async def store(store_factory: StoreFactory) -> LightningStore:
    """A fresh store of each backend, with default options."""
    return store_factory()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what a test's ``setup_logging`` call did to every logger (levels, handlers, disabled)."""
    import logging

    def loggers() -> List[logging.Logger]:
        found = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        return [logging.root, *found]

    saved = {lg.name: (lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers()}
    yield
    for logger in loggers():
        if logger.name not in saved:
            logger.handlers.clear()
            logger.setLevel(logging.NOTSET)
            continue
        _, level, handlers, propagate, disabled = saved[logger.name]
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate, logger.disabled = propagate, disabled
