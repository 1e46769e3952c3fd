"""``sqlite:///path.db``: the embedded default store. Durable (a journal written before a call
returns), WAL, group commit; one writer process, any number of read-only readers (design notes: ``docs/internals.md``)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import pickle
import sqlite3
import struct
import threading
import time
import weakref
from collections import OrderedDict
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from agentlightning.errors import AgentLightningError, StoreClosedError
from agentlightning.types import Attempt, PaginatedResult, ResourcesUpdate, Rollout, RolloutConfig, Span, Worker

from .engine import MAX_ANSWERS, SpanInsertResult, SpanQuery, StoreEngine, _construct
from .memory import PackedSpan, pack_span, select_packed_spans

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
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, expires REAL NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_expiry ON answers (expires);
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
    "queue_push": "INSERT OR REPLACE INTO queue (position, rollout_id) VALUES (?, ?)",
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
    "answer": "INSERT OR REPLACE INTO answers (key, expires, data) VALUES (?, ?, ?)",
}
_UPSERTS["span"] = (
    "INSERT OR IGNORE INTO spans (rollout_id, attempt_id, span_id, sequence_id, trace_id, parent_id, name, "
    "start_time, end_time, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_SAFETY_COMMIT_SECONDS = 1.0
JournalOp = Tuple[str, Any, Any]  # (kind, coalescing key or None, snapshot)
_RECORD_HEADER = struct.Struct("<I")  # journal record: 4-byte length, then a pickled list of (kind, row)
# Writes whose latest state is all that matters, by their key: recording one twice before a commit writes once.
_COALESCE_KEYS: Dict[str, Callable[[Any], Any]] = {
    "rollout": lambda rollout: rollout.rollout_id,
    "attempt": lambda attempt: (attempt.rollout_id, attempt.attempt_id),
    "resources": lambda update: update.resources_id,
    "worker": lambda worker: worker.worker_id,
    "sequence": lambda row: row[0],
}
_SPAN_COLUMNS = {"trace_id", "span_id", "parent_id", "name"}
_SPAN_EXISTS = "SELECT 1 FROM spans WHERE rollout_id = ? AND attempt_id = ? AND span_id = ?"


class StoreLockedError(AgentLightningError, RuntimeError):
    """Another process has this SQLite store open for writing."""


_MODELS: Dict[str, Any] = {"rollout": Rollout, "attempt": Attempt, "resources": ResourcesUpdate, "worker": Worker}


def _snapshot(kind: str, payload: Any) -> Any:
    """What the journal keeps of a write: a model's fields (cheap to pickle), else the payload.

    Shallow is enough: the engine replaces nested values (config, metadata) instead of mutating them."""
    if kind == "answer":  # (idempotency key, expiry, the call's result: a model or a list of them)
        key, expires, result = payload
        return (key, expires, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    if kind not in _MODELS:
        return payload
    fields = dict(payload.__dict__)
    if kind == "rollout":  # pickling a pydantic model is slow; its fields are not
        fields["config"] = dict(fields["config"].__dict__)
    return fields


# The leading columns of each model's table (see _UPSERTS), read from its fields; ``data`` (the JSON) comes last.
_COLUMNS = {
    "rollout": ("rollout_id", "status", "start_time", "end_time", "mode", "resources_id"),
    "attempt": ("rollout_id", "attempt_id", "sequence_id", "status", "start_time", "end_time", "worker_id"),
    "resources": ("resources_id", "version", "update_time"),
    "worker": ("worker_id", "status"),
    "span": (
        "rollout_id",
        "attempt_id",
        "span_id",
        "sequence_id",
        "trace_id",
        "parent_id",
        "name",
        "start_time",
        "end_time",
    ),
}


def _row(kind: str, snapshot: Any) -> Tuple[Any, ...]:
    """The SQL parameters of one journaled write."""
    if kind in _MODELS:
        fields = dict(snapshot)
        if kind == "rollout":
            fields["config"] = _construct(RolloutConfig, dict(fields["config"]))
        data = _construct(_MODELS[kind], fields).model_dump_json()
        return (*(snapshot[column] for column in _COLUMNS[kind]), data)
    if kind in ("queue_pop", "latest_resources"):
        return (snapshot,)
    return tuple(snapshot)  # queue_push, sequence, request_id, span, answer: already parameter tuples


_SPAN_COLUMN_VALUES = itemgetter(*_COLUMNS["span"])


def _span_row(span: Span) -> Tuple[Any, ...]:
    return (*_SPAN_COLUMN_VALUES(span.__dict__), span.model_dump_json())


class SqliteLightningStore(StoreEngine):
    """A durable store in one SQLite file (WAL); its guarantees are in ``docs/internals.md``."""

    backend_name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        watchdog: bool = True,
        scan_debounce_seconds: float = 1.0,
        busy_timeout_seconds: float = 30.0,
        commit_interval: float = 0.2,
        span_cache_size: int = 50_000,
    ) -> None:
        super().__init__(watchdog=watchdog and not read_only, scan_debounce_seconds=scan_debounce_seconds)
        self.path = Path(path)
        self.read_only = read_only
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._readers = threading.local()
        self._reader_connections: List[sqlite3.Connection] = []
        self._lock_file: Optional[Any] = None
        self.commit_interval = commit_interval
        self._journal_path = Path(f"{self.path}-agl-journal")
        self._journal_fd: Optional[int] = None
        # Writes recorded under the lock, not yet journaled: (kind, key) -> object (latest state wins).
        self._pending: Dict[Tuple[str, Any], Any] = {}
        self._pending_span_rows: List[Tuple[Any, ...]] = []
        self._op_counter = 0
        # Journaled, not yet in SQLite: the next batch to commit.
        self._batch: List[JournalOp] = []
        self._uncommitted_spans: Dict[Tuple[str, str, str], int] = {}  # span key -> batch generation
        self._batch_generation = 0
        # Spans of recently active rollouts, complete per rollout, so reading them back (what an
        # algorithm does right after a rollout finishes) needs no SQL.
        self.span_cache_size = span_cache_size
        self._span_cache: "OrderedDict[str, Dict[Tuple[str, str], PackedSpan]]" = OrderedDict()
        self._cached_spans = 0
        self._rollouts_in_db: Set[str] = set()  # rollouts whose spans are looked up in SQLite
        self._unsettled_rollouts: Dict[str, int] = {}  # rollouts with spans not committed yet
        self._commit_lock = threading.Lock()
        self._writer_wakeup = threading.Condition(self._lock)
        self._writer_thread: Optional[threading.Thread] = None
        self._writer: Optional[sqlite3.Connection] = None
        self._writer_error: Optional[BaseException] = None
        self._stopping = False
        self._commit_loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()
        self._batch_started = 0.0
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
            if not read_only:
                self._replay_journal()
            with self._lock:
                self._load()
        except BaseException:
            self._release_write_lock()
            raise
        if not read_only:
            self._journal_fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._writer_thread = threading.Thread(
                target=self._write_loop, name=f"agl-sqlite-writer:{self.path.name}", daemon=True
            )
            self._writer_thread.start()
            # A store never closed (a script that just ends) still lands its last batch in SQLite.
            atexit.register(_commit_at_exit, weakref.ref(self))

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
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
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
        handle = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held open for the store's lifetime
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

            def rows(model: Any, table: str, order: str = "rowid") -> List[Any]:
                return [
                    model.model_validate_json(data)
                    for (data,) in conn.execute(f"SELECT data FROM {table} ORDER BY {order}")
                ]

            self._rollouts.update((rollout.rollout_id, rollout) for rollout in rows(Rollout, "rollouts"))
            self._request_ids.update(conn.execute("SELECT client_request_id, rollout_id FROM request_ids"))
            for attempt in rows(Attempt, "attempts", "rollout_id, sequence_id"):
                self._attempts.setdefault(attempt.rollout_id, []).append(attempt)
            for position, rollout_id in conn.execute("SELECT position, rollout_id FROM queue ORDER BY position"):
                self._queue.append(rollout_id)
                self._queued.add(rollout_id)
                self._queue_positions[rollout_id] = position
                self._queue_tail = position
            self._resources.update((update.resources_id, update) for update in rows(ResourcesUpdate, "resources"))
            latest = conn.execute("SELECT value FROM meta WHERE key = 'latest_resources_id'").fetchone()
            self._latest_resources_id = latest[0] if latest else None
            self._workers.update((worker.worker_id, worker) for worker in rows(Worker, "workers"))
            self._span_sequence.update(conn.execute("SELECT rollout_id, last_value FROM span_sequences"))
            if not self.read_only:  # answers of idempotency keys: only writers use them (older files lack them)
                answers = conn.execute(
                    "SELECT key, expires, data FROM answers WHERE expires >= ? ORDER BY expires DESC LIMIT ?",
                    (time.time(), MAX_ANSWERS),
                ).fetchall()
                for key, expires, data in reversed(answers):
                    self._answers[key] = (expires, pickle.loads(data))
            self._span_count = conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0]
            self._rollouts_in_db = {
                rollout_id for (rollout_id,) in conn.execute("SELECT DISTINCT rollout_id FROM spans")
            }
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
        coalesce = _COALESCE_KEYS.get(kind)
        if coalesce is not None:
            key: Any = coalesce(payload)
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

    def _insert_spans(self, spans: Sequence[Span]) -> SpanInsertResult:
        """Dedupe against cached, journaled and committed spans, then record the new ones (lock held)."""
        flags: List[bool] = []
        for span in spans:
            rollout_id = span.rollout_id
            key = (rollout_id, span.attempt_id, span.span_id)
            cached = self._span_cache.get(rollout_id)
            if cached is None and rollout_id not in self._rollouts_in_db:
                cached = self._span_cache[rollout_id] = {}  # first span of a rollout: the cache has them all
            if cached is not None:
                duplicate = (span.attempt_id, span.span_id) in cached
            else:  # only rollouts evicted from the cache (or from an earlier run) need the database
                duplicate = key in self._uncommitted_spans or (
                    self._reader().execute(_SPAN_EXISTS, key).fetchone() is not None
                )
            if not duplicate:
                if cached is not None:
                    cached[(span.attempt_id, span.span_id)] = pack_span(span)
                    self._cached_spans += 1
                self._uncommitted_spans[key] = self._batch_generation
                self._unsettled_rollouts[rollout_id] = self._batch_generation
                self._pending_span_rows.append(_span_row(span))
                self._span_count += 1
            flags.append(not duplicate)
        self._evict_spans()
        return flags

    def _evict_spans(self) -> None:
        """Keep at most ``span_cache_size`` spans cached, dropping the least recently used rollouts."""
        while self._cached_spans > self.span_cache_size and self._span_cache:
            rollout_id, evicted = self._span_cache.popitem(last=False)
            self._cached_spans -= len(evicted)
            self._rollouts_in_db.add(rollout_id)  # from now on its spans are looked up in SQLite

    async def _flush(self) -> None:
        """Journal everything recorded so far: once this returns, those writes survive a kill."""
        with self._lock:
            if not self._pending and not self._pending_span_rows:
                return
            # Serialize under the lock: the objects keep changing once it is released.
            ops = [(kind, key, _snapshot(kind, payload)) for (kind, key), payload in self._pending.items()]
            ops.extend(("span", None, row) for row in self._pending_span_rows)
            self._pending, self._pending_span_rows = {}, []
            if not self._batch:
                self._batch_started = time.monotonic()
            blob = pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL)
            record = _RECORD_HEADER.pack(len(blob)) + blob
            try:
                _write_all(self._journal_fd, record)
            except OSError as exc:  # disk full: this write is not acknowledged, and no later one will be
                self._writer_error = exc
                raise StoreClosedError(f"cannot journal writes to {str(self._journal_path)!r}: {exc}") from exc
            self._batch.extend(ops)
            due = time.monotonic() - self._batch_started >= self.commit_interval
            loop = asyncio.get_running_loop()
            schedule = not due and loop not in self._commit_loops
            if schedule:
                self._commit_loops.add(loop)
        # Commits run on the writers' own threads (a writer thread would fight them for the GIL):
        # inline once the batch is ``commit_interval`` old, so busy writers commit regularly even
        # if they never yield to their loop, and on a loop timer for the last writes before a
        # pause. A loop that closes before its timer fires leaves the batch to the next commit
        # or to the safety-net thread.
        if due:
            self._commit_batch()
        elif schedule:
            loop.call_later(self.commit_interval, self._commit_from_loop, loop)

    def _commit_from_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._commit_loops.discard(loop)
        self._commit_batch()

    async def sync(self) -> None:
        """Commit every acknowledged write to the database now, for other processes reading it."""
        await self._flush()
        self._commit_batch()

    def _write_loop(self) -> None:
        """Safety net: commit a batch that no loop committed (its loop stopped) within a second."""
        while True:
            with self._lock:
                if not self._stopping:
                    self._writer_wakeup.wait(_SAFETY_COMMIT_SECONDS)
                stopping = self._stopping
                stale = bool(self._batch) and time.monotonic() - self._batch_started > _SAFETY_COMMIT_SECONDS
            if stale or stopping:
                self._commit_batch()
            if stopping:
                return

    def _commit_batch(self) -> None:
        """Commit the current batch in one transaction, then drop the journal that held it."""
        with self._commit_lock:
            with self._lock:
                if not self._batch or self._writer_error is not None:
                    return
                batch, self._batch = self._batch, []
                generation = self._batch_generation
                self._batch_generation += 1
                # Later writes go to a fresh journal, so this one can be deleted once committed.
                sealed = self._journal_path.with_name(f"{self._journal_path.name}.{generation}")
                os.rename(self._journal_path, sealed)
                old_fd = self._journal_fd
                self._journal_fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if old_fd is not None:
                os.close(old_fd)
            try:
                _apply(self._writer_connection(), batch)
            except Exception as exc:  # disk full, I/O error: stop accepting writes; the journal keeps them
                logger.exception("SQLite store %s failed to commit; its journal keeps the writes", self.path)
                with self._lock:
                    self._writer_error = exc
                return
            sealed.unlink()
            with self._lock:
                for key, seen in list(self._uncommitted_spans.items()):
                    if seen <= generation:
                        del self._uncommitted_spans[key]
                for rollout_id, seen in list(self._unsettled_rollouts.items()):
                    if seen <= generation:
                        del self._unsettled_rollouts[rollout_id]

    def _replay_journal(self) -> None:
        """Apply journals a previous process left (acknowledged writes it never committed)."""
        journals = sorted(
            self.path.parent.glob(f"{self._journal_path.name}.*"), key=lambda p: int(p.suffix.lstrip(".") or 0)
        )
        if self._journal_path.exists():
            journals.append(self._journal_path)
        if not journals:
            return
        ops: List[JournalOp] = []
        for journal in journals:
            ops.extend(_read_journal(journal))
        conn = self._connect(for_writer=True)
        try:
            conn.executescript(SCHEMA)
            _apply(conn, ops)
        finally:
            conn.close()
        for journal in journals:
            journal.unlink()
        logger.info("replayed %d journaled writes into %s", len(ops), self.path)

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect(for_writer=True)
        return self._writer

    # ---------------------------------------------------------------------------------------------
    # spans
    async def _select_spans(self, query: SpanQuery) -> PaginatedResult[Span]:
        with self._lock:
            cached = self._span_cache.get(query.rollout_id)
            if cached is not None:
                self._span_cache.move_to_end(query.rollout_id)
                spans = list(cached.values())
        if cached is not None:
            return select_packed_spans(spans, query)
        await self._flush()
        with self._lock:
            unsettled = query.rollout_id in self._unsettled_rollouts
        if unsettled:
            # Read-your-writes: the spans must be in SQLite before the query. This waits for a
            # commit in progress (the commit lock) and commits whatever is left.
            self._commit_batch()
        where = ["rollout_id = ?"]
        params: List[Any] = [query.rollout_id]
        if query.attempt_id is not None:
            where.append("attempt_id = ?")
            params.append(query.attempt_id)
        clauses: List[str] = []
        for key, (kind, value) in query.filters.items():
            column = key.rstrip("~")
            assert column in _SPAN_COLUMNS
            clauses.append(f"{column} = ?" if kind == "exact" else f"instr({column}, ?) > 0")
            params.append(value)
        if clauses:
            joiner = " OR " if query.filter_logic == "or" else " AND "
            where.append(f"({joiner.join(clauses)})")
        sql_where = " AND ".join(where)
        conn = self._reader()
        order = ""
        if query.sort_by is not None:
            direction = "DESC" if query.sort_order == "desc" else "ASC"
            # NULLs first ascending, like the in-memory sort
            order = f" ORDER BY {query.sort_by} IS NOT NULL {direction}, {query.sort_by} {direction}, rowid {direction}"
        elif query.sort_order == "desc":
            order = " ORDER BY rowid DESC"
        page = f" LIMIT {int(query.limit)} OFFSET {int(query.offset)}"
        # One statement for the page and the total (COUNT OVER the whole filtered set).
        rows = conn.execute(
            f"SELECT data, COUNT(*) OVER () FROM spans WHERE {sql_where}{order}{page}", params
        ).fetchall()
        if rows:
            total = rows[0][1]
        else:
            total = conn.execute(f"SELECT COUNT(*) FROM spans WHERE {sql_where}", params).fetchone()[0]
        return PaginatedResult(
            items=[Span.model_validate_json(data) for data, _ in rows],
            limit=query.limit,
            offset=query.offset,
            total=total,
        )

    def _count_spans(self) -> int:
        return self._span_count

    async def close(self) -> None:
        if self.read_only or self._writer_thread is None:
            await super().close()
        else:
            await self._flush()
            await super().close()
            with self._lock:
                self._stopping = True
                self._writer_wakeup.notify()
            self._writer_thread.join()
            self._writer_thread = None
            with self._lock:
                if self._journal_fd is not None:
                    os.close(self._journal_fd)
                    self._journal_fd = None
                if not self._batch and self._writer_error is None:
                    self._journal_path.unlink(missing_ok=True)
        with self._commit_lock, self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        self._release_write_lock()


def _commit_at_exit(ref: "weakref.ref[SqliteLightningStore]") -> None:
    store = ref()
    if store is not None and store._writer_thread is not None:
        try:
            store._commit_batch()
            if not store._batch and store._writer_error is None:
                store._journal_path.unlink(missing_ok=True)
        except Exception:  # exiting anyway; the journal still holds the writes for the next open
            logger.warning("could not commit %s at exit; its journal keeps the writes", store.path, exc_info=True)


def _write_all(fd: Optional[int], data: bytes) -> None:
    if fd is None:
        raise OSError("the journal is closed")
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_journal(path: Path) -> List[JournalOp]:
    """Records of a journal; a torn tail (never acknowledged) is ignored."""
    data = path.read_bytes()
    ops: List[JournalOp] = []
    offset = 0
    while offset + _RECORD_HEADER.size <= len(data):
        (length,) = _RECORD_HEADER.unpack_from(data, offset)
        start = offset + _RECORD_HEADER.size
        if start + length > len(data):
            break
        ops.extend(pickle.loads(data[start : start + length]))
        offset = start + length
    return ops


def _apply(conn: sqlite3.Connection, ops: Sequence[JournalOp]) -> None:
    """Run journaled writes in one transaction, each row once with its latest state.

    A queue position pushed and popped within the batch never touches the table. Every statement
    is idempotent, so replaying a journal whose batch was already committed changes nothing."""
    latest: Dict[Tuple[str, Any], Any] = {}
    pushed: Dict[int, str] = {}
    popped: List[int] = []
    appended: Dict[str, List[Tuple[Any, ...]]] = {"span": [], "request_id": [], "answer": []}
    for kind, key, snapshot in ops:
        if kind in _COALESCE_KEYS:
            latest[(kind, key)] = snapshot
        elif kind == "queue_push":
            position, rollout_id = snapshot
            pushed[position] = rollout_id
        elif kind == "queue_pop":
            if pushed.pop(snapshot, None) is None:
                popped.append(snapshot)
        elif kind == "latest_resources":
            latest[(kind, None)] = snapshot
        else:
            appended[kind].append(_row(kind, snapshot))
    by_kind: Dict[str, List[Tuple[Any, ...]]] = {}
    for (kind, _), snapshot in latest.items():
        by_kind.setdefault(kind, []).append(_row(kind, snapshot))
    by_kind["queue_pop"] = [(position,) for position in popped]
    by_kind["queue_push"] = list(pushed.items())
    by_kind.update(appended)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for kind, rows in by_kind.items():
            if rows:
                conn.executemany(_UPSERTS[kind], rows)
        if appended["answer"]:
            conn.execute("DELETE FROM answers WHERE expires < ?", (time.time(),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
