"""The store server's ASGI app (FastAPI): every LightningStore operation under ``/v1/agl``, OTLP at ``/v1/traces``.

Errors are JSON bodies (:class:`agentlightning.store.wire.ErrorBody`) with a 4xx status for
anything caused by the request: unknown ids 404, forbidden status changes 409, bad values 400,
wrong types and schema violations 422, bodies over the limit 413, missing or wrong token 401.
A 5xx means a bug or an unavailable store; the server keeps serving either way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, Optional, Tuple, Type

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import Annotated

from agentlightning import errors
from agentlightning.store.base import LightningStore
from agentlightning.store.wire import (
    API_PREFIX,
    API_VERSION,
    IDEMPOTENCY_HEADER,
    OTLP_TRACES_PATH,
    AddSpansRequest,
    AddSpansResponse,
    AttemptsPage,
    DequeueRolloutsRequest,
    EnqueueRolloutsRequest,
    ErrorBody,
    QueryAttemptsRequest,
    QueryResourcesRequest,
    QueryRolloutsRequest,
    QuerySpansRequest,
    QueryWorkersRequest,
    ResourcesPage,
    ResourcesRequest,
    RolloutsPage,
    RolloutView,
    SequenceIdsRequest,
    SequenceIdsResponse,
    SpanFilters,
    SpansPage,
    StartAttemptRequest,
    StartRolloutRequest,
    UpdateAttemptRequest,
    UpdateRolloutRequest,
    UpdateWorkerRequest,
    WaitForRolloutsRequest,
    WaitForRolloutsResponse,
    WorkersPage,
    describe_validation_errors,
    error_body,
    error_status,
    validation_error_kind,
)
from agentlightning.types import (
    TERMINAL_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    Span,
    Worker,
)

from . import otlp
from .serve import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT_SECONDS

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]

ERROR_RESPONSES: Dict[int | str, Dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "A value the store rejects (invalid status, bad sort field, malformed JSON, ...)."),
        (401, "Missing or wrong bearer token."),
        (404, "An unknown rollout, attempt, resources or worker id."),
        (409, "A status change the state machine forbids."),
        (413, "Request body over the server's limit."),
        (422, "A body or parameter of the wrong type or shape."),
        (503, "The store is closed or shutting down; retry later."),
    )
}

_ADAPTERS: Dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(tp)
    if adapter is None:
        adapter = _ADAPTERS[tp] = TypeAdapter(tp)
    return adapter


def _json(value: Any, tp: Any, status_code: int = 200) -> Response:
    return Response(content=_adapter(tp).dump_json(value), status_code=status_code, media_type=JSON)


def _page(page: PaginatedResult[Any], item_type: Any) -> Response:
    """A PaginatedResult as JSON (built by hand: the store's pages are not parametrized models)."""
    items = _adapter(List[item_type]).dump_json(list(page.items))
    tail = f',"limit":{int(page.limit)},"offset":{int(page.offset)},"total":{int(page.total)}}}'.encode()
    return Response(content=b'{"items":' + items + tail, media_type=JSON)


def _error(status_code: int, name: str, message: str, exc: Optional[BaseException] = None, **details: Any) -> Response:
    body = error_body(name, message, exc, **details)
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return Response(content=body.model_dump_json(), status_code=status_code, media_type=JSON, headers=headers)


def _not_found(kind: Type[errors.NotFoundError], item_id: str) -> Response:
    exc = kind(item_id)
    return _error(404, kind.__name__, str(exc), exc)


def _fields(model: Any) -> Dict[str, Any]:
    """The fields present in a request body (absent ones mean "leave unchanged")."""
    return {name: getattr(model, name) for name in model.model_fields_set}


# -- idempotent replays -------------------------------------------------------------------------
class _Replays:
    """Responses of mutations by ``Idempotency-Key``: a repeated key gets the first response again.

    Bounded: entries live ``ttl_seconds`` (longer than any client's retries), at most ``max_entries``
    of them and ``max_bytes`` in all; an answer over ``max_entry_bytes`` is not kept (a retry of such a
    request is applied again; an enqueue is still safe, the store remembers its client_request_id)."""

    def __init__(
        self,
        max_entries: int = 10_000,
        ttl_seconds: float = 900.0,
        max_bytes: int = 64 << 20,
        max_entry_bytes: int = 4 << 20,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._bytes = 0
        self._done: "OrderedDict[Tuple[str, str, str], Tuple[float, int, bytes]]" = OrderedDict()
        self._running: Dict[Tuple[str, str, str], "asyncio.Future[None]"] = {}

    async def run(self, request: Request, compute: Callable[[], Awaitable[Response]]) -> Response:
        key_text = request.headers.get(IDEMPOTENCY_HEADER)
        if not key_text:
            return await compute()
        if len(key_text) > 200:
            raise ValueError(f"{IDEMPOTENCY_HEADER} must be at most 200 characters, got {len(key_text)}")
        key = (request.method, request.url.path, key_text)
        while True:
            hit = self._done.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return Response(
                    content=hit[2], status_code=hit[1], media_type=JSON, headers={"Idempotent-Replayed": "true"}
                )
            running = self._running.get(key)
            if running is None:
                break
            await asyncio.shield(running)  # the first request with this key is still being applied
        future: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            response = await compute()
            if response.status_code < 400 and len(response.body) <= self.max_entry_bytes:
                self._remember(key, response.status_code, bytes(response.body))
            return response
        finally:
            del self._running[key]
            future.set_result(None)

    def _remember(self, key: Tuple[str, str, str], status_code: int, body: bytes) -> None:
        now = time.monotonic()
        old = self._done.pop(key, None)
        if old is not None:
            self._bytes -= len(old[2])
        self._done[key] = (now + self.ttl_seconds, status_code, body)
        self._bytes += len(body)
        while self._done:
            expires, _, oldest = next(iter(self._done.values()))
            if expires >= now and len(self._done) <= self.max_entries and self._bytes <= self.max_bytes:
                break
            self._done.popitem(last=False)
            self._bytes -= len(oldest)


# -- ASGI guard: token and body size -------------------------------------------------------------
class PayloadTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the server's limit of {limit} bytes")


async def _send_error(send: Callable[[Any], Awaitable[None]], status_code: int, name: str, message: str) -> None:
    response = _error(status_code, name, message)
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


@dataclass
class _Context:
    """What the shared routes need of the server a request came to."""

    store: LightningStore
    max_wait_seconds: float
    max_body_bytes: int
    replays: _Replays = field(default_factory=_Replays)


async def _context(request: Request) -> _Context:
    # async: FastAPI would run a plain function in a worker thread, a hand-off per request
    context: _Context = request.scope["agl.context"]
    return context


Ctx = Annotated[_Context, Depends(_context)]


class StoreApp:
    """The ASGI app of one store server: checks the bearer token and the body size, then hands the
    request to the shared FastAPI routes with this server's store.

    The FastAPI app (routes, OpenAPI document) is built once per process and shared by every
    StoreApp, so starting a server costs no route building.
    """

    def __init__(
        self, store: LightningStore, *, token: Optional[str], max_body_bytes: int, max_wait_seconds: float
    ) -> None:
        if not isinstance(store, LightningStore):
            raise TypeError(f"store must be a LightningStore, got {type(store).__name__}")
        self.store = store
        self.fastapi = shared_app()
        self.context = _Context(store=store, max_wait_seconds=max_wait_seconds, max_body_bytes=max_body_bytes)
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body_bytes = max_body_bytes

    def openapi(self) -> Dict[str, Any]:
        """The OpenAPI document (also served at ``/openapi.json``)."""
        return self.fastapi.openapi()

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.fastapi(scope, receive, send)
            return
        headers: Dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.lower(), value)
        if self.expected is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                why = "no Authorization header" if not given else "wrong bearer token"
                await _send_error(
                    send,
                    401,
                    "Unauthorized",
                    f"{why}: send 'Authorization: Bearer <token>' (clients read AGL_STORE_TOKEN)",
                )
                return
        length = headers.get(b"content-length")
        limit = self.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_error(send, 400, "ValueError", f"Content-Length is not a number: {length[:50]!r}")
                return
            if declared > limit:
                await _send_error(
                    send, 413, "PayloadTooLarge", f"request body of {declared} bytes is over the limit of {limit}"
                )
                return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        scope["agl.context"] = self.context
        try:
            await self.fastapi(scope, limited_receive, tracked_send)
        except PayloadTooLarge as exc:
            if started:
                raise
            await _send_error(send, 413, "PayloadTooLarge", str(exc.detail))


# -- the app ------------------------------------------------------------------------------------
def create_app(
    store: LightningStore,
    *,
    token: Optional[str] = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
) -> StoreApp:
    """The ASGI app serving ``store``.

    ``token``: required as ``Authorization: Bearer <token>`` on every request (None: no auth).
    ``max_body_bytes``: larger request bodies (also after gzip decompression) get 413.
    ``max_wait_seconds``: the longest one ``wait_for_rollouts`` request blocks (clients ask again).
    """
    return StoreApp(store, token=token, max_body_bytes=max_body_bytes, max_wait_seconds=max_wait_seconds)


_SHARED: Optional[FastAPI] = None
_SHARED_LOCK = threading.Lock()


def shared_app() -> FastAPI:
    """The FastAPI app with every route, built on first use."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = _build_app()
        return _SHARED


def _build_app() -> FastAPI:
    app = FastAPI(
        title="Agent Lightning store",
        version=API_VERSION,
        description=(
            "Every LightningStore operation as a REST API under /v1/agl, plus OTLP/HTTP trace ingest at /v1/traces "
            "(protobuf or JSON; spans name their rollout and attempt with the agentlightning.rollout_id and "
            "agentlightning.attempt_id attributes). Mutations accept an Idempotency-Key header: a retry with the "
            "same key is answered with the first response instead of being applied twice."
        ),
    )
    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)

    # -- errors ---------------------------------------------------------------------------------
    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _body_error(list(exc.errors()))

    async def on_store_error(request: Request, exc: Exception) -> Response:
        mapped = error_status(exc)
        if mapped is None:
            return await on_bug(request, exc)
        status_code, name = mapped
        if isinstance(exc, ValidationError):
            message, listed = describe_validation_errors(exc.errors())
            return _error(status_code, name, message, errors=listed)
        return _error(status_code, name, str(exc), exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        names = {404: "RouteNotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge", 415: "UnsupportedMediaType"}
        name = names.get(exc.status_code, "HTTPError")
        detail = str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            name, detail = "InvalidJSON", "request body is not valid JSON (or not UTF-8)"
        elif exc.status_code == 400:
            name = "BadRequest"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; the API is under {API_PREFIX} (see /docs)"
        response = _error(exc.status_code, name, detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_bug(request: Request, exc: Exception) -> Response:
        logger.error("store server: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "InternalServerError", f"{type(exc).__name__}: {exc}")

    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for error_type in (errors.AgentLightningError, ValueError, TypeError):
        app.add_exception_handler(error_type, on_store_error)
    app.add_exception_handler(Exception, on_bug)

    # -- service --------------------------------------------------------------------------------
    @api.get("/health", summary="Liveness check")
    async def health() -> Dict[str, str]:
        return {"status": "ok", "api_version": API_VERSION}

    @api.get("/statistics", summary="Store statistics", response_model=Dict[str, Any])
    async def statistics(ctx: Ctx) -> Response:
        return _json(dict(await ctx.store.statistics()), Dict[str, Any])

    @api.post("/sync", summary="Make every acknowledged write visible to other readers of the backend")
    async def sync(ctx: Ctx) -> Dict[str, str]:
        await ctx.store.sync()
        return {"status": "ok"}

    # -- rollouts -------------------------------------------------------------------------------
    @api.post("/rollouts", status_code=201, response_model=AttemptedRollout, summary="start_rollout")
    async def start_rollout(ctx: Ctx, body: StartRolloutRequest, request: Request) -> Response:
        async def compute() -> Response:
            result = await ctx.store.start_rollout(
                body.input,
                mode=_any(body.mode),
                resources_id=body.resources_id,
                config=body.config,
                metadata=body.metadata,
                worker_id=body.worker_id,
            )
            return _json(result, AttemptedRollout, 201)

        return await ctx.replays.run(request, compute)

    @api.post(
        "/queues/rollouts/enqueue", status_code=201, response_model=List[Rollout], summary="enqueue_many_rollouts"
    )
    async def enqueue_rollouts(ctx: Ctx, body: EnqueueRolloutsRequest, request: Request) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.enqueue_many_rollouts(body.rollouts), List[Rollout], 201)

        return await ctx.replays.run(request, compute)

    @api.post("/queues/rollouts/dequeue", response_model=List[AttemptedRollout], summary="dequeue_many_rollouts")
    async def dequeue_rollouts(ctx: Ctx, body: DequeueRolloutsRequest, request: Request) -> Response:
        async def compute() -> Response:
            result = await ctx.store.dequeue_many_rollouts(limit=body.limit, worker_id=body.worker_id)
            return _json(result, List[AttemptedRollout])

        return await ctx.replays.run(request, compute)

    async def _query_rollouts(ctx: _Context, query: QueryRolloutsRequest) -> Response:
        page = await ctx.store.query_rollouts(
            status_in=_any(query.status_in),
            rollout_id_in=query.rollout_id_in,
            rollout_id_contains=query.rollout_id_contains,
            filter_logic=_any(query.filter_logic),
            sort_by=query.sort_by,
            sort_order=_any(query.sort_order),
            limit=query.limit,
            offset=query.offset,
            status=_any(query.status),
            rollout_ids=query.rollout_ids,
        )
        return _page(page, RolloutView)

    @api.post("/rollouts/search", response_model=RolloutsPage, summary="query_rollouts")
    async def search_rollouts(ctx: Ctx, body: QueryRolloutsRequest) -> Response:
        return await _query_rollouts(ctx, body)

    @api.get("/rollouts", response_model=RolloutsPage, summary="query_rollouts (query string)")
    async def list_rollouts(ctx: Ctx, query: Annotated[_RolloutsQuery, Query()]) -> Response:
        return await _query_rollouts(ctx, query)

    @api.get("/rollouts/{rollout_id}", response_model=RolloutView, summary="get_rollout_by_id")
    async def get_rollout(ctx: Ctx, rollout_id: Annotated[str, Path()]) -> Response:
        rollout = await ctx.store.get_rollout_by_id(rollout_id)
        if rollout is None:
            return _not_found(errors.RolloutNotFoundError, rollout_id)
        return _json(rollout, RolloutView)

    @api.patch("/rollouts/{rollout_id}", response_model=Rollout, summary="update_rollout (fields present only)")
    async def update_rollout(ctx: Ctx, rollout_id: str, body: UpdateRolloutRequest, request: Request) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.update_rollout(rollout_id, **_fields(body)), Rollout)

        return await ctx.replays.run(request, compute)

    @api.post("/waits/rollouts", response_model=WaitForRolloutsResponse, summary="wait_for_rollouts (long poll)")
    async def wait_for_rollouts(ctx: Ctx, body: WaitForRolloutsRequest, request: Request) -> Response:
        ids = list(dict.fromkeys(body.rollout_ids))
        limit = ctx.max_wait_seconds
        wait = limit if body.timeout is None else min(max(body.timeout, 0.0), limit)
        if ids:
            waiting = asyncio.ensure_future(ctx.store.wait_for_rollouts(rollout_ids=ids, timeout=wait))
            disconnected = asyncio.ensure_future(_disconnect(request))
            try:
                await asyncio.wait({waiting, disconnected}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiting, disconnected):
                    task.cancel()
            if not waiting.done() or waiting.cancelled():
                return _error(499 if disconnected.done() else 503, "ClientClosedRequest", "the client went away")
            waiting.result()  # raises the store's error, if any
        # One consistent snapshot: a rollout finishing right now is either done or pending, never lost.
        found = {r.rollout_id: r for r in await ctx.store.query_rollouts(rollout_id_in=ids)} if ids else {}
        finished = [found[i] for i in ids if i in found and found[i].status in TERMINAL_ROLLOUT_STATUSES]
        pending = [i for i in ids if i in found and found[i].status not in TERMINAL_ROLLOUT_STATUSES]
        payload = WaitForRolloutsResponse.model_construct(rollouts=finished, pending=pending)
        return _json(payload, WaitForRolloutsResponse)

    # -- attempts -------------------------------------------------------------------------------
    @api.post(
        "/rollouts/{rollout_id}/attempts", status_code=201, response_model=AttemptedRollout, summary="start_attempt"
    )
    async def start_attempt(ctx: Ctx, rollout_id: str, body: StartAttemptRequest, request: Request) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.start_attempt(rollout_id, worker_id=body.worker_id), AttemptedRollout, 201)

        return await ctx.replays.run(request, compute)

    @api.get("/rollouts/{rollout_id}/attempts", response_model=AttemptsPage, summary="query_attempts")
    async def list_attempts(ctx: Ctx, rollout_id: str, query: Annotated[_AttemptsQuery, Query()]) -> Response:
        page = await ctx.store.query_attempts(
            rollout_id, sort_by=query.sort_by, sort_order=_any(query.sort_order), limit=query.limit, offset=query.offset
        )
        return _page(page, Attempt)

    @api.get(
        "/rollouts/{rollout_id}/attempts/latest",
        response_model=Attempt,
        summary="get_latest_attempt (404 AttemptNotFoundError when the rollout has none)",
    )
    async def latest_attempt(ctx: Ctx, rollout_id: str) -> Response:
        attempt = await ctx.store.get_latest_attempt(rollout_id)
        if attempt is None:
            return _not_found(errors.AttemptNotFoundError, "latest")
        return _json(attempt, Attempt)

    @api.patch(
        "/rollouts/{rollout_id}/attempts/{attempt_id}",
        response_model=Attempt,
        summary="update_attempt (attempt_id may be 'latest'; fields present only)",
    )
    async def update_attempt(
        ctx: Ctx, rollout_id: str, attempt_id: str, body: UpdateAttemptRequest, request: Request
    ) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.update_attempt(rollout_id, attempt_id, **_fields(body)), Attempt)

        return await ctx.replays.run(request, compute)

    # -- spans ----------------------------------------------------------------------------------
    @api.post(
        "/spans",
        response_model=AddSpansResponse,
        summary="add_many_spans (one batch, all or nothing)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/AddSpansRequest"}}},
            }
        },
    )
    async def add_spans(ctx: Ctx, request: Request) -> Response:
        # The hot path of trace ingest: the body is parsed straight from bytes by pydantic (no json.loads
        # into dicts first); the OpenAPI document still describes it (see _openapi_with_extra_bodies).
        try:
            body = AddSpansRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _body_error(exc.errors())

        async def compute() -> Response:
            spans = body.spans
            added = await ctx.store.add_many_spans(spans)
            inserted: List[int] = []
            position = 0
            for index, span in enumerate(spans):  # the store returns the new spans in request order
                if position < len(added) and _span_key(added[position]) == _span_key(span):
                    inserted.append(index)
                    position += 1
            return _json(AddSpansResponse.model_construct(inserted=inserted), AddSpansResponse)

        return await ctx.replays.run(request, compute)

    @api.post("/spans/sequence-ids", response_model=SequenceIdsResponse, summary="get_many_span_sequence_ids")
    async def sequence_ids(ctx: Ctx, body: SequenceIdsRequest) -> Response:
        issued = await ctx.store.get_many_span_sequence_ids([(r, a) for r, a in body.pairs])
        return _json(SequenceIdsResponse.model_construct(sequence_ids=issued), SequenceIdsResponse)

    async def _query_spans(ctx: _Context, query: QuerySpansRequest) -> Response:
        fields = query.model_dump()
        rollout_id = fields.pop("rollout_id")
        attempt_id = fields.pop("attempt_id")
        return _page(await ctx.store.query_spans(rollout_id, attempt_id, **fields), Span)

    @api.post("/spans/search", response_model=SpansPage, summary="query_spans")
    async def search_spans(ctx: Ctx, body: QuerySpansRequest) -> Response:
        return await _query_spans(ctx, body)

    @api.get("/rollouts/{rollout_id}/spans", response_model=SpansPage, summary="query_spans (query string)")
    async def list_spans(ctx: Ctx, rollout_id: str, query: Annotated[_SpansQuery, Query()]) -> Response:
        return await _query_spans(ctx, QuerySpansRequest(rollout_id=rollout_id, **query.model_dump()))

    # -- resources ------------------------------------------------------------------------------
    @api.post("/resources", status_code=201, response_model=ResourcesUpdate, summary="add_resources")
    async def add_resources(ctx: Ctx, body: ResourcesRequest, request: Request) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.add_resources(body.resources), ResourcesUpdate, 201)

        return await ctx.replays.run(request, compute)

    async def _query_resources(ctx: _Context, query: QueryResourcesRequest) -> Response:
        page = await ctx.store.query_resources(
            resources_id=query.resources_id,
            resources_id_contains=query.resources_id_contains,
            sort_by=query.sort_by,
            sort_order=_any(query.sort_order),
            limit=query.limit,
            offset=query.offset,
        )
        return _page(page, ResourcesUpdate)

    @api.post("/resources/search", response_model=ResourcesPage, summary="query_resources")
    async def search_resources(ctx: Ctx, body: QueryResourcesRequest) -> Response:
        return await _query_resources(ctx, body)

    @api.get("/resources", response_model=ResourcesPage, summary="query_resources (query string)")
    async def list_resources(ctx: Ctx, query: Annotated[_ResourcesQuery, Query()]) -> Response:
        return await _query_resources(ctx, query)

    @api.get("/resources/latest", response_model=ResourcesUpdate, summary="get_latest_resources (404 when none)")
    async def latest_resources(ctx: Ctx) -> Response:
        found = await ctx.store.get_latest_resources()
        if found is None:
            return _not_found(errors.ResourcesNotFoundError, "latest")
        return _json(found, ResourcesUpdate)

    @api.get("/resources/{resources_id}", response_model=ResourcesUpdate, summary="get_resources_by_id")
    async def get_resources(ctx: Ctx, resources_id: str) -> Response:
        found = await ctx.store.get_resources_by_id(resources_id)
        if found is None:
            return _not_found(errors.ResourcesNotFoundError, resources_id)
        return _json(found, ResourcesUpdate)

    @api.put(
        "/resources/{resources_id}", response_model=ResourcesUpdate, summary="update_resources (creates unknown ids)"
    )
    async def update_resources(ctx: Ctx, resources_id: str, body: ResourcesRequest, request: Request) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.update_resources(resources_id, body.resources), ResourcesUpdate)

        return await ctx.replays.run(request, compute)

    # -- workers --------------------------------------------------------------------------------
    async def _query_workers(ctx: _Context, query: QueryWorkersRequest) -> Response:
        page = await ctx.store.query_workers(
            status_in=_any(query.status_in),
            worker_id_contains=query.worker_id_contains,
            filter_logic=_any(query.filter_logic),
            sort_by=query.sort_by,
            sort_order=_any(query.sort_order),
            limit=query.limit,
            offset=query.offset,
        )
        return _page(page, Worker)

    @api.post("/workers/search", response_model=WorkersPage, summary="query_workers")
    async def search_workers(ctx: Ctx, body: QueryWorkersRequest) -> Response:
        return await _query_workers(ctx, body)

    @api.get("/workers", response_model=WorkersPage, summary="query_workers (query string)")
    async def list_workers(ctx: Ctx, query: Annotated[_WorkersQuery, Query()]) -> Response:
        return await _query_workers(ctx, query)

    @api.get("/workers/{worker_id}", response_model=Worker, summary="get_worker_by_id")
    async def get_worker(ctx: Ctx, worker_id: str) -> Response:
        found = await ctx.store.get_worker_by_id(worker_id)
        if found is None:
            return _not_found(errors.WorkerNotFoundError, worker_id)
        return _json(found, Worker)

    @api.patch("/workers/{worker_id}", response_model=Worker, summary="update_worker (a heartbeat; creates the worker)")
    async def update_worker(ctx: Ctx, worker_id: str, body: UpdateWorkerRequest, request: Request) -> Response:
        async def compute() -> Response:
            return _json(await ctx.store.update_worker(worker_id, **_fields(body)), Worker)

        return await ctx.replays.run(request, compute)

    app.include_router(api)
    _add_manual_bodies_to_openapi(app, [AddSpansRequest])

    # -- OTLP/HTTP ------------------------------------------------------------------------------
    @app.post(
        OTLP_TRACES_PATH,
        summary="OTLP/HTTP trace export (ExportTraceServiceRequest, protobuf or JSON)",
        responses={
            200: {"description": "ExportTraceServiceResponse; partial_success counts spans that were rejected."},
            400: {
                "description": "Not a valid ExportTraceServiceRequest, or no span stored because none names its rollout "
                "and attempt (google.rpc.Status body naming the problem)."
            },
            404: {
                "description": "No span stored: the rollout or attempt they name does not exist (google.rpc.Status)."
            },
            409: {
                "description": "No span stored: their attempt already ended (succeeded or failed) (google.rpc.Status)."
            },
            401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
            413: {"model": ErrorBody, "description": "Request body over the server's limit."},
            415: {"description": "Content-Type other than application/x-protobuf or application/json."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                    JSON: {"schema": {"type": "object"}},
                },
            }
        },
    )
    async def otlp_traces(ctx: Ctx, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in (PROTOBUF, "application/protobuf"):
            protobuf = True
        elif content_type == JSON:
            protobuf = False
        else:
            message = f"unsupported Content-Type {content_type or '(none)'!r}; send {PROTOBUF} or {JSON}"
            return Response(otlp.encode_status(3, message, False), status_code=415, media_type=JSON)
        media_type = PROTOBUF if protobuf else JSON
        body = await request.body()
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        try:
            body = _decompress(body, encoding, ctx.max_body_bytes)
            decoded = otlp.decode_protobuf(body) if protobuf else otlp.decode_json(body)
        except otlp.OtlpDecodeError as exc:
            return Response(otlp.encode_status(3, str(exc), protobuf), status_code=400, media_type=media_type)
        result = await otlp.ingest(ctx.store, decoded)
        if result.rejected:
            logger.warning("OTLP ingest rejected %d span(s): %s", result.rejected, result.error_message)
        if result.failure_status is not None:  # nothing stored: OTLP's "processing failed", a 4xx naming why
            status_code, failure = otlp.encode_failure(result, protobuf)
            return Response(failure, status_code=status_code, media_type=media_type)
        return Response(otlp.encode_response(result, protobuf), media_type=media_type)

    return app


def _body_error(problems: List[Any]) -> Response:
    """400 for a body that is not JSON, 422 (TypeError/ValueError) for one of the wrong shape."""
    if any(p.get("type") == "json_invalid" for p in problems):
        detail = next((str((p.get("ctx") or {}).get("error", "")) for p in problems), "")
        return _error(400, "InvalidJSON", f"request body is not valid JSON: {detail}".rstrip(": "))
    message, listed = describe_validation_errors(problems, strip=("body",))
    return _error(422, validation_error_kind(problems), message, errors=listed)


def _add_manual_bodies_to_openapi(app: FastAPI, models: List[Type[BaseModel]]) -> None:
    """Routes that parse their body themselves reference its schema; put those schemas in the document."""
    generate = app.openapi

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, definition in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, definition)
                schemas[model.__name__] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- helpers ------------------------------------------------------------------------------------
def _any(value: Any) -> Any:
    """Hand a wire value to the store as is: the store checks it and names it in its error."""
    return value


def _span_key(span: Span) -> Tuple[str, str, str]:
    return (span.rollout_id, span.attempt_id, span.span_id)


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise otlp.OtlpDecodeError(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise otlp.OtlpDecodeError(f"body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(limit)
    return data


class _RolloutsQuery(QueryRolloutsRequest):
    model_config = {"strict": False, "extra": "forbid"}


class _AttemptsQuery(QueryAttemptsRequest):
    model_config = {"strict": False, "extra": "forbid"}


class _SpansQuery(SpanFilters):
    model_config = {"strict": False, "extra": "forbid"}


class _ResourcesQuery(QueryResourcesRequest):
    model_config = {"strict": False, "extra": "forbid"}


class _WorkersQuery(QueryWorkersRequest):
    model_config = {"strict": False, "extra": "forbid"}
