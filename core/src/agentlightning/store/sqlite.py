"""``sqlite:///path.db``: the embedded default store. Durable, WAL, group commit.

Rollouts, attempts, the queue, resources and workers are mirrored in memory (the status machine
runs there, so it is fast) and written through to SQLite; spans live only in SQLite. A single
writer thread commits whatever accumulated while the previous transaction ran (group commit), and
a call returns only after the transaction holding its writes committed: with WAL, a write that a
call acknowledged survives the process being killed.

One process writes a database at a time (enforced with a lock file); any number of processes can
read it concurrently, e.g. ``agl store stats sqlite:///run/store.db`` during a run, which opens it
read-only (``?mode=ro``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from agentlightning.errors import AgentLightningError, StoreClosedError
from agentlightning.types import Attempt, PaginatedResult, ResourcesUpdate, Rollout, Span, Worker

from .engine import SpanInsertResult, SpanQuery, StoreEngine

__all__ = ["SqliteLightningStore", "StoreLockedError"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY, status TEXT NOT NULL, start_time REAL, end_time REAL,
    mode TEXT, resources_id TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS request_ids (client_request_id TEXT PRIMARY KEY, rollout_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    rollout_id TEXT NOT NULL, attempt_id TEXT NOT NULL, sequence_id INTEGER NOT NULL, status TEXT NOT NULL,
    start_time REAL, end_time REAL, worker_id TEXT, data TEXT NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (position INTEGER PRIMARY KEY, rollout_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    resources_id TEXT PRIMARY KEY, version INTEGER NOT NULL, update_time REAL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (worker_id TEXT PRIMARY KEY, status TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS span_sequences (rollout_id TEXT PRIMARY KEY, last_value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spans (
    rollout_id TEXT NOT NULL, attempt_id TEXT NOT NULL, span_id TEXT NOT NULL, sequence_id INTEGER NOT NULL,
    trace_id TEXT, parent_id TEXT, name TEXT, start_time REAL, end_time REAL, data TEXT NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id, span_id));
"""

SCHEMA_VERSION = "1"

_UPSERTS = {
    "rollout": (
        "INSERT INTO rollouts (rollout_id, status, start_time, end_time, mode, resources_id, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rollout_id) DO UPDATE SET status=excluded.status, "
        "start_time=excluded.start_time, end_time=excluded.end_time, mode=excluded.mode, "
        "resources_id=excluded.resources_id, data=excluded.data"
    ),
    "attempt": (
        "INSERT INTO attempts (rollout_id, attempt_id, sequence_id, status, start_time, end_time, worker_id, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rollout_id, attempt_id) DO UPDATE SET status=excluded.status, "
        "end_time=excluded.end_time, worker_id=excluded.worker_id, data=excluded.data"
    ),
    "queue_push": "INSERT INTO queue (position, rollout_id) VALUES (?, ?)",
    "queue_pop": "DELETE FROM queue WHERE position = ?",
    "resources": (
        "INSERT INTO resources (resources_id, version, update_time, data) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(resources_id) DO UPDATE SET version=excluded.version, update_time=excluded.update_time, "
        "data=excluded.data"
    ),
    "latest_resources": "INSERT OR REPLACE INTO meta (key, value) VALUES ('latest_resources_id', ?)",
    "worker": (
        "INSERT INTO workers (worker_id, status, data) VALUES (?, ?, ?) "
        "ON CONFLICT(worker_id) DO UPDATE SET status=excluded.status, data=excluded.data"
    ),
    "sequence": (
        "INSERT INTO span_sequences (rollout_id, last_value) VALUES (?, ?) ON CONFLICT(rollout_id) "
        "DO UPDATE SET last_value=MAX(last_value, excluded.last_value)"
    ),
    "request_id": "INSERT OR IGNORE INTO request_ids (client_request_id, rollout_id) VALUES (?, ?)",
}
INSERT_SPANS_PREFIX = (
    "INSERT OR IGNORE INTO spans (rollout_id, attempt_id, span_id, sequence_id, trace_id, parent_id, name, "
    "start_time, end_time, data) VALUES "
)
_SPAN_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SPANS_PER_STATEMENT = 3000  # 10 parameters each, below SQLite's 32766-variable limit
# Keys whose latest state is all that matters: recording them twice before a commit writes once.
_COALESCED = frozenset({"rollout", "attempt", "resources", "worker", "sequence"})
_SPAN_COLUMNS = {"trace_id", "span_id", "parent_id", "name"}


def _resolve(loop: asyncio.AbstractEventLoop, future: "asyncio.Future[None]", error: Optional[BaseException]) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        settle()
    else:
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # that caller's loop is closed; nobody waits for this future
            pass


def _insert_span_rows(conn: sqlite3.Connection, spans: Sequence[Span]) -> List[bool]:
    """Insert spans, skipping keys already stored; one flag per span (True = inserted)."""
    flags = [False] * len(spans)
    for start in range(0, len(spans), _SPANS_PER_STATEMENT):
        chunk = spans[start : start + _SPANS_PER_STATEMENT]
        sql = INSERT_SPANS_PREFIX + ", ".join([_SPAN_PLACEHOLDERS] * len(chunk)) + " RETURNING attempt_id, span_id"
        params = [value for span in chunk for value in _span_row(span)]
        # RETURNING yields only the rows actually inserted; map them back to positions.
        positions: Dict[Tuple[str, str], List[int]] = {}
        for offset, span in enumerate(chunk):
            positions.setdefault((span.attempt_id, span.span_id), []).append(start + offset)
        for attempt_id, span_id in conn.execute(sql, params).fetchall():
            flags[positions[(attempt_id, span_id)][0]] = True
    return flags


class StoreLockedError(AgentLightningError, RuntimeError):
    """Another process has this SQLite store open for writing."""


def _row(kind: str, payload: Any) -> Tuple[Any, ...]:
    if kind == "rollout":
        r: Rollout = payload
        return (r.rollout_id, r.status, r.start_time, r.end_time, r.mode, r.resources_id, r.model_dump_json())
    if kind == "attempt":
        a: Attempt = payload
        return (a.rollout_id, a.attempt_id, a.sequence_id, a.status, a.start_time, a.end_time, a.worker_id,
                a.model_dump_json())
    if kind in ("queue_pop", "latest_resources"):
        return (payload,)
    if kind == "queue_push":
        return tuple(payload)
    if kind == "resources":
        u: ResourcesUpdate = payload
        return (u.resources_id, u.version, u.update_time, u.model_dump_json())
    if kind == "worker":
        w: Worker = payload
        return (w.worker_id, w.status, w.model_dump_json())
    if kind == "sequence":
        return tuple(payload)
    if kind == "request_id":
        key, rollout_id = payload
        return (key, rollout_id)
    raise AssertionError(f"unknown write kind {kind!r}")


def _span_row(span: Span) -> Tuple[Any, ...]:
    return (span.rollout_id, span.attempt_id, span.span_id, span.sequence_id, span.trace_id, span.parent_id,
            span.name, span.start_time, span.end_time, span.model_dump_json())


class SqliteLightningStore(StoreEngine):
    """A durable store in one SQLite file (WAL). See the module docstring for the guarantees."""

    backend_name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        watchdog: bool = True,
        scan_debounce_seconds: float = 1.0,
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        super().__init__(watchdog=watchdog and not read_only, scan_debounce_seconds=scan_debounce_seconds)
        self.path = Path(path)
        self.read_only = read_only
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._readers = threading.local()
        self._reader_connections: List[sqlite3.Connection] = []
        self._lock_file: Optional[Any] = None
        self._pending: Dict[Tuple[str, Any], Any] = {}
        self._pending_spans: List[Tuple[List[Span], "concurrent.futures.Future[List[bool]]"]] = []
        self._op_counter = 0
        self._recorded = 0
        self._committed = 0
        self._flush_waiters: List[Tuple[int, asyncio.AbstractEventLoop, "asyncio.Future[None]"]] = []
        self._scheduled_loops: Set[asyncio.AbstractEventLoop] = set()
        self._commit_lock = threading.Lock()
        self._writer: Optional[sqlite3.Connection] = None
        self._writer_error: Optional[BaseException] = None
        self._span_count = 0
        self._queue_positions: Dict[str, int] = {}
        self._queue_tail = 0

        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"SQLite store {str(self.path)!r} does not exist")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._acquire_write_lock()
        try:
            with self._lock:
                self._load()
        except BaseException:
            self._release_write_lock()
            raise

    @classmethod
    def from_uri(cls, uri: str) -> "SqliteLightningStore":
        """``sqlite:///relative.db``, ``sqlite:////abs/path.db``; ``?mode=ro`` opens read-only."""
        parts = urlsplit(uri)
        if parts.scheme != "sqlite":
            raise ValueError(f"not a sqlite:// URI: {uri!r}")
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"sqlite URIs name a local file (sqlite:///path.db), got host {parts.netloc!r} in {uri!r}")
        path = unquote(parts.path)
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValueError(f"sqlite URI {uri!r} names no file; use sqlite:///path/to/store.db")
        options = parse_qs(parts.query)
        mode = options.get("mode", ["rw"])[0]
        if mode not in ("rw", "ro"):
            raise ValueError(f"sqlite URI option mode must be 'rw' or 'ro', got {mode!r}")
        return cls(path, read_only=mode == "ro")

    # ---------------------------------------------------------------------------------------------
    # connections and locking
    def _connect(self, *, for_writer: bool) -> sqlite3.Connection:
        if self.read_only:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                   isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        if for_writer:
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL with WAL: a committed transaction survives a process crash (not a power cut).
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint less often: hot pages (queue, workers) are copied back once per 40 MB of WAL.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA cache_size = -65536")
        return conn

    def _acquire_write_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no cross-process guard
            return
        handle = open(f"{self.path}.lock", "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreLockedError(
                f"SQLite store {str(self.path)!r} is open for writing in another process; open it read-only "
                f"(sqlite:///{self.path}?mode=ro) or reach it through that process's store server"
            ) from None
        self._lock_file = handle

    def _release_write_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _reader(self) -> sqlite3.Connection:
        conn: Optional[sqlite3.Connection] = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._connect(for_writer=False)
            self._readers.conn = conn
            with self._lock:
                self._reader_connections.append(conn)
        return conn

    # ---------------------------------------------------------------------------------------------
    # loading
    def _load(self) -> None:
        conn = self._connect(for_writer=not self.read_only)
        try:
            if not self.read_only:
                conn.executescript(SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None or version[0] != SCHEMA_VERSION:
                raise AgentLightningError(
                    f"{str(self.path)!r} is not an Agent Lightning store (schema version {version!r})"
                )
            for (data,) in conn.execute("SELECT data FROM rollouts ORDER BY rowid"):
                rollout = Rollout.model_validate_json(data)
                self._rollouts[rollout.rollout_id] = rollout
            for key, rollout_id in conn.execute("SELECT client_request_id, rollout_id FROM request_ids"):
                self._request_ids[key] = rollout_id
            for (data,) in conn.execute("SELECT data FROM attempts ORDER BY rollout_id, sequence_id"):
                attempt = Attempt.model_validate_json(data)
                self._attempts.setdefault(attempt.rollout_id, []).append(attempt)
            for position, rollout_id in conn.execute("SELECT position, rollout_id FROM queue ORDER BY position"):
                self._queue.append(rollout_id)
                self._queued.add(rollout_id)
                self._queue_positions[rollout_id] = position
                self._queue_tail = position
            for (data,) in conn.execute("SELECT data FROM resources ORDER BY rowid"):
                update = ResourcesUpdate.model_validate_json(data)
                self._resources[update.resources_id] = update
            latest = conn.execute("SELECT value FROM meta WHERE key = 'latest_resources_id'").fetchone()
            self._latest_resources_id = latest[0] if latest else None
            for (data,) in conn.execute("SELECT data FROM workers ORDER BY rowid"):
                worker = Worker.model_validate_json(data)
                self._workers[worker.worker_id] = worker
            for rollout_id, value in conn.execute("SELECT rollout_id, last_value FROM span_sequences"):
                self._span_sequence[rollout_id] = value
            self._span_count = conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
        finally:
            conn.close()
        self._live = {r.rollout_id for r in self._rollouts.values() if r.status in ("preparing", "running")}

    # ---------------------------------------------------------------------------------------------
    # writes
    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreClosedError(f"SQLite store {str(self.path)!r} was opened read-only")
        if self._writer_error is not None:
            raise StoreClosedError(f"SQLite store {str(self.path)!r} stopped writing: {self._writer_error!r}")

    def _check_open(self) -> None:
        super()._check_open()
        self._check_writable()

    def _record(self, kind: str, payload: Any) -> None:
        if kind in _COALESCED:
            key: Any = payload[0] if kind == "sequence" else (
                (payload.rollout_id, payload.attempt_id) if kind == "attempt" else
                getattr(payload, {"rollout": "rollout_id", "resources": "resources_id", "worker": "worker_id"}[kind])
            )
        else:
            self._op_counter += 1
            key = self._op_counter
            # The queue's row positions are ours, so a pop deletes by primary key.
            if kind == "queue_push":
                self._queue_tail += 1
                self._queue_positions[payload] = self._queue_tail
                payload = (self._queue_tail, payload)
            elif kind == "queue_pop":
                payload = self._queue_positions.pop(payload)
        self._pending[(kind, key)] = payload
        if kind == "resources":
            self._op_counter += 1
            self._pending[("latest_resources", self._op_counter)] = payload.resources_id
        self._recorded += 1

    def _insert_spans(self, spans: Sequence[Span]) -> SpanInsertResult:
        future: "concurrent.futures.Future[List[bool]]" = concurrent.futures.Future()
        self._pending_spans.append((list(spans), future))
        self._recorded += 1
        return future

    async def _flush(self) -> None:
        """Group commit: the first caller on a loop schedules one commit for everything recorded so
        far (by any thread); callers arriving before it runs ride along in the same transaction."""
        loop = asyncio.get_running_loop()
        with self._lock:
            target = self._recorded
            if self._committed >= target:
                return
            future: "asyncio.Future[None]" = loop.create_future()
            self._flush_waiters.append((target, loop, future))
            schedule = loop not in self._scheduled_loops
            self._scheduled_loops.add(loop)
        if schedule:
            loop.call_soon(self._commit, loop)
        await future

    def _commit(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        with self._lock:
            self._scheduled_loops.discard(loop)
        with self._commit_lock:  # one transaction at a time, whichever thread runs it
            with self._lock:
                # Serialize under the lock: the objects keep changing once it is released.
                rows = [(kind, _row(kind, payload)) for (kind, _), payload in self._pending.items()]
                span_batches = self._pending_spans
                self._pending, self._pending_spans = {}, []
                upto = self._recorded
            error: Optional[BaseException] = None
            span_flags: List[List[bool]] = []
            if rows or span_batches:
                conn = self._writer_connection()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    for kind, group in itertools.groupby(rows, key=lambda item: item[0]):
                        conn.executemany(_UPSERTS[kind], [row for _, row in group])
                    for spans, _ in span_batches:
                        span_flags.append(_insert_span_rows(conn, spans))
                    conn.execute("COMMIT")
                except Exception as exc:  # disk full, I/O error: fail the callers, stop accepting writes
                    logger.exception("SQLite store %s failed to commit", self.path)
                    error = exc
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            with self._lock:
                if error is not None:
                    self._writer_error = error
                else:
                    self._span_count += sum(sum(flags) for flags in span_flags)
                self._committed = max(self._committed, upto)
                ready = [w for w in self._flush_waiters if w[0] <= self._committed]
                self._flush_waiters = [w for w in self._flush_waiters if w[0] > self._committed]
        failure = StoreClosedError(f"SQLite write to {str(self.path)!r} failed: {error!r}") if error else None
        for index, (_, span_future) in enumerate(span_batches):
            if failure is not None:
                span_future.set_exception(failure)
            else:
                span_future.set_result(span_flags[index])
        for _, waiter_loop, waiter in ready:
            _resolve(waiter_loop, waiter, failure)

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect(for_writer=True)
        return self._writer

    # ---------------------------------------------------------------------------------------------
    # spans
    async def _select_spans(self, query: SpanQuery) -> PaginatedResult[Span]:
        where = ["rollout_id = ?"]
        params: List[Any] = [query.rollout_id]
        if query.attempt_id is not None:
            where.append("attempt_id = ?")
            params.append(query.attempt_id)
        clauses: List[str] = []
        for key, (kind, value) in query.filters.items():
            column = key.rstrip("~")
            assert column in _SPAN_COLUMNS
            if kind == "exact":
                clauses.append(f"{column} = ?")
                params.append(value)
            else:
                clauses.append(f"instr({column}, ?) > 0")
                params.append(value)
        if clauses:
            joiner = " OR " if query.filter_logic == "or" else " AND "
            where.append(f"({joiner.join(clauses)})")
        sql_where = " AND ".join(where)
        conn = self._reader()
        total = conn.execute(f"SELECT COUNT(*) FROM spans WHERE {sql_where}", params).fetchone()[0]
        order = ""
        if query.sort_by is not None:
            direction = "DESC" if query.sort_order == "desc" else "ASC"
            # NULLs first ascending, like the in-memory sort
            order = f" ORDER BY {query.sort_by} IS NOT NULL {direction}, {query.sort_by} {direction}, rowid {direction}"
        elif query.sort_order == "desc":
            order = " ORDER BY rowid DESC"
        page = f" LIMIT {int(query.limit)} OFFSET {int(query.offset)}"
        rows = conn.execute(f"SELECT data FROM spans WHERE {sql_where}{order}{page}", params).fetchall()
        return PaginatedResult(
            items=[Span.model_validate_json(data) for (data,) in rows],
            limit=query.limit,
            offset=query.offset,
            total=total,
        )

    def _count_spans(self) -> int:
        return self._span_count

    async def close(self) -> None:
        await super().close()
        self._commit()  # nothing acknowledged is pending, but be thorough with unawaited writes
        with self._commit_lock, self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        self._release_write_lock()
