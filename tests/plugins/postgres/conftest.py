"""A real PostgreSQL server for these tests: the one in ``AGL_TEST_POSTGRES_URI`` (the nox session
starts it), or a temporary one started here for the session."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Callable, List

import pytest
import pytest_asyncio
from pg_helpers import with_options

from agentlightning_postgres.store import PostgresLightningStore
from agentlightning_postgres.tempserver import URI_ENV_VAR, TemporaryPostgres


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    if os.environ.get(URI_ENV_VAR):
        yield os.environ[URI_ENV_VAR]
        return
    with TemporaryPostgres() as server:
        yield server.uri


@pytest.fixture
def store_uri(postgres_uri: str) -> str:
    """A URI of a store of its own (a fresh schema) in the shared server."""
    return with_options(postgres_uri, schema=f"agl_test_{secrets.token_hex(6)}")


StoreMaker = Callable[..., PostgresLightningStore]


@pytest_asyncio.fixture
async def open_stores(store_uri: str) -> AsyncIterator[StoreMaker]:
    """``make(**options)`` opens another store on the test's schema (as another process would); all
    are closed after the test."""
    stores: List[PostgresLightningStore] = []

    def make(**options: object) -> PostgresLightningStore:
        store = PostgresLightningStore.from_uri(with_options(store_uri, **options))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
