"""``http://host:port``: a LightningStore whose data lives in a store server (``agl store serve``).

Same results and typed errors as the store behind the server; pooled connections per event loop,
coalesced batch requests, long-poll waits, and retries only of what is idempotent (design notes: ``docs/internals.md``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import uuid
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union, cast
from urllib.parse import quote, urlsplit

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, from_json, to_json

from agentlightning.env_var import LightningEnvVar, resolve_str_env_var
from agentlightning.errors import InvalidSpanError, StoreClosedError, StoreServerError, StoreUnavailableError
from agentlightning.types import (
    ROLLOUT_STATUSES,
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

from ._http import HttpPool, HttpResponse, TransportError
from .base import UNSET, FilterLogic, LightningStore, LightningStoreCapabilities, LightningStoreStatistics, SortOrder
from .query import check_statuses
from .wire import (
    API_PREFIX,
    BATCH_PATH,
    IDEMPOTENCY_HEADER,
    MAX_BATCH_CALLS,
    OTLP_TRACES_PATH,
    AddSpansResponse,
    AttemptsPage,
    ErrorBody,
    ResourcesPage,
    RolloutsPage,
    RolloutView,
    SequenceIdsResponse,
    SpansPage,
    WaitForRolloutsResponse,
    WorkersPage,
    exception_from_error,
    type_adapter,
)

__all__ = ["HttpLightningStore", "LightningStoreClient"]

logger = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS: Tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
T = TypeVar("T")
R = TypeVar("R")


class _Retry(Exception):
    """Raised inside one try of a request whose failure is worth another try; ``error`` is the cause."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _segment(name: str, value: Any) -> str:
    """A path segment from an id, checked like the store checks it (a wrong type never reaches the server)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return quote(value, safe="")


_TLS: List[Any] = []


def _tls_context() -> Any:
    """One verifying TLS context per process (building one loads the CA bundle: tens of ms)."""
    if not _TLS:
        import ssl

        _TLS.append(ssl.create_default_context())
    return _TLS[0]


def _dump(body: Any) -> bytes:
    try:
        return to_json(body)
    except PydanticSerializationError as exc:
        raise TypeError(f"cannot send this to the store server, it is not JSON-serializable: {exc}") from None


class _Batcher:
    """Coalesces the calls that tasks on one event loop make in the same loop round into one
    ``POST /v1/agl/batch`` request; each caller gets its own answer and retries on its own."""

    def __init__(self, pool: HttpPool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._queued: List[Tuple[bytes, "asyncio.Future[Tuple[int, Any]]"]] = []
        self._scheduled = False
        self._sending: set["asyncio.Task[None]"] = set()

    def submit(self, call: bytes) -> "asyncio.Future[Tuple[int, Any]]":
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Tuple[int, Any]]" = loop.create_future()
        self._queued.append((call, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send_queued)
        return future

    def _send_queued(self) -> None:
        self._scheduled = False
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), MAX_BATCH_CALLS):
            self._spawn(queued[start : start + MAX_BATCH_CALLS])

    def _spawn(self, calls: List[Tuple[bytes, "asyncio.Future[Tuple[int, Any]]"]]) -> None:
        task = asyncio.ensure_future(self._send(calls))
        self._sending.add(task)  # keep a reference until it is done
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: List[Tuple[bytes, "asyncio.Future[Tuple[int, Any]]"]]) -> None:
        body = b'{"calls":[' + b",".join(call for call, _ in calls) + b"]}"
        try:
            response = await self._pool.request(
                "POST",
                API_PREFIX + BATCH_PATH,
                body=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            )
            answers = self._answers(response, len(calls))
        except Exception as exc:  # a network failure or a garbled answer: every caller retries on its own
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (its loop is closing)
            for _, future in calls:
                future.cancel()
            raise
        if answers is None:
            # The request as a whole was refused (one call's arguments are invalid, or the body is too
            # large): send each call alone, so each caller gets its own answer.
            for item in calls:
                self._spawn([item])
            return
        for (_, future), answer in zip(calls, answers, strict=True):
            if not future.done():
                future.set_result(answer)

    @staticmethod
    def _answers(response: HttpResponse, count: int) -> Optional[List[Tuple[int, Any]]]:
        """Each call's (status, parsed body), or None when the request was refused as a whole (4xx)."""
        status = response.status
        if status == 200:
            results = from_json(response.body)["results"]
            if len(results) != count:
                raise StoreServerError(f"the store server answered {len(results)} results for {count} calls", 200)
            return [(int(r["status"]), r["body"]) for r in results]
        if 400 <= status < 500 and status != 401 and count > 1:
            return None
        # 401, 5xx, or a lone call's 4xx: the answer of every call in it
        return [(status, _json_or_none(response.body))] * count


def _json_or_none(content: bytes) -> Any:
    try:
        return from_json(content)
    except ValueError:
        return content.decode("utf-8", "replace")


class HttpLightningStore(LightningStore):
    """Client of a store server at ``url`` (``https://`` behind a TLS proxy); ``token`` defaults to
    ``AGL_STORE_TOKEN``, ``retry_delays`` are the pauses between retries, ``wait_chunk_seconds`` how long
    one long-poll request of ``wait_for_rollouts`` asks the server to hold."""

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        wait_chunk_seconds: float = 10.0,
        max_connections: int = 64,
        connection_timeout: Optional[float] = None,
        health_retry_delays: Any = None,
    ) -> None:
        # ``connection_timeout`` and ``health_retry_delays`` are 0.3 LightningStoreClient options, accepted
        # for compatibility (the first is ``connect_timeout``; there is no separate health probing).
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"store server URL must look like http://host:port, got {url!r}")
        if parts.username or parts.password:
            raise ValueError(
                "do not put credentials in the store URL; pass token=... or set the AGL_STORE_TOKEN environment variable"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"store server URL takes no query or fragment, got {url!r}")
        path = parts.path.rstrip("/")
        if path.endswith(API_PREFIX):
            path = path[: -len(API_PREFIX)]
        self.base_url = f"{parts.scheme}://{parts.netloc}{path}"
        self._token = token if token is not None else resolve_str_env_var(LightningEnvVar.AGL_STORE_TOKEN)
        self.request_timeout = float(request_timeout)
        self.connect_timeout = float(connection_timeout if connection_timeout is not None else connect_timeout)
        self.retry_delays = tuple(float(d) for d in retry_delays)
        if wait_chunk_seconds <= 0:
            raise ValueError(f"wait_chunk_seconds must be > 0, got {wait_chunk_seconds!r}")
        self.wait_chunk_seconds = float(wait_chunk_seconds)
        self.max_connections = int(max_connections)
        self._pools: Dict[asyncio.AbstractEventLoop, HttpPool] = {}
        self._batchers: Dict[HttpPool, _Batcher] = {}
        self._pools_lock = threading.Lock()
        self._closed = False

    @property
    def token(self) -> Optional[str]:
        """The bearer token sent with every request (None: no token)."""
        return self._token

    @classmethod
    def from_uri(cls, uri: str) -> "HttpLightningStore":
        return cls(uri)

    def __repr__(self) -> str:
        return f"HttpLightningStore({self.base_url!r})"

    @property
    def capabilities(self) -> LightningStoreCapabilities:
        return LightningStoreCapabilities(thread_safe=True, async_safe=True, zero_copy=False, otlp_traces=True)

    def otlp_traces_endpoint(self) -> str:
        return f"{self.base_url}{OTLP_TRACES_PATH}"

    # ------------------------------------------------------------------------------------------
    # transport
    def _pool(self) -> HttpPool:
        loop = asyncio.get_running_loop()
        with self._pools_lock:
            if self._closed:
                raise StoreClosedError(f"{self!r} is closed")
            pool = self._pools.get(loop)
            if pool is None:
                for other in [lp for lp in self._pools if lp.is_closed()]:
                    self._batchers.pop(self._pools.pop(other), None)  # its loop is gone; so are its connections
                headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
                pool = HttpPool(
                    self.base_url,
                    headers=headers,
                    connect_timeout=self.connect_timeout,
                    max_connections=self.max_connections,
                    tls=_tls_context() if self.base_url.startswith("https:") else None,
                )
                self._pools[loop] = pool
            return pool

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Optional[Dict[str, str]] = None,
        mutation: bool = False,
        extra_wait: float = 0.0,
        none_on: Optional[str] = None,
    ) -> Optional[bytes]:
        """Send one request (retrying what is safe to retry) and return the body of its 2xx answer.

        ``none_on``: the name of a NotFound error type that means "no such item" (returns None).
        """
        pool = self._pool()
        headers: Dict[str, str] = {}
        content: Optional[bytes] = None
        if body is not None:
            content = _dump(body)
            headers["Content-Type"] = "application/json"
        if mutation:
            headers[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
        timeout = self.request_timeout + extra_wait
        url = f"{API_PREFIX}{path}"

        async def once() -> Optional[bytes]:
            try:
                response = await pool.request(
                    method, url, body=content, params=params, headers=headers, timeout=timeout
                )
            except TransportError as exc:  # connect/read/write failures and timeouts
                raise _Retry(exc) from exc
            if response.status < 400:
                return response.body
            error_body = self._error_body(response.body)
            if (
                none_on is not None
                and response.status == 404
                and error_body is not None
                and error_body.error == none_on
            ):
                return None
            error = exception_from_error(response.status, error_body, response.text)
            raise _Retry(error) if response.status >= 500 else error

        return await self._retrying(f"request {method} {url}", once)

    async def _batched(self, op: str, args: Dict[str, Any], tp: Type[T], *, mutation: bool = False) -> T:
        """One store call through the batch route, coalesced with the calls other tasks make at the
        same moment; retried like :meth:`_call` (a mutation keeps its idempotency key across retries)."""
        pool = self._pool()
        batcher = self._batchers.get(pool)
        if batcher is None:
            batcher = self._batchers[pool] = _Batcher(pool, self.request_timeout)
        call: Dict[str, Any] = {"op": op, "args": args}
        if mutation:
            call["idempotency_key"] = uuid.uuid4().hex
        content = _dump(call)

        async def once() -> T:
            try:
                status, body = await batcher.submit(content)
            except (TransportError, StoreServerError, ValueError) as exc:  # lost or garbled: retry
                raise _Retry(exc) from exc
            if status < 400:
                return cast(T, type_adapter(tp).validate_python(body))
            error = exception_from_error(status, self._error_body(body), body if isinstance(body, str) else "")
            raise _Retry(error) if status >= 500 else error

        return await self._retrying(f"batch call {op}", once)

    async def _retrying(self, what: str, once: Callable[[], Awaitable[R]]) -> R:
        """``once()``, tried again after each of ``retry_delays`` (jittered by ±25%) while it raises
        :class:`_Retry` (a transport failure or a 5xx: safe to repeat); then the last error is raised."""
        last_error: Optional[BaseException] = None
        for delay in (None, *self.retry_delays):
            if delay is not None:
                await asyncio.sleep(delay * (0.75 + random.random() / 2))
            try:
                return await once()
            except _Retry as retry:
                last_error = retry.error
                logger.debug("store %s failed (%r); retrying", what, last_error)
        raise self._gave_up(last_error)

    def _gave_up(self, last_error: Optional[BaseException]) -> BaseException:
        if isinstance(last_error, StoreServerError):
            return last_error
        error = StoreUnavailableError(
            f"store server {self.base_url} unreachable after {len(self.retry_delays) + 1} tries: {last_error}"
        )
        error.__cause__ = last_error
        return error

    @staticmethod
    def _error_body(content: Any) -> Optional[ErrorBody]:
        """The error body of an answer (its bytes, or a batch result's parsed JSON); ``None`` when it is not one."""
        try:
            if isinstance(content, bytes):
                return ErrorBody.model_validate_json(content)
            return ErrorBody.model_validate(content) if isinstance(content, dict) else None
        except ValidationError:
            return None

    @staticmethod
    def _parse(tp: Any, content: Optional[bytes]) -> Any:
        assert content is not None
        return type_adapter(tp).validate_json(content)

    async def _get(
        self, tp: Type[T], path: str, *, params: Optional[Dict[str, Any]] = None, none_on: Optional[str] = None
    ) -> Optional[T]:
        content = await self._call("GET", path, params=params, none_on=none_on)
        return None if content is None else cast(T, self._parse(tp, content))

    async def _post(self, tp: Type[T], path: str, body: Any, *, mutation: bool = False, method: str = "POST") -> T:
        return cast(T, self._parse(tp, await self._call(method, path, body, mutation=mutation)))

    # ------------------------------------------------------------------------------------------
    async def statistics(self) -> LightningStoreStatistics:
        return cast(LightningStoreStatistics, await self._get(dict, "/statistics"))

    async def sync(self) -> None:
        await self._call("POST", "/sync", {})

    async def health(self) -> Dict[str, Any]:
        """The server's ``/health`` answer (raises when it is unreachable)."""
        return cast(Dict[str, Any], await self._get(dict, "/health"))

    async def close(self) -> None:
        """Close this client's connections (the server and its store keep running)."""
        with self._pools_lock:
            self._closed = True
            pools, self._pools = self._pools, {}
            self._batchers = {}
        current = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is current:
                await pool.aclose()
                continue
            try:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(pool.close)  # closes on its own loop
            except RuntimeError:  # closed meanwhile
                pass

    # -- rollouts -------------------------------------------------------------------------------
    async def start_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        worker_id: Optional[str] = None,
    ) -> AttemptedRollout:
        return await self._post(AttemptedRollout, "/rollouts", _arguments(locals()), mutation=True)

    async def enqueue_rollout(
        self,
        input: Any,
        mode: Optional[RolloutMode] = None,
        resources_id: Optional[str] = None,
        config: Optional[RolloutConfig] = None,
        metadata: Optional[Dict[str, Any]] = None,
        client_request_id: Optional[str] = None,
    ) -> Rollout:
        (rollout,) = await self._enqueue([_arguments(locals())])
        return rollout

    async def enqueue_many_rollouts(self, rollouts: Sequence[EnqueueRolloutRequest]) -> List[Rollout]:
        if isinstance(rollouts, (str, bytes)) or not isinstance(rollouts, Sequence):
            raise TypeError(f"rollouts must be a list of EnqueueRolloutRequest, got {type(rollouts).__name__}")
        return await self._enqueue(list(rollouts))

    async def _enqueue(self, requests: List[Any]) -> List[Rollout]:
        prepared: List[Any] = []
        for request in requests:
            if isinstance(request, EnqueueRolloutRequest):
                request = request.model_dump(exclude_unset=True)
            if isinstance(request, dict) and request.get("client_request_id") is None:
                # The store remembers this id: a retried enqueue (lost answer, server restart) never duplicates.
                request = {**request, "client_request_id": f"agl-http-{uuid.uuid4().hex}"}
            prepared.append(request)
        return await self._batched("enqueue_many_rollouts", {"rollouts": prepared}, List[Rollout], mutation=True)

    async def dequeue_many_rollouts(self, *, limit: int = 1, worker_id: Optional[str] = None) -> List[AttemptedRollout]:
        body = {"limit": limit, "worker_id": worker_id}
        return await self._batched("dequeue_many_rollouts", body, List[AttemptedRollout], mutation=True)

    async def start_attempt(self, rollout_id: str, worker_id: Optional[str] = None) -> AttemptedRollout:
        path = f"/rollouts/{_segment('rollout_id', rollout_id)}/attempts"
        return await self._post(AttemptedRollout, path, {"worker_id": worker_id}, mutation=True)

    async def query_rollouts(
        self,
        *,
        status_in: Optional[Sequence[Any]] = None,
        rollout_id_in: Optional[Sequence[str]] = None,
        rollout_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
        status: Optional[Sequence[Any]] = None,
        rollout_ids: Optional[Sequence[str]] = None,
    ) -> PaginatedResult[Union[Rollout, AttemptedRollout]]:
        body = _arguments(locals())
        check_statuses(status_in, ROLLOUT_STATUSES, "rollout status")  # a str is an error, not a list of chars
        check_statuses(status, ROLLOUT_STATUSES, "rollout status")
        return await self._post(RolloutsPage, "/rollouts/search", body)

    async def get_rollout_by_id(self, rollout_id: str) -> Optional[Union[Rollout, AttemptedRollout]]:
        path = f"/rollouts/{_segment('rollout_id', rollout_id)}"
        return await self._get(RolloutView, path, none_on="RolloutNotFoundError")  # type: ignore[arg-type]

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
        path = f"/rollouts/{_segment('rollout_id', rollout_id)}"
        body = _arguments(locals(), skip=("rollout_id", "path"))
        return await self._post(Rollout, path, body, mutation=True, method="PATCH")

    async def wait_for_rollouts(self, *, rollout_ids: List[str], timeout: Optional[float] = None) -> List[Rollout]:
        if isinstance(rollout_ids, str):
            raise TypeError("rollout_ids must be a list of ids, not a single string")
        ids = list(rollout_ids)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(float(timeout), 0.0)
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            chunk = self.wait_chunk_seconds if remaining is None else min(remaining, self.wait_chunk_seconds)
            content = await self._call(
                "POST", "/waits/rollouts", {"rollout_ids": ids, "timeout": chunk}, extra_wait=chunk
            )
            answer: WaitForRolloutsResponse = self._parse(WaitForRolloutsResponse, content)
            if not answer.pending or (deadline is not None and loop.time() >= deadline):
                return list(answer.rollouts)

    # -- attempts -------------------------------------------------------------------------------
    async def query_attempts(
        self,
        rollout_id: str,
        *,
        sort_by: Optional[str] = "sequence_id",
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Attempt]:
        path = f"/rollouts/{_segment('rollout_id', rollout_id)}/attempts"
        params = {"sort_order": str(sort_order), "limit": str(limit), "offset": str(offset)}
        if sort_by is not None:
            params["sort_by"] = str(sort_by)
        return cast(AttemptsPage, await self._get(AttemptsPage, path, params=params))

    async def get_latest_attempt(self, rollout_id: str) -> Optional[Attempt]:
        path = f"/rollouts/{_segment('rollout_id', rollout_id)}/attempts/latest"
        return await self._get(Attempt, path, none_on="AttemptNotFoundError")

    async def update_attempt(
        self,
        rollout_id: str,
        attempt_id: str,
        status: Any = UNSET,
        worker_id: Any = UNSET,
        last_heartbeat_time: Any = UNSET,
        metadata: Any = UNSET,
    ) -> Attempt:
        _segment("rollout_id", rollout_id)  # a wrong type or an empty id never reaches the server
        _segment("attempt_id", attempt_id)
        return await self._batched("update_attempt", _arguments(locals()), Attempt, mutation=True)

    # -- spans ----------------------------------------------------------------------------------
    async def add_many_spans(self, spans: Sequence[Span]) -> List[Span]:
        spans = list(spans)
        for span in spans:
            if not isinstance(span, Span):
                raise InvalidSpanError(f"expected an agentlightning Span, got {type(span).__name__}: {span!r:.200}")
        if not spans:
            return []
        answer = await self._batched("add_many_spans", {"spans": spans}, AddSpansResponse, mutation=True)
        return [spans[i] for i in answer.inserted if 0 <= i < len(spans)]

    async def get_many_span_sequence_ids(self, rollout_attempt_ids: Sequence[Tuple[str, str]]) -> List[int]:
        pairs = [list(pair) for pair in rollout_attempt_ids]
        if not pairs:
            return []
        # Not idempotent, and safe to repeat: a retry after a lost answer only leaves a gap in the ids.
        answer = await self._batched("get_many_span_sequence_ids", {"pairs": pairs}, SequenceIdsResponse)
        return list(answer.sequence_ids)

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
        return await self._batched("query_spans", _arguments(locals()), SpansPage)

    # -- resources ------------------------------------------------------------------------------
    async def add_resources(self, resources: NamedResources) -> ResourcesUpdate:
        return await self._post(ResourcesUpdate, "/resources", {"resources": resources}, mutation=True)

    async def update_resources(self, resources_id: str, resources: NamedResources) -> ResourcesUpdate:
        if not isinstance(resources_id, str) or not resources_id:
            raise ValueError(f"resources_id must be a non-empty str, got {resources_id!r}")
        path = f"/resources/{_segment('resources_id', resources_id)}"
        return await self._post(ResourcesUpdate, path, {"resources": resources}, mutation=True, method="PUT")

    async def get_resources_by_id(self, resources_id: str) -> Optional[ResourcesUpdate]:
        path = f"/resources/{_segment('resources_id', resources_id)}"
        return await self._get(ResourcesUpdate, path, none_on="ResourcesNotFoundError")

    async def get_latest_resources(self) -> Optional[ResourcesUpdate]:
        return await self._get(ResourcesUpdate, "/resources/latest", none_on="ResourcesNotFoundError")

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
        return await self._post(ResourcesPage, "/resources/search", _arguments(locals()))

    # -- workers --------------------------------------------------------------------------------
    async def query_workers(
        self,
        *,
        status_in: Optional[Sequence[Any]] = None,
        worker_id_contains: Optional[str] = None,
        filter_logic: FilterLogic = "and",
        sort_by: Optional[str] = None,
        sort_order: SortOrder = "asc",
        limit: int = -1,
        offset: int = 0,
    ) -> PaginatedResult[Worker]:
        body = _arguments(locals())
        check_statuses(status_in, ("idle", "busy", "unknown"), "worker status")
        return await self._post(WorkersPage, "/workers/search", body)

    async def get_worker_by_id(self, worker_id: str) -> Optional[Worker]:
        path = f"/workers/{_segment('worker_id', worker_id)}"
        return await self._get(Worker, path, none_on="WorkerNotFoundError")

    async def update_worker(self, worker_id: str, heartbeat_stats: Any = UNSET) -> Worker:
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty str, got {worker_id!r}")
        path = f"/workers/{_segment('worker_id', worker_id)}"
        body = {} if heartbeat_stats is UNSET else {"heartbeat_stats": heartbeat_stats}
        return await self._post(Worker, path, body, mutation=True, method="PATCH")


def _arguments(arguments: Dict[str, Any], skip: Sequence[str] = ()) -> Dict[str, Any]:
    """A method's arguments (its ``locals()`` on entry) as the request body; UNSET ones are left out."""
    return {k: v for k, v in arguments.items() if k != "self" and k not in skip and v is not UNSET}


class LightningStoreClient(HttpLightningStore):
    """0.3 name of :class:`HttpLightningStore`, whose first argument was called ``server_address``."""

    def __init__(
        self,
        server_address: str,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        health_retry_delays: Any = None,
        request_timeout: float = 30.0,
        connection_timeout: Optional[float] = None,
        **options: Any,
    ) -> None:
        super().__init__(
            server_address,
            retry_delays=retry_delays,
            health_retry_delays=health_retry_delays,
            request_timeout=request_timeout,
            connection_timeout=connection_timeout,
            **options,
        )
