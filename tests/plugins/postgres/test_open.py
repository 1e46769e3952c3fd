"""Opening a PostgreSQL store: the URI through the plugin registry, typed errors naming the server and
database, and versioned schema migrations."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
from pg_helpers import connect, with_options

from agentlightning import plugins
from agentlightning.errors import StoreAuthError, StoreUnavailableError
from agentlightning.store import open_store
from agentlightning_postgres import PostgresAuthError, PostgresUnavailableError, SchemaVersionError
from agentlightning_postgres.schema import SCHEMA_VERSION
from agentlightning_postgres.store import PostgresLightningStore

pytestmark = pytest.mark.postgres


def _replace(uri: str, *, password: str | None = None, port: int | None = None, database: str | None = None) -> str:
    parts = urlsplit(uri)
    user = parts.username or ""
    netloc = f"{user}:{password if password is not None else parts.password}@{parts.hostname}:{port or parts.port}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


async def test_open_store_finds_the_backend_through_the_plugin_entry_point(store_uri: str) -> None:
    plugins.reset_plugin_manager()
    try:
        for uri in (store_uri, store_uri.replace("postgresql://", "postgres://", 1)):
            store = open_store(uri)
            try:
                assert isinstance(store, PostgresLightningStore)
                rollout = await store.enqueue_rollout(input={"q": 1})
                assert (await store.get_rollout_by_id(rollout.rollout_id)) is not None
            finally:
                await store.close()
        broken = [(info.name, info.error) for info in plugins.list_plugins() if info.error]
        assert broken == []
    finally:
        plugins.reset_plugin_manager()


def test_a_server_that_is_down_gives_a_typed_error_naming_host_and_database(postgres_uri: str) -> None:
    port = _closed_port()
    with pytest.raises(PostgresUnavailableError) as caught:
        PostgresLightningStore.from_uri(_replace(postgres_uri, port=port))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "database 'agl'" in message
    assert isinstance(caught.value, StoreUnavailableError)
    assert (caught.value.host, caught.value.port, caught.value.database) == ("127.0.0.1", port, "agl")


def test_a_refused_login_gives_a_typed_error_naming_user_host_and_database(postgres_uri: str) -> None:
    with pytest.raises(PostgresAuthError) as caught:
        PostgresLightningStore.from_uri(_replace(postgres_uri, password="wrong-password"))
    message = str(caught.value)
    port = urlsplit(postgres_uri).port
    assert f"127.0.0.1:{port}" in message and "database 'agl'" in message and "user 'agl'" in message
    assert "password" in message  # the server's own reason
    assert isinstance(caught.value, StoreAuthError)


def test_a_missing_database_is_named(postgres_uri: str) -> None:
    with pytest.raises(PostgresUnavailableError, match="database 'no_such_db'.*does not exist"):
        PostgresLightningStore.from_uri(_replace(postgres_uri, database="no_such_db"))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("schema=Bad-Name", "schema name"),
        ("watchdog=maybe", "watchdog must be true or false"),
        ("retry_seconds=soon", "retry_seconds must be a number, got 'soon'"),
    ],
)
def test_bad_uri_options_are_named(postgres_uri: str, option: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PostgresLightningStore.from_uri(f"{postgres_uri}?{option}")


async def test_reopening_keeps_the_data_and_the_schema_version(store_uri: str) -> None:
    store = PostgresLightningStore.from_uri(store_uri)
    rollout = await store.enqueue_rollout(input={"keep": [1, 2, 3], "z": 1, "a": 2})
    await store.close()
    again = PostgresLightningStore.from_uri(store_uri)
    try:
        got = await again.get_rollout_by_id(rollout.rollout_id)
        assert got is not None and got.input == {"keep": [1, 2, 3], "z": 1, "a": 2}
        assert list(got.input) == ["keep", "z", "a"]  # key order kept
        conn = await connect(store_uri)
        try:
            version = await conn.fetchval(f"SELECT value FROM {again.schema}.meta WHERE key = 'schema_version'")
        finally:
            await conn.close()
        assert version == str(SCHEMA_VERSION)
    finally:
        await again.close()


async def test_a_newer_schema_refuses_to_open_with_a_clear_error(store_uri: str) -> None:
    store = PostgresLightningStore.from_uri(store_uri)
    await store.close()
    conn = await connect(store_uri)
    try:
        await conn.execute(
            f"UPDATE {store.schema}.meta SET value = $1 WHERE key = 'schema_version'", str(SCHEMA_VERSION + 1)
        )
    finally:
        await conn.close()
    with pytest.raises(SchemaVersionError) as caught:
        PostgresLightningStore.from_uri(store_uri)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message and f"up to {SCHEMA_VERSION}" in message
    assert store.schema in message and "upgrade the agentlightning-postgres package" in message
    assert (caught.value.found, caught.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)


async def test_processes_opening_a_new_store_at_once_migrate_it_once(store_uri: str) -> None:
    # Eight openers race on a schema that does not exist yet; the advisory lock lets one create it.
    loop = asyncio.get_running_loop()
    stores = await asyncio.gather(
        *(loop.run_in_executor(None, PostgresLightningStore.from_uri, store_uri) for _ in range(8))
    )
    try:
        created = await asyncio.gather(*(s.enqueue_rollout(input=i) for i, s in enumerate(stores)))
        listed = await stores[0].query_rollouts()
        assert sorted(r.rollout_id for r in listed) == sorted(r.rollout_id for r in created)
    finally:
        for store in stores:
            await store.close()


def test_options_reach_the_store(postgres_uri: str) -> None:
    store = PostgresLightningStore.from_uri(
        with_options(postgres_uri, schema="agl_options", watchdog=False, scan_debounce_seconds=0.5, pool_size=3)
    )
    try:
        assert (store.schema, store._watchdog, store._scan_debounce_seconds, store.pool_size) == (
            "agl_options",
            False,
            0.5,
            3,
        )
        assert "agl_options" in repr(store) and "wrong" not in repr(store)
    finally:
        asyncio.run(store.close())


def test_the_plugin_module_loads_neither_asyncpg_nor_the_store() -> None:
    code = (
        "import sys, agentlightning_postgres, agentlightning_postgres.plugin\n"
        "loaded = sorted(m for m in ('asyncpg', 'agentlightning_postgres.store') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
