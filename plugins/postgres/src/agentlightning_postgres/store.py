"""``postgresql://user:password@host:port/database``: a store in PostgreSQL, shared by processes on
several hosts.

The database is the only state: nothing is cached between calls, so every process (store servers,
runners, trainers) sees every acknowledged write of the others. Each call runs in one transaction
that locks the rows it changes and applies the same status machine as the other backends (the
core's :class:`~agentlightning.store.engine.StoreEngine`, run over just those rows), then writes
back what changed. So, with many processes on one database:

* ``dequeue_rollout`` hands each queued rollout to exactly one caller (``FOR UPDATE SKIP LOCKED``
  on the queue; concurrent callers take the next rollouts instead of waiting);
* span sequence ids are issued per rollout by one atomic counter row, so they are unique and
  consecutive across processes;
* the watchdog (timeouts, unresponsive attempts) runs in whichever process calls first, on rows it
  locks, and re-checks each deadline on the locked row, so an attempt is ended once;
* ``wait_for_rollouts`` sleeps until a ``NOTIFY`` says one of its rollouts finished (sent by a
  trigger when the finishing transaction commits) or the watchdog's next deadline, never polling.

Connections: a pool per event loop. A dropped connection is replaced and the interrupted call is
run again (the retry never applies a write twice: each write transaction records its id, so a
commit whose answer was lost is recognized); calls keep retrying while the server is unreachable,
for ``retry_seconds``, then raise :class:`PostgresUnavailableError`. A server that is down or a
login that is refused when the store opens raises :class:`PostgresUnavailableError` /
:class:`PostgresAuthError` at once, naming host and database.

URI options (query string): ``schema`` (default ``agentlightning``; one store per schema),
``watchdog`` (true/false), ``scan_debounce_seconds``, ``pool_size``, ``retry_seconds``,
``connect_timeout``. Other options go to the connection (e.g. ``sslmode``).

Timestamps come from each process's clock, as in the other backends: keep the hosts' clocks
synchronized (NTP) when timeouts matter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import json
import logging
import pickle
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from agentlightning.errors import StoreClosedError
from agentlightning.store.base import UNSET, FilterLogic, LightningStore, LightningStoreCapabilities, SortOrder
from agentlightning.store.base import LightningStoreStatistics as Statistics
from agentlightning.store.engine import (
    IDEMPOTENCY_KEY,
    ROLLOUT_SORT_FIELDS,
    SpanInsertResult,
    SpanQuery,
    StoreEngine,
)
from agentlightning.store.memory import pack_span, select_packed_spans
from agentlightning.store.query import check_filter_logic, check_page, check_sort, check_statuses
from agentlightning.types import (
    QUEUING_ROLLOUT_STATUSES,
    ROLLOUT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    RolloutMode,
    Span,
    Worker,
)

from .errors import PostgresAuthError, PostgresUnavailableError
from .schema import NOTIFY_CHANNEL, check_schema_name, migrate

__all__ = ["PostgresLightningStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The connection broke or the server went away: the call is run again on a fresh connection.
_CONNECTION_ERRORS: Tuple[Type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, server restarting
    asyncpg.exceptions.CannotConnectNowError,
)
# Conflicts between concurrent transactions: run the transaction again. A unique violation comes from
# two calls creating the same thing at once (the same client_request_id): the rerun finds the first.
_CONFLICT_ERRORS: Tuple[Type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.UniqueViolationError,
)


class _ConnectionLost(Exception):
    """The connection under a call broke (its cause says how); the call runs again on a new one."""


def _broken_connection(exc: BaseException, conn: asyncpg.Connection) -> bool:
    if isinstance(exc, (*_CONNECTION_ERRORS, asyncpg.exceptions.InternalClientError)):
        return True
    # InterfaceError also reports misuse (wrong argument count): only a closed connection is "broken".
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and _is_closed(conn)


def _is_closed(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.exceptions.InterfaceError:  # already detached from the pool: gone too
        return True


_AUTH_ERRORS: Tuple[Type[BaseException], ...] = (asyncpg.exceptions.InvalidAuthorizationSpecificationError,)
_LOGIN_REFUSED: Tuple[Type[BaseException], ...] = (PostgresAuthError, *_AUTH_ERRORS)
_CONNECTION_LOST: Tuple[Type[BaseException], ...] = (_ConnectionLost, *_CONNECTION_ERRORS)
_MAX_CONFLICT_RETRIES = 20
_WATCHDOG_BATCH = 200
_COMMITTED_TRANSACTIONS_KEPT_SECONDS = 3600.0
_OWN_OPTIONS = ("schema", "watchdog", "scan_debounce_seconds", "pool_size", "retry_seconds", "connect_timeout")


# A rollout row with its attempts' JSON in order, in one statement; callers append the condition.
_SELECT_ROLLOUTS = (
    "SELECT rollout_id, queue_position, data, ARRAY(SELECT a.data FROM attempts a "
    "WHERE a.rollout_id = rollouts.rollout_id ORDER BY a.sequence_id) AS attempts FROM rollouts WHERE "
)


def _watch_deadline(rollout: Rollout, attempts: Optional[List[Attempt]]) -> Optional[float]:
    """When the watchdog may next end this rollout's latest attempt (None: never, as things stand)."""
    if rollout.status not in ("preparing", "running") or not attempts:
        return None
    attempt = attempts[-1]
    if attempt.status not in ("preparing", "running"):
        return None
    config = rollout.config
    candidates = []
    if config.timeout_seconds is not None:
        candidates.append(attempt.start_time + config.timeout_seconds)
    if config.unresponsive_seconds is not None:
        candidates.append((attempt.last_heartbeat_time or attempt.start_time) + config.unresponsive_seconds)
    return min(candidates) if candidates else None


class _Transaction(StoreEngine):
    """One call's view of the store: the rows it loaded (and locked), the engine's status machine over
    them, and the writes that machine recorded, applied by :meth:`_flush` inside the transaction."""

    backend_name = "postgresql"

    def __init__(self, conn: asyncpg.Connection, transaction_id: Optional[uuid.UUID]) -> None:
        super().__init__(watchdog=False, scan_debounce_seconds=0)
        self.conn = conn
        self.transaction_id = transaction_id
        self.wrote = False
        self._positions: Dict[str, Optional[int]] = {}
        self._dirty_rollouts: Dict[str, None] = {}  # ordered: new rollouts join the queue in this order
        self._dirty_attempts: Dict[Tuple[str, str], Attempt] = {}
        self._dirty_workers: Dict[str, Worker] = {}
        self._dirty_resources: Dict[str, ResourcesUpdate] = {}
        self._latest_dirty = False
        self._sequences: Dict[str, int] = {}
        self._new_request_ids: List[Tuple[str, str]] = []
        self._new_answers: List[Tuple[str, float, Any]] = []
        self._new_spans: List[Span] = []
        self._span_flags: Optional["concurrent.futures.Future[List[bool]]"] = None

    # -- loading ----------------------------------------------------------------------------------
    async def load_rollouts(self, rollout_ids: Iterable[str], *, lock: bool) -> None:
        """Load rollouts (in id order, locking them if asked) with all their attempts."""
        ids = sorted({r for r in rollout_ids if isinstance(r, str)} - set(self._rollouts))
        if ids:
            condition = "rollout_id = ANY($1::text[]) ORDER BY rollout_id" + (" FOR UPDATE" if lock else "")
            self._adopt(await self.conn.fetch(_SELECT_ROLLOUTS + condition, ids))

    def _adopt(self, rows: Sequence[asyncpg.Record]) -> None:
        for row in rows:
            rollout = Rollout.model_validate_json(row["data"])
            rollout_id = rollout.rollout_id
            self._rollouts[rollout_id] = rollout
            self._attempts[rollout_id] = [Attempt.model_validate_json(a) for a in row["attempts"]]
            self._positions[rollout_id] = row["queue_position"]
            if row["queue_position"] is not None:
                self._queued.add(rollout_id)
            if rollout.status in ("preparing", "running"):
                self._live.add(rollout_id)

    async def lock_queue_head(self, limit: int) -> None:
        """Lock (and load) the first ``limit`` queued rollouts nobody else holds; they form the queue."""
        rows = await self.conn.fetch(
            _SELECT_ROLLOUTS + "queue_position IS NOT NULL AND status = ANY($1::text[]) "
            "ORDER BY queue_position LIMIT $2 FOR UPDATE SKIP LOCKED",
            list(QUEUING_ROLLOUT_STATUSES),
            limit,
        )
        self._adopt(rows)
        self._queue.extend(row["rollout_id"] for row in rows)

    async def lock_due_rollouts(self, now: float) -> List[str]:
        """Lock (and load) rollouts whose watchdog deadline passed and nobody else holds."""
        rows = await self.conn.fetch(
            _SELECT_ROLLOUTS + "watch_deadline < $1 ORDER BY watch_deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            _WATCHDOG_BATCH,
        )
        self._adopt(rows)
        return [row["rollout_id"] for row in rows]

    async def lock_workers(self, worker_ids: Iterable[Optional[str]]) -> None:
        """Lock (creating if missing) and load workers: the status machine may change them."""
        ids = sorted({w for w in worker_ids if isinstance(w, str)} - set(self._workers))
        if not ids:
            return
        # An upsert that changes nothing locks the row whether it existed or not, in one statement.
        rows = await self.conn.fetch(
            "INSERT INTO workers (worker_id, data) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT (worker_id) DO UPDATE SET worker_id = EXCLUDED.worker_id RETURNING data",
            ids,
            [Worker(worker_id=w).model_dump_json() for w in ids],
        )
        for row in rows:
            worker = Worker.model_validate_json(row["data"])
            self._workers[worker.worker_id] = worker

    def attempt_workers(self, rollout_ids: Iterable[str]) -> Set[Optional[str]]:
        return {a.worker_id for r in rollout_ids for a in self._attempts.get(r, ())}

    async def load_latest_resources_id(self, *, lock: bool = False) -> None:
        self._latest_resources_id = await self.conn.fetchval(
            "SELECT value FROM meta WHERE key = 'latest_resources_id'" + (" FOR UPDATE" if lock else "")
        )

    async def load_resources(self, resources_id: Optional[str] = None) -> None:
        if resources_id is None:
            rows = await self.conn.fetch("SELECT data FROM resources ORDER BY created")
        else:
            rows = await self.conn.fetch("SELECT data FROM resources WHERE resources_id = $1", resources_id)
        for row in rows:
            update = ResourcesUpdate.model_validate_json(row["data"])
            self._resources[update.resources_id] = update

    async def load_answer(self) -> None:
        """The remembered answer of the call's idempotency key, if it has one (the engine replays it)."""
        key = IDEMPOTENCY_KEY.get()
        if key is None:
            return
        row = await self.conn.fetchrow("SELECT expires, data FROM answers WHERE key = $1", key)
        if row is not None:
            self._answers[key] = (row["expires"], pickle.loads(row["data"]))

    async def load_request_ids(self, client_request_ids: Iterable[Optional[str]]) -> None:
        ids = sorted({c for c in client_request_ids if isinstance(c, str)})
        if not ids:
            return
        rows = await self.conn.fetch(
            "SELECT client_request_id, rollout_id FROM request_ids WHERE client_request_id = ANY($1::text[])", ids
        )
        for row in rows:
            self._request_ids[row["client_request_id"]] = row["rollout_id"]
        await self.load_rollouts((row["rollout_id"] for row in rows), lock=False)

    # -- the engine's persistence hooks -----------------------------------------------------------
    def _record(self, kind: str, payload: Any) -> None:
        if kind == "rollout":
            self._dirty_rollouts[payload.rollout_id] = None
        elif kind == "attempt":
            self._dirty_attempts[(payload.rollout_id, payload.attempt_id)] = payload
            self._dirty_rollouts.setdefault(payload.rollout_id, None)  # its watchdog deadline moves
        elif kind == "worker":
            self._dirty_workers[payload.worker_id] = payload
        elif kind == "resources":
            self._dirty_resources[payload.resources_id] = payload
            self._latest_dirty = True
        elif kind == "sequence":
            rollout_id, value = payload
            self._sequences[rollout_id] = max(value, self._sequences.get(rollout_id, 0))
        elif kind == "request_id":
            self._new_request_ids.append(payload)
        elif kind == "answer":
            self._new_answers.append(payload)
        # queue_push / queue_pop: a rollout's queue position follows from its status when written.

    def _insert_spans(self, spans: Sequence[Span]) -> SpanInsertResult:
        self._new_spans.extend(spans)
        self._span_flags = concurrent.futures.Future()
        return self._span_flags

    async def _select_spans(self, query: SpanQuery) -> PaginatedResult[Span]:
        sql = "SELECT data FROM spans WHERE rollout_id = $1"
        args: List[Any] = [query.rollout_id]
        if query.attempt_id is not None:
            sql += " AND attempt_id = $2"
            args.append(query.attempt_id)
        rows = await self.conn.fetch(sql + " ORDER BY created", *args)
        # Filtering, sorting and paging exactly like the in-memory backend.
        return select_packed_spans((pack_span(Span.model_validate_json(row["data"])) for row in rows), query)

    def _count_spans(self) -> int:  # statistics come from SQL
        return 0

    async def _flush(self) -> None:
        """Write what the status machine changed, in one statement (inside the call's transaction)."""
        statement = _Statement()
        if self._dirty_rollouts:
            rollouts = [self._rollouts[r] for r in self._dirty_rollouts]
            # A rollout keeps its queue position while it stays queued and joins the tail when it
            # (re)enters the queue; positions are drawn in row order, so new rollouts queue in call order.
            statement.add(
                "INSERT INTO rollouts (rollout_id, status, start_time, end_time, mode, resources_id, queue_position, "
                "watch_deadline, data) SELECT id, st, t0, t1, md, res, CASE WHEN q THEN nextval('queue_positions') END, "
                "wd, d FROM (SELECT * FROM unnest({}::text[], {}::text[], {}::float8[], {}::float8[], {}::text[], "
                "{}::text[], {}::bool[], {}::float8[], {}::text[]) WITH ORDINALITY AS t(id, st, t0, t1, md, res, q, "
                "wd, d, n) ORDER BY n) AS ordered "
                "ON CONFLICT (rollout_id) DO UPDATE SET status = EXCLUDED.status, start_time = EXCLUDED.start_time, "
                "end_time = EXCLUDED.end_time, mode = EXCLUDED.mode, resources_id = EXCLUDED.resources_id, "
                "queue_position = CASE WHEN EXCLUDED.queue_position IS NOT NULL "
                "THEN COALESCE(rollouts.queue_position, EXCLUDED.queue_position) END, "
                "watch_deadline = EXCLUDED.watch_deadline, data = EXCLUDED.data",
                [r.rollout_id for r in rollouts],
                [r.status for r in rollouts],
                [r.start_time for r in rollouts],
                [r.end_time for r in rollouts],
                [r.mode for r in rollouts],
                [r.resources_id for r in rollouts],
                [r.status in QUEUING_ROLLOUT_STATUSES for r in rollouts],
                [_watch_deadline(r, self._attempts.get(r.rollout_id)) for r in rollouts],
                [r.model_dump_json() for r in rollouts],
            )
            self._dirty_rollouts = {}
        if self._dirty_attempts:
            attempts = list(self._dirty_attempts.values())
            statement.add(
                "INSERT INTO attempts (rollout_id, attempt_id, sequence_id, data) "
                "SELECT * FROM unnest({}::text[], {}::text[], {}::int4[], {}::text[]) "
                "ON CONFLICT (rollout_id, attempt_id) DO UPDATE SET data = EXCLUDED.data",
                [a.rollout_id for a in attempts],
                [a.attempt_id for a in attempts],
                [a.sequence_id for a in attempts],
                [a.model_dump_json() for a in attempts],
            )
            self._dirty_attempts = {}
        if self._dirty_workers:
            workers = list(self._dirty_workers.values())
            statement.add(
                "INSERT INTO workers (worker_id, data) SELECT * FROM unnest({}::text[], {}::text[]) "
                "ON CONFLICT (worker_id) DO UPDATE SET data = EXCLUDED.data",
                [w.worker_id for w in workers],
                [w.model_dump_json() for w in workers],
            )
            self._dirty_workers = {}
        if self._dirty_resources:
            updates = list(self._dirty_resources.values())
            statement.add(
                "INSERT INTO resources (resources_id, data) SELECT * FROM unnest({}::text[], {}::text[]) "
                "ON CONFLICT (resources_id) DO UPDATE SET data = EXCLUDED.data",
                [u.resources_id for u in updates],
                [u.model_dump_json() for u in updates],
            )
            self._dirty_resources = {}
        if self._latest_dirty:
            statement.add("UPDATE meta SET value = {} WHERE key = 'latest_resources_id'", self._latest_resources_id)
            self._latest_dirty = False
        if self._sequences:
            items = sorted(self._sequences.items())
            statement.add(
                "INSERT INTO span_sequences (rollout_id, last_value) SELECT * FROM unnest({}::text[], {}::int8[]) "
                "ON CONFLICT (rollout_id) DO UPDATE "
                "SET last_value = GREATEST(span_sequences.last_value, EXCLUDED.last_value)",
                [k for k, _ in items],
                [v for _, v in items],
            )
            self._sequences = {}
        if self._new_request_ids:
            # A plain insert: a concurrent call that took the same id first makes this one run again.
            statement.add(
                "INSERT INTO request_ids (client_request_id, rollout_id) SELECT * FROM unnest({}::text[], {}::text[])",
                [c for c, _ in self._new_request_ids],
                [r for _, r in self._new_request_ids],
            )
            self._new_request_ids = []
        if self._new_answers:
            # A plain insert: a concurrent call with the same key that committed first makes this one
            # run again, and then it finds that call's answer.
            answers, self._new_answers = self._new_answers, []
            statement.add(
                "INSERT INTO answers (key, expires, data) SELECT * FROM unnest({}::text[], {}::float8[], {}::bytea[])",
                [key for key, _, _ in answers],
                [expires for _, expires, _ in answers],
                [pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL) for _, _, result in answers],
            )
            statement.add("DELETE FROM answers WHERE expires < {}", time.time())
        spans, self._new_spans = self._new_spans, []
        if spans:
            statement.add(
                "INSERT INTO spans (rollout_id, attempt_id, span_id, data) "
                "SELECT * FROM unnest({}::text[], {}::text[], {}::text[], {}::text[]) "
                "ON CONFLICT DO NOTHING RETURNING rollout_id, attempt_id, span_id",
                [s.rollout_id for s in spans],
                [s.attempt_id for s in spans],
                [s.span_id for s in spans],
                [s.model_dump_json() for s in spans],
                returning=True,
            )
        if not statement.parts:
            return
        if self.transaction_id is not None and not self.wrote:
            # Recorded with the writes: if the answer to this transaction's COMMIT is lost, a new
            # connection can still tell whether it committed.
            statement.add("INSERT INTO committed_transactions (transaction_id) VALUES ({}::uuid)", self.transaction_id)
        rows = await statement.run(self.conn)
        self.wrote = True
        if spans:
            new_keys = {(r["rollout_id"], r["attempt_id"], r["span_id"]) for r in rows}
            flags = []
            for span in spans:  # a span repeated within the batch is new once, the first time
                key = (span.rollout_id, span.attempt_id, span.span_id)
                flags.append(key in new_keys)
                new_keys.discard(key)
            assert self._span_flags is not None
            self._span_flags.set_result(flags)


class _Statement:
    """Several writes as one SQL statement (data-modifying WITH queries): one round trip."""

    def __init__(self) -> None:
        self.parts: List[str] = []
        self.args: List[Any] = []
        self.returning: Optional[str] = None

    def add(self, sql: str, *args: Any, returning: bool = False) -> str:
        """Add ``sql`` (``{}`` where each of ``args`` goes); returns its name for later parts."""
        placeholders = [f"${len(self.args) + i + 1}" for i in range(len(args))]
        self.args.extend(args)
        name = f"w{len(self.parts)}"
        self.parts.append(f"{name} AS ({sql.format(*placeholders)})")
        if returning:
            self.returning = name
        return name

    async def run(self, conn: asyncpg.Connection) -> List[asyncpg.Record]:
        final = f"SELECT * FROM {self.returning}" if self.returning else "SELECT 1"
        return list(await conn.fetch(f"WITH {', '.join(self.parts)} {final}", *self.args))


@dataclass(eq=False)
class _Waiter:
    rollout_ids: Set[str]
    event: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _LoopConnections:
    """What one event loop uses: its pool, and the connection that LISTENs for finished rollouts."""

    loop: asyncio.AbstractEventLoop
    pool: asyncpg.Pool
    listener: Optional[asyncpg.Connection] = None
    listener_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiters: Set[_Waiter] = field(default_factory=set)

    def wake(self, rollout_id: Optional[str] = None) -> None:
        for waiter in self.waiters:
            if rollout_id is None or rollout_id in waiter.rollout_ids:
                waiter.event.set()


class PostgresLightningStore(LightningStore):
    """A store in a PostgreSQL database that several processes and hosts share (see the module docs)."""

    backend_name = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "agentlightning",
        watchdog: bool = True,
        scan_debounce_seconds: float = 1.0,
        pool_size: int = 10,
        retry_seconds: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if scan_debounce_seconds < 0:
            raise ValueError(f"scan_debounce_seconds must be >= 0, got {scan_debounce_seconds!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size!r}")
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"not a postgresql:// URI: {dsn!r}")
        self.schema = check_schema_name(schema)
        query = dict(parse_qsl(parts.query))
        self.host = parts.hostname or query.get("host") or "localhost"
        self.port = parts.port or int(query.get("port", 5432))
        self.user = unquote(parts.username or "") or query.get("user") or getpass.getuser()
        self.database = unquote(parts.path.lstrip("/")) or query.get("dbname") or self.user
        self._dsn = dsn
        self._watchdog = watchdog
        self._scan_debounce_seconds = scan_debounce_seconds
        self._last_scan = 0.0
        self._last_forget = time.monotonic()
        self.pool_size = pool_size
        self.retry_seconds = retry_seconds
        self.connect_timeout = connect_timeout
        self._loops: Dict[asyncio.AbstractEventLoop, "asyncio.Future[_LoopConnections]"] = {}
        self._loops_lock = threading.Lock()
        self._closed = False
        self._started = time.time()
        # Fail now, with a clear error, if the server is down, refuses the login or holds a newer
        # schema; and create or upgrade the tables once, here.
        _run_in_own_loop(self._open)

    @classmethod
    def from_uri(cls, uri: str) -> "PostgresLightningStore":
        """``postgresql://user:password@host:port/database?schema=...`` (see the module docs for options)."""
        parts = urlsplit(uri)
        options: Dict[str, Any] = {}
        passthrough = []
        for key, value in parse_qsl(parts.query):
            if key not in _OWN_OPTIONS:
                passthrough.append((key, value))
            elif key == "schema":
                options[key] = value
            elif key == "watchdog":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"postgresql URI option watchdog must be true or false, got {value!r}")
                options[key] = value.lower() in ("true", "1")
            else:
                try:
                    options[key] = int(value) if key == "pool_size" else float(value)
                except ValueError:
                    raise ValueError(f"postgresql URI option {key} must be a number, got {value!r}") from None
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passthrough), parts.fragment))
        return cls(dsn, **options)

    def __repr__(self) -> str:
        return f"PostgresLightningStore({self.host}:{self.port}/{self.database}, schema={self.schema!r})"

    @property
    def where(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port} (database {self.database!r})"

    @property
    def capabilities(self) -> LightningStoreCapabilities:
        return LightningStoreCapabilities(thread_safe=True, async_safe=True, zero_copy=False, durable=True)

    # ---------------------------------------------------------------------------------------------
    # connections
    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self._dsn, timeout=self.connect_timeout, **self._connection_options())
        except BaseException as exc:
            raise self._typed_error(exc) from exc

    def _connection_options(self) -> Dict[str, Any]:
        return {"server_settings": {"search_path": self.schema, "application_name": "agentlightning"}}

    def _typed_error(self, exc: BaseException) -> BaseException:
        """The backend's typed error for a failure to connect (or ``exc`` itself if it is not one)."""
        if isinstance(exc, (PostgresAuthError, PostgresUnavailableError)):
            return exc
        host, port, database = self.host, self.port, self.database
        if isinstance(exc, _AUTH_ERRORS):
            return PostgresAuthError(
                f"{self.where} refused the login of user {self.user!r}: {exc}",
                host=host,
                port=port,
                database=database,
                user=self.user,
            )
        if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
            return PostgresUnavailableError(
                f"{self.where}: the database does not exist ({exc})", host=host, port=port, database=database
            )
        if isinstance(exc, _CONNECTION_ERRORS):
            reason = str(exc) or type(exc).__name__
            return PostgresUnavailableError(
                f"cannot reach {self.where}: {reason}", host=host, port=port, database=database
            )
        return exc

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            await migrate(conn, self.schema, where=self.where)
        finally:
            await conn.close()

    async def _connections(self) -> _LoopConnections:
        """This event loop's pool (created on first use)."""
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            if self._closed:
                raise StoreClosedError(f"{self!r} is closed")
            # Loops that ended (each asyncio.run makes one) cannot close their pools any more: forget
            # them, and their connections close when collected, so the number of connections stays
            # bounded by the loops alive.
            for ended in [other for other in self._loops if other.is_closed()]:
                del self._loops[ended]
            future = self._loops.get(loop)
            creating = future is None
            if future is None:
                future = self._loops[loop] = loop.create_future()
        if creating:
            try:
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    reset=_keep_session,
                    timeout=self.connect_timeout,
                    **self._connection_options(),
                )
            except BaseException as exc:
                with self._loops_lock:
                    self._loops.pop(loop, None)
                future.set_exception(self._typed_error(exc))
                future.exception()  # retrieved: concurrent waiters (if any) see it through await
                raise self._typed_error(exc) from exc
            future.set_result(_LoopConnections(loop=loop, pool=pool))
        return await asyncio.shield(future)

    async def _run(
        self,
        body: Callable[[_Transaction], Awaitable[T]],
        *,
        write: bool = True,
        single_statement: bool = False,
        recover: Optional[Callable[[str], T]] = None,
    ) -> T:
        """Run ``body`` in a transaction, again on a fresh connection when the connection breaks (for
        up to ``retry_seconds``) and again when it conflicts with a concurrent transaction.

        ``write=False``: ``body`` only reads (no transaction). ``single_statement``: ``body`` writes with
        one statement, its own transaction, which records the transaction id with its result as text;
        if the answer is lost after it committed, ``recover(text)`` rebuilds what ``body`` returned."""
        give_up = time.monotonic() + self.retry_seconds
        delay = 0.05
        conflicts = 0
        while True:
            transaction_id = uuid.uuid4() if write else None
            committing = False
            try:
                connections = await self._connections()
                conn = await connections.pool.acquire()
                try:
                    try:
                        tx = _Transaction(conn, transaction_id)
                        if not write:  # reads are single statements, or tolerate newer rows in a later one
                            return await body(tx)
                        if single_statement:
                            committing = True
                            return await body(tx)
                        transaction = conn.transaction()
                        await transaction.start()
                        try:
                            result = await body(tx)
                            await tx._flush()
                        except BaseException:
                            if not _is_closed(conn):
                                await transaction.rollback()
                            raise
                        committing = True
                        await transaction.commit()
                        return result
                    except BaseException as exc:
                        if _broken_connection(exc, conn):
                            if not _is_closed(conn):
                                conn.terminate()  # never hand it out again; the pool opens a new one
                            raise _ConnectionLost(exc) from exc
                        raise
                finally:
                    try:
                        await connections.pool.release(conn)
                    except Exception:  # a broken connection fails its reset; the pool dropped it
                        pass
            except _LOGIN_REFUSED as exc:
                raise self._typed_error(exc) from exc
            except _CONFLICT_ERRORS as exc:
                conflicts += 1
                if conflicts > _MAX_CONFLICT_RETRIES:
                    raise
                logger.debug("transaction conflict (%s); running it again", exc)
                await asyncio.sleep(0.001 * conflicts)
            except _CONNECTION_LOST as exc:
                cause = exc.__cause__ if isinstance(exc, _ConnectionLost) and exc.__cause__ is not None else exc
                if self._closed:
                    raise StoreClosedError(f"{self!r} is closed") from cause
                # The COMMIT went out but its answer did not come back: it may have landed.
                if committing and transaction_id is not None:
                    committed, stored = await self._committed(transaction_id, give_up)
                    if committed:
                        if not single_statement:
                            return result
                        assert recover is not None and stored is not None
                        return recover(stored)
                if time.monotonic() > give_up:
                    raise self._typed_error(cause) from cause
                logger.warning("lost the connection to %s (%s); retrying", self.where, cause)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _committed(self, transaction_id: uuid.UUID, give_up: float) -> Tuple[bool, Optional[str]]:
        """Whether a write transaction whose COMMIT answer was lost did commit, and the result it
        recorded (asks a new connection)."""
        delay = 0.05
        while True:
            try:
                conn = await self._connect()
                try:
                    row = await conn.fetchrow(
                        "SELECT result FROM committed_transactions WHERE transaction_id = $1", transaction_id
                    )
                finally:
                    await conn.close()
                return (row is not None, row["result"] if row is not None else None)
            except PostgresUnavailableError:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed")

    # ---------------------------------------------------------------------------------------------
    # watchdog
    async def _scan(self, *, force: bool = False) -> None:
        """End the attempts whose deadline passed, in rows this process locks (others skip them)."""
        if time.monotonic() - self._last_forget > 60.0:  # about once a minute: forget old transaction ids
            self._last_forget = time.monotonic()
            await self._run(_forget_committed_transactions)
        if not self._watchdog:
            return
        now = time.time()
        if not force and now - self._last_scan < self._scan_debounce_seconds:
            return
        self._last_scan = now

        async def body(tx: _Transaction) -> int:
            due = await tx.lock_due_rollouts(now)
            if due:
                await tx.lock_workers(tx.attempt_workers(due))
                tx._watchdog = True
                tx._scan(now, force=True)  # re-checks each deadline on the locked row
            return len(due)

        while await self._run(body) == _WATCHDOG_BATCH:
            pass

    # ---------------------------------------------------------------------------------------------
    # rollouts
    async def statistics(self) -> Statistics:
        async def body(tx: _Transaction) -> Statistics:
            counts = await tx.conn.fetchrow(
                "SELECT (SELECT json_object_agg(status, n) FROM (SELECT status, count(*) AS n FROM rollouts "
                "GROUP BY status) AS s) AS by_status, (SELECT count(*) FROM attempts) AS attempts, "
                "(SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM resources) AS resources, "
                "(SELECT count(*) FROM workers) AS workers"
            )
            by_status: Dict[str, int] = json.loads(counts["by_status"]) if counts["by_status"] else {}
            return Statistics(
                name=self.backend_name,
                total_rollouts=sum(by_status.values()),
                total_attempts=counts["attempts"],
                total_spans=counts["spans"],
                total_resources=counts["resources"],
                total_workers=counts["workers"],
                uptime=time.time() - self._started,
                rollouts_by_status=by_status,
            )

        return await self._run(body, write=False)

    async def start_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        worker_id: Optional[str] = None,
    ) -> AttemptedRollout:
        self._check_open()
        await self._scan()

        async def body(tx: _Transaction) -> AttemptedRollout:
            await tx.load_answer()
            if resources_id is None:
                await tx.load_latest_resources_id()
            await tx.lock_workers([worker_id])
            return await tx.start_rollout(input, mode, resources_id, config, metadata, worker_id)

        return await self._run(body)

    async def enqueue_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        client_request_id: Optional[str] = None,
    ) -> Rollout:
        self._check_open()
        await self._scan()

        async def body(tx: _Transaction) -> Rollout:
            if resources_id is None:
                await tx.load_latest_resources_id()
            await tx.load_request_ids([client_request_id])
            return await tx.enqueue_rollout(input, mode, resources_id, config, metadata, client_request_id)

        return await self._run(body)

    async def enqueue_many_rollouts(self, rollouts: Sequence[EnqueueRolloutRequest]) -> List[Rollout]:
        self._check_open()
        requests = [
            r if isinstance(r, EnqueueRolloutRequest) else EnqueueRolloutRequest.model_validate(r) for r in rollouts
        ]
        await self._scan()

        async def body(tx: _Transaction) -> List[Rollout]:
            if any(r.resources_id is None for r in requests):
                await tx.load_latest_resources_id()
            await tx.load_request_ids(r.client_request_id for r in requests)
            return await tx.enqueue_many_rollouts(requests)

        return await self._run(body)

    async def dequeue_rollout(self, worker_id: Optional[str] = None) -> Optional[AttemptedRollout]:
        items = await self.dequeue_many_rollouts(limit=1, worker_id=worker_id)
        return items[0] if items else None

    async def dequeue_many_rollouts(self, *, limit: int = 1, worker_id: Optional[str] = None) -> List[AttemptedRollout]:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        self._check_open()
        await self._scan()

        async def body(tx: _Transaction) -> List[AttemptedRollout]:
            await tx.load_answer()
            await tx.lock_queue_head(limit)
            await tx.lock_workers([worker_id])
            return await tx.dequeue_many_rollouts(limit=limit, worker_id=worker_id)

        return await self._run(body)

    async def start_attempt(self, rollout_id: str, worker_id: Optional[str] = None) -> AttemptedRollout:
        self._check_open()

        async def body(tx: _Transaction) -> AttemptedRollout:
            await tx.load_answer()
            await tx.load_rollouts([rollout_id], lock=True)
            await tx.lock_workers([worker_id, *tx.attempt_workers([rollout_id])])
            return await tx.start_attempt(rollout_id, worker_id)

        return await self._run(body)

    async def query_rollouts(
        self,
        *,
        status_in: Optional[Sequence[str]] = None,
        rollout_id_in: Optional[Sequence[str]] = None,
        rollout_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
        status: Optional[Sequence[str]] = None,
        rollout_ids: Optional[Sequence[str]] = None,
    ) -> PaginatedResult[Union[Rollout, AttemptedRollout]]:
        statuses = status_in if status_in is not None else status
        ids = rollout_id_in if rollout_id_in is not None else rollout_ids
        check_statuses(statuses, ROLLOUT_STATUSES, "rollout status")
        check_sort(sort_by, sort_order, ROLLOUT_SORT_FIELDS)
        check_page(limit, offset)
        check_filter_logic(filter_logic)
        await self._scan()
        args: List[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        conditions = []
        if statuses is not None:
            conditions.append(f"status = ANY({arg(list(statuses))}::text[])")
        if ids is not None:
            id_list = list(ids)
            conditions.append(f"rollout_id = ANY({arg(id_list)}::text[])")
        if rollout_id_contains is not None:
            conditions.append(f"strpos(rollout_id, {arg(rollout_id_contains)}) > 0")
        where = f" {filter_logic.upper()} ".join(conditions) if conditions else "TRUE"
        where_args = list(args)
        # The listing order before sorting: creation order, or the order of the ids asked for (AND).
        base = (
            f"array_position({arg(id_list)}::text[], rollout_id)"
            if ids is not None and filter_logic == "and"
            else "created"
        )
        if sort_by is None:
            order = f"{base} DESC" if sort_order == "desc" else base
        elif sort_order == "asc":  # missing values first, like the in-memory sort; ties keep listing order
            order = f"{sort_by} IS NOT NULL, {sort_by}, {base}"
        else:
            order = f"{sort_by} IS NOT NULL DESC, {sort_by} DESC, {base}"
        page = "" if limit == -1 else f" LIMIT {int(limit)}"
        page += f" OFFSET {int(offset)}"
        # The page, its total and each rollout's latest attempt in one statement.
        sql = (
            "SELECT data, count(*) OVER () AS total, (SELECT a.data FROM attempts a WHERE a.rollout_id = "
            "rollouts.rollout_id ORDER BY a.sequence_id DESC LIMIT 1) AS latest_attempt "
            f"FROM rollouts WHERE {where} ORDER BY {order}{page}"
        )

        async def body(tx: _Transaction) -> PaginatedResult[Union[Rollout, AttemptedRollout]]:
            rows = await tx.conn.fetch(sql, *args)
            if rows:
                total = rows[0]["total"]
            else:
                total = await tx.conn.fetchval(f"SELECT count(*) FROM rollouts WHERE {where}", *where_args)
            items: List[Union[Rollout, AttemptedRollout]] = []
            for row in rows:
                rollout = Rollout.model_validate_json(row["data"])
                if row["latest_attempt"] is None:
                    items.append(rollout)
                else:
                    attempt = Attempt.model_validate_json(row["latest_attempt"])
                    items.append(AttemptedRollout.model_construct(**rollout.__dict__, attempt=attempt))
            return PaginatedResult(items=items, limit=limit, offset=offset, total=total)

        return await self._run(body, write=False)

    async def get_rollout_by_id(self, rollout_id: str) -> Optional[Union[Rollout, AttemptedRollout]]:
        if not isinstance(rollout_id, str):
            raise TypeError(f"rollout_id must be a str, got {type(rollout_id).__name__} {rollout_id!r}")
        await self._scan()

        async def body(tx: _Transaction) -> Optional[Union[Rollout, AttemptedRollout]]:
            await tx.load_rollouts([rollout_id], lock=False)
            return await tx.get_rollout_by_id(rollout_id)

        return await self._run(body, write=False)

    async def update_rollout(
        self,
        rollout_id: str,
        input: Any = UNSET,
        mode: Any = UNSET,
        resources_id: Any = UNSET,
        status: Any = UNSET,
        config: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Rollout:
        self._check_open()

        async def body(tx: _Transaction) -> Rollout:
            await tx.load_rollouts([rollout_id], lock=True)
            return await tx.update_rollout(rollout_id, input, mode, resources_id, status, config, metadata)

        return await self._run(body)

    async def wait_for_rollouts(self, *, rollout_ids: List[str], timeout: Optional[float] = None) -> List[Rollout]:
        if isinstance(rollout_ids, str):
            raise TypeError("rollout_ids must be a list of ids, not a single string")
        ids = list(dict.fromkeys(rollout_ids))
        if timeout is not None and timeout < 0:
            timeout = 0
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._check_open()
        connections = await self._connections()
        waiter = _Waiter(rollout_ids=set(ids))
        connections.waiters.add(waiter)
        pending = ids  # not known to be finished yet; unknown ids drop out at the first read
        finished: Set[str] = set()
        next_watchdog: Optional[float] = time.time()  # the first round runs the watchdog
        try:
            while True:
                self._check_open()
                # Listen before reading: a rollout finishing after the read wakes this waiter.
                if deadline is None or deadline > loop.time():
                    await self._listen(connections)
                waiter.event.clear()
                if next_watchdog is not None and next_watchdog <= time.time():
                    await self._scan(force=True)
                # Each round reads the statuses of the rollouts still pending, not their data.
                rows = await self._read_rollouts(pending, "rollout_id, status, watch_deadline")
                by_id = {row["rollout_id"]: row for row in rows}
                pending = [i for i in pending if i in by_id and by_id[i]["status"] not in TERMINAL_ROLLOUT_STATUSES]
                finished.update(i for i in by_id if by_id[i]["status"] in TERMINAL_ROLLOUT_STATUSES)
                remaining = None if deadline is None else deadline - loop.time()
                if not pending or (remaining is not None and remaining <= 0):
                    done = await self._read_rollouts([i for i in ids if i in finished], "rollout_id, status, data")
                    reopened = {row["rollout_id"] for row in done if row["status"] not in TERMINAL_ROLLOUT_STATUSES}
                    if reopened and (remaining is None or remaining > 0):  # a retry reopened one: wait for it
                        finished -= reopened
                        pending = [i for i in ids if i in reopened or i in pending]
                        continue
                    return [
                        Rollout.model_validate_json(row["data"]) for row in done if row["rollout_id"] not in reopened
                    ]
                waiter.rollout_ids = set(pending)
                # Sleep until a notification, the caller's deadline, or the next moment the watchdog
                # could end one of them (a dead runner sends nothing to wake us).
                deadlines = [by_id[i]["watch_deadline"] for i in pending if by_id[i]["watch_deadline"] is not None]
                next_watchdog = min(deadlines) if deadlines and self._watchdog else None
                wait_for = remaining
                if next_watchdog is not None:
                    until_watchdog = max(0.0, next_watchdog - time.time()) + 0.01
                    wait_for = until_watchdog if wait_for is None else min(wait_for, until_watchdog)
                try:
                    await asyncio.wait_for(waiter.event.wait(), wait_for)
                except asyncio.TimeoutError:
                    pass
        finally:
            connections.waiters.discard(waiter)

    async def _read_rollouts(self, rollout_ids: List[str], columns: str) -> List[asyncpg.Record]:
        """``columns`` of these rollouts, in the order of ``rollout_ids`` (unknown ids left out)."""

        async def body(tx: _Transaction) -> List[asyncpg.Record]:
            return list(
                await tx.conn.fetch(
                    f"SELECT {columns} FROM rollouts WHERE rollout_id = ANY($1::text[]) "
                    "ORDER BY array_position($1::text[], rollout_id)",
                    rollout_ids,
                )
            )

        return await self._run(body, write=False) if rollout_ids else []

    async def _listen(self, connections: _LoopConnections) -> None:
        """Make sure this loop's LISTEN connection is up (a new one wakes every waiter to re-read)."""
        async with connections.listener_lock:
            if connections.listener is not None and not connections.listener.is_closed():
                return
            schema_prefix = f"{self.schema}/"

            def on_notify(conn: Any, pid: int, channel: str, payload: str) -> None:
                if payload.startswith(schema_prefix):
                    connections.wake(payload[len(schema_prefix) :])

            def on_lost(conn: Any) -> None:
                connections.listener = None
                connections.wake()  # notifications may have been missed: everyone reads again

            give_up = time.monotonic() + self.retry_seconds
            while True:
                try:
                    listener = await self._connect()
                    break
                except PostgresUnavailableError:
                    if time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(0.2)
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)
            listener.add_termination_listener(on_lost)
            connections.listener = listener

    # ---------------------------------------------------------------------------------------------
    # attempts
    async def query_attempts(
        self,
        rollout_id: str,
        *,
        sort_by: Optional[str] = "sequence_id",
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Attempt]:
        async def body(tx: _Transaction) -> PaginatedResult[Attempt]:
            await tx.load_rollouts([rollout_id], lock=False)
            return await tx.query_attempts(
                rollout_id, sort_by=sort_by, sort_order=sort_order, limit=limit, offset=offset
            )

        return await self._run(body, write=False)

    async def get_latest_attempt(self, rollout_id: str) -> Optional[Attempt]:
        await self._scan()

        async def body(tx: _Transaction) -> Optional[Attempt]:
            await tx.load_rollouts([rollout_id], lock=False)
            return await tx.get_latest_attempt(rollout_id)

        return await self._run(body, write=False)

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: Any = UNSET,
        worker_id: Any = UNSET,
        last_heartbeat_time: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Attempt:
        self._check_open()
        await self._scan()

        async def body(tx: _Transaction) -> Attempt:
            await tx.load_rollouts([rollout_id], lock=True)
            workers = tx.attempt_workers([rollout_id])
            if worker_id is not UNSET:
                workers.add(worker_id)
            await tx.lock_workers(workers)
            return await tx.update_attempt(rollout_id, attempt_id, status, worker_id, last_heartbeat_time, metadata)

        return await self._run(body)

    # ---------------------------------------------------------------------------------------------
    # spans
    async def add_span(self, span: Span) -> Optional[Span]:
        added = await self.add_many_spans([span])
        return added[0] if added else None

    async def add_many_spans(self, spans: Sequence[Span]) -> List[Span]:
        spans = list(spans)
        if not spans:
            return []
        self._check_open()
        rollout_ids = {s.rollout_id for s in spans if isinstance(s, Span)}

        async def body(tx: _Transaction) -> List[Span]:
            await tx.load_rollouts(rollout_ids, lock=True)
            # A span moves a preparing/unresponsive attempt to running, which changes its worker.
            reviving = {
                a.worker_id
                for s in spans
                if isinstance(s, Span)
                for a in tx._attempts.get(s.rollout_id, ())
                if a.attempt_id == s.attempt_id and a.status in ("preparing", "unresponsive")
            }
            await tx.lock_workers(reviving)
            return await tx.add_many_spans(spans)

        return await self._run(body)

    async def get_next_span_sequence_id(self, rollout_id: str, attempt_id: str) -> int:
        return (await self.get_many_span_sequence_ids([(rollout_id, attempt_id)]))[0]

    async def get_many_span_sequence_ids(self, rollout_attempt_ids: Sequence[Tuple[str, str]]) -> List[int]:
        pairs = list(rollout_attempt_ids)
        self._check_open()
        if not pairs:
            return []

        wanted: Dict[str, int] = {}
        for rollout_id, _ in pairs:
            wanted[rollout_id] = wanted.get(rollout_id, 0) + 1
        ordered = sorted(wanted)

        async def validate(tx: _Transaction) -> None:
            await tx.load_rollouts((r for r, _ in pairs), lock=False)
            for rollout_id, attempt_id in pairs:
                tx._get_attempt(rollout_id, attempt_id)  # raises for unknown ids

        async def take(tx: _Transaction) -> Optional[Dict[str, int]]:
            # One statement (its own transaction): check the ids, record the transaction id, and bump
            # one counter row per rollout atomically, so ids are consecutive across processes.
            statement = _Statement()
            known = statement.add(
                "SELECT bool_and(EXISTS (SELECT 1 FROM attempts a WHERE a.rollout_id = t.r "
                "AND (t.q = 'latest' OR a.attempt_id = t.q))) AS ok FROM unnest({}::text[], {}::text[]) AS t(r, q)",
                [r for r, _ in pairs],
                [a for _, a in pairs],
            )
            bumped = statement.add(
                "INSERT INTO span_sequences (rollout_id, last_value) SELECT * FROM unnest({}::text[], {}::int8[]) "
                f"WHERE (SELECT ok FROM {known}) ON CONFLICT (rollout_id) DO UPDATE "
                "SET last_value = span_sequences.last_value + EXCLUDED.last_value RETURNING rollout_id, last_value",
                ordered,
                [wanted[r] for r in ordered],
                returning=True,
            )
            # The ids are kept with the transaction id: if the answer is lost, they are read back.
            statement.add(
                "INSERT INTO committed_transactions (transaction_id, result) SELECT {}::uuid, "
                f"json_object_agg(rollout_id, last_value)::text FROM {bumped} HAVING count(*) > 0",
                tx.transaction_id,
            )
            rows = await statement.run(tx.conn)
            return {row["rollout_id"]: row["last_value"] for row in rows} or None  # None: an unknown id

        while True:
            last: Optional[Dict[str, int]] = None
            if all(isinstance(r, str) and isinstance(a, str) for r, a in pairs):
                last = await self._run(take, single_statement=True, recover=json.loads)
            if last is not None:
                break
            await self._run(validate, write=False)  # raises the error naming the unknown id
        next_value = {rollout_id: value - wanted[rollout_id] + 1 for rollout_id, value in last.items()}
        result = []
        for rollout_id, _ in pairs:
            result.append(next_value[rollout_id])
            next_value[rollout_id] += 1
        return result

    async def query_spans(
        self,
        rollout_id: str,
        attempt_id: Optional[str] = None,
        *,
        trace_id: Optional[str] = None,
        trace_id_contains: Optional[str] = None,
        span_id: Optional[str] = None,
        span_id_contains: Optional[str] = None,
        parent_id: Optional[str] = None,
        parent_id_contains: Optional[str] = None,
        name: Optional[str] = None,
        name_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        limit: int = -1,
        offset: int = 0,
        sort_by: Optional[str] = "sequence_id",
        sort_order: SortOrder = "asc",
    ) -> PaginatedResult[Span]:
        async def body(tx: _Transaction) -> PaginatedResult[Span]:
            await tx.load_rollouts([rollout_id], lock=False)
            return await tx.query_spans(
                rollout_id,
                attempt_id,
                trace_id=trace_id,
                trace_id_contains=trace_id_contains,
                span_id=span_id,
                span_id_contains=span_id_contains,
                parent_id=parent_id,
                parent_id_contains=parent_id_contains,
                name=name,
                name_contains=name_contains,
                filter_logic=filter_logic,
                limit=limit,
                offset=offset,
                sort_by=sort_by,
                sort_order=sort_order,
            )

        return await self._run(body, write=False)

    # ---------------------------------------------------------------------------------------------
    # resources
    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        self._check_open()

        async def body(tx: _Transaction) -> ResourcesUpdate:
            await tx.load_answer()
            await tx.load_latest_resources_id(lock=True)  # resource writes take turns: "latest" is well defined
            return await tx.add_resources(resources)

        return await self._run(body)

    async def update_resources(self, resources_id: str, resources: NamedResources) -> ResourcesUpdate:
        if not isinstance(resources_id, str) or not resources_id:
            raise ValueError(f"resources_id must be a non-empty str, got {resources_id!r}")
        self._check_open()

        async def body(tx: _Transaction) -> ResourcesUpdate:
            await tx.load_latest_resources_id(lock=True)
            await tx.load_resources(resources_id)
            return await tx.update_resources(resources_id, resources)

        return await self._run(body)

    async def get_resources_by_id(self, resources_id: str) -> Optional[ResourcesUpdate]:
        async def body(tx: _Transaction) -> Optional[ResourcesUpdate]:
            row = await tx.conn.fetchval("SELECT data FROM resources WHERE resources_id = $1", resources_id)
            return ResourcesUpdate.model_validate_json(row) if row is not None else None

        return await self._run(body, write=False)

    async def get_latest_resources(self) -> Optional[ResourcesUpdate]:
        async def body(tx: _Transaction) -> Optional[ResourcesUpdate]:
            row = await tx.conn.fetchval(
                "SELECT r.data FROM meta m JOIN resources r ON r.resources_id = m.value WHERE m.key = 'latest_resources_id'"
            )
            return ResourcesUpdate.model_validate_json(row) if row is not None else None

        return await self._run(body, write=False)

    async def query_resources(
        self,
        *,
        resources_id: Optional[str] = None,
        resources_id_contains: Optional[str] = None,
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[ResourcesUpdate]:
        async def body(tx: _Transaction) -> PaginatedResult[ResourcesUpdate]:
            await tx.load_resources()
            return await tx.query_resources(
                resources_id=resources_id,
                resources_id_contains=resources_id_contains,
                sort_by=sort_by,
                sort_order=sort_order,
                limit=limit,
                offset=offset,
            )

        return await self._run(body, write=False)

    # ---------------------------------------------------------------------------------------------
    # workers
    async def query_workers(
        self,
        *,
        status_in: Optional[Sequence[str]] = None,
        worker_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Worker]:
        await self._scan()

        async def body(tx: _Transaction) -> PaginatedResult[Worker]:
            for row in await tx.conn.fetch("SELECT data FROM workers ORDER BY created"):
                worker = Worker.model_validate_json(row["data"])
                tx._workers[worker.worker_id] = worker
            return await tx.query_workers(
                status_in=status_in,
                worker_id_contains=worker_id_contains,
                filter_logic=filter_logic,
                sort_by=sort_by,
                sort_order=sort_order,
                limit=limit,
                offset=offset,
            )

        return await self._run(body, write=False)

    async def get_worker_by_id(self, worker_id: str) -> Optional[Worker]:
        async def body(tx: _Transaction) -> Optional[Worker]:
            row = await tx.conn.fetchval("SELECT data FROM workers WHERE worker_id = $1", worker_id)
            return Worker.model_validate_json(row) if row is not None else None

        return await self._run(body, write=False)

    async def update_worker(self, worker_id: str, heartbeat_stats: Any = UNSET) -> Worker:
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty str, got {worker_id!r}")
        self._check_open()

        async def body(tx: _Transaction) -> Worker:
            await tx.lock_workers([worker_id])
            return await tx.update_worker(worker_id, heartbeat_stats)

        return await self._run(body)

    # ---------------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close this store's connections (every event loop's) and wake its waiters. Idempotent."""
        with self._loops_lock:
            if self._closed:
                return
            self._closed = True
            loops = list(self._loops.items())
            self._loops.clear()
        current = asyncio.get_running_loop()
        for loop, future in loops:
            if not future.done() or future.exception() is not None:
                continue
            connections = future.result()
            if loop is current:
                connections.wake()
                if connections.listener is not None:
                    await connections.listener.close()
                await connections.pool.close()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(connections.wake)
                loop.call_soon_threadsafe(_terminate, connections)
            # A loop that already ended (asyncio.run in a thread) cannot run its connections' closing
            # any more; the server ends those sessions when their sockets are collected.


def _terminate(connections: _LoopConnections) -> None:
    connections.pool.terminate()
    if connections.listener is not None:
        connections.listener.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset between calls: nothing to undo (calls leave no session state: no LISTEN, no
    session locks or settings, every transaction ended), so no round trip for it."""


async def _forget_committed_transactions(tx: _Transaction) -> None:
    await tx.conn.execute(
        "DELETE FROM committed_transactions WHERE committed_at < now() - make_interval(secs => $1)",
        _COMMITTED_TRANSACTIONS_KEPT_SECONDS,
    )


def _run_in_own_loop(make: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine to completion on a private event loop in a helper thread (callers may be
    inside a running loop, where ``asyncio.run`` is not allowed)."""
    errors: List[BaseException] = []

    def target() -> None:
        async def main() -> None:
            await make()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="agl-postgres-open", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
