"""The store's tables, as numbered migrations.

A store's tables live in one PostgreSQL schema (``?schema=`` in the URI, default ``agentlightning``),
so several stores can share a database. ``meta.schema_version`` says how many migrations ran. Opening
a store runs the missing ones in order, in one transaction, under an advisory lock (several processes
may open the same store at once); a schema newer than this package refuses to open
(:class:`~agentlightning_postgres.errors.SchemaVersionError`). A new migration is appended to
``MIGRATIONS``; released ones never change.

Each row keeps its object as JSON text (``data``, the model's own serialization, so inputs keep their
key order); the columns beside it are what queries filter, sort and lock on. Text columns sort
bytewise (``COLLATE "C"``), like Python compares strings.
"""

from __future__ import annotations

import re
from typing import Tuple

import asyncpg

from .errors import SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "check_schema_name"]

# Notifications: every write that leaves a rollout in a terminal status sends
# 'agl_rollout_finished' with payload '<schema>/<rollout_id>' when its transaction commits; stores
# waiting in wait_for_rollouts LISTEN on that channel.
NOTIFY_CHANNEL = "agl_rollout_finished"

_V1 = f"""
CREATE TABLE meta (key text PRIMARY KEY, value text);
INSERT INTO meta (key, value) VALUES ('latest_resources_id', NULL);

CREATE SEQUENCE queue_positions;

CREATE TABLE rollouts (
    rollout_id text COLLATE "C" PRIMARY KEY,
    created bigserial NOT NULL,           -- creation order: unsorted listings and ties in sorts
    status text COLLATE "C" NOT NULL,
    start_time double precision,
    end_time double precision,
    mode text COLLATE "C",
    resources_id text COLLATE "C",
    queue_position bigint,                -- set while queuing/requeuing: FIFO order of the queue
    watch_deadline double precision,      -- earliest time the watchdog may end its latest attempt
    data text NOT NULL
);
CREATE INDEX rollouts_queue ON rollouts (queue_position) WHERE queue_position IS NOT NULL;
CREATE INDEX rollouts_watch ON rollouts (watch_deadline) WHERE watch_deadline IS NOT NULL;
CREATE INDEX rollouts_created ON rollouts (created);
CREATE INDEX rollouts_status ON rollouts (status);

CREATE TABLE request_ids (
    client_request_id text PRIMARY KEY,
    rollout_id text NOT NULL
);

CREATE TABLE attempts (
    rollout_id text COLLATE "C" NOT NULL,
    attempt_id text COLLATE "C" NOT NULL,
    sequence_id integer NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id)
);
CREATE INDEX attempts_by_rollout ON attempts (rollout_id, sequence_id);

CREATE TABLE resources (
    resources_id text COLLATE "C" PRIMARY KEY,
    created bigserial NOT NULL,
    data text NOT NULL
);

CREATE TABLE workers (
    worker_id text COLLATE "C" PRIMARY KEY,
    created bigserial NOT NULL,
    data text NOT NULL
);

CREATE TABLE span_sequences (
    rollout_id text PRIMARY KEY,
    last_value bigint NOT NULL
);

CREATE TABLE spans (
    rollout_id text COLLATE "C" NOT NULL,
    attempt_id text COLLATE "C" NOT NULL,
    span_id text COLLATE "C" NOT NULL,
    created bigserial NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id, span_id)
);
CREATE INDEX spans_by_rollout ON spans (rollout_id, created);

-- Write transactions that committed, so that a client whose connection broke during COMMIT can
-- tell whether its write landed (and not apply it twice); `result` keeps what a write that is a
-- single statement returned. Rows older than an hour are dropped.
CREATE TABLE committed_transactions (
    transaction_id uuid PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT now(),
    result text
);

CREATE FUNCTION notify_rollout_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_SCHEMA || '/' || NEW.rollout_id);
    RETURN NULL;
END $$;
CREATE TRIGGER rollout_finished AFTER INSERT OR UPDATE ON rollouts FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION notify_rollout_finished();
"""

MIGRATIONS: Tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(schema: str) -> str:
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ValueError(
            f"PostgreSQL schema name must be lowercase letters, digits and underscores (at most 63, "
            f"not starting with a digit), got {schema!r}"
        )
    return schema


async def migrate(conn: asyncpg.Connection, schema: str, *, where: str) -> int:
    """Bring ``schema`` up to :data:`SCHEMA_VERSION` (creating it if needed); returns the version
    found. ``conn``'s search_path must be ``schema``. ``where`` names the database in errors."""
    async with conn.transaction():
        # One migrator at a time per schema, across processes and hosts.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agentlightning-schema:' || $1))", schema)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        has_meta = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".meta')
        found = 0
        if has_meta:
            value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
            found = int(value) if value is not None else 0
        if found > SCHEMA_VERSION:
            from . import __name__ as package

            raise SchemaVersionError(
                f"the Agent Lightning store in schema {schema!r} of {where} has schema version {found}, newer "
                f"than this {package.replace('_', '-')} understands (up to {SCHEMA_VERSION}); upgrade the "
                "agentlightning-postgres package to open it",
                found=found,
                supported=SCHEMA_VERSION,
            )
        for migration in MIGRATIONS[found:]:
            await conn.execute(migration)
        if found < SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                str(SCHEMA_VERSION),
            )
    return found
