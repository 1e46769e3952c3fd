"""What every route module of the store server shares: the request context, JSON responses, errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Type

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import Annotated

from agentlightning import errors
from agentlightning.store.base import LightningStore
from agentlightning.store.engine import IDEMPOTENCY_KEY
from agentlightning.store.wire import (
    IDEMPOTENCY_HEADER,
    ErrorBody,
    QueryAttemptsRequest,
    QueryResourcesRequest,
    QueryRolloutsRequest,
    QueryWorkersRequest,
    SpanFilters,
    describe_validation_errors,
    error_body,
    error_status,
    type_adapter,
    validation_error_kind,
)
from agentlightning.types import PaginatedResult, Span

JSON = "application/json"

logger = logging.getLogger(__name__)

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


def json_response(value: Any, tp: Any, status_code: int = 200) -> Response:
    return Response(content=type_adapter(tp).dump_json(value), status_code=status_code, media_type=JSON)


def page_json(page: PaginatedResult[Any], item_type: Any) -> bytes:
    """A PaginatedResult as JSON (built by hand: the store's pages are not parametrized models)."""
    items = type_adapter(List[item_type]).dump_json(list(page.items))
    tail = f',"limit":{int(page.limit)},"offset":{int(page.offset)},"total":{int(page.total)}}}'.encode()
    return b'{"items":' + items + tail


def page_response(page: PaginatedResult[Any], item_type: Any) -> Response:
    return Response(content=page_json(page, item_type), media_type=JSON)


def error_response(
    status_code: int, name: str, message: str, exc: Optional[BaseException] = None, **details: Any
) -> Response:
    body = error_body(name, message, exc, **details)
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return Response(content=body.model_dump_json(), status_code=status_code, media_type=JSON, headers=headers)


def store_error(exc: BaseException, what: str) -> Tuple[int, ErrorBody]:
    """The status and error body answering ``exc`` raised by ``what`` (a bug: logged, and 500)."""
    mapped = error_status(exc)
    if mapped is None:
        logger.error("store server: %s failed", what, exc_info=exc)
        return 500, error_body("InternalServerError", f"{type(exc).__name__}: {exc}")
    status_code, name = mapped
    if isinstance(exc, ValidationError):
        message, listed = describe_validation_errors(exc.errors())
        return status_code, error_body(name, message, errors=listed)
    return status_code, error_body(name, str(exc), exc)


def not_found(kind: Type[errors.NotFoundError], item_id: str) -> Response:
    exc = kind(item_id)
    return error_response(404, kind.__name__, str(exc), exc)


def present_fields(model: Any) -> Dict[str, Any]:
    """The fields present in a request body (absent ones mean "leave unchanged")."""
    return {name: getattr(model, name) for name in model.model_fields_set}


# -- idempotent replays -------------------------------------------------------------------------
class Replays:
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

        async def answer() -> Tuple[int, bytes]:
            response = await compute()
            return response.status_code, bytes(response.body)

        status_code, body, replayed = await self.run_keyed((request.method, request.url.path, key_text), answer)
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return Response(content=body, status_code=status_code, media_type=JSON, headers=headers)

    async def run_keyed(
        self, key: Tuple[str, str, str], compute: Callable[[], Awaitable[Tuple[int, bytes]]]
    ) -> Tuple[int, bytes, bool]:
        """:meth:`run` for a call named by ``key`` (also one call of a batch): ``compute`` answers
        (status, body); the answer comes with whether it was replayed."""
        while True:
            hit = self._done.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1], hit[2], True
            running = self._running.get(key)
            if running is None:
                break
            await asyncio.shield(running)  # the first request with this key is still being applied
        future: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._running[key] = future
        # The store remembers answers by key too, durably: a retry after a restart is not applied twice.
        token = IDEMPOTENCY_KEY.set(" ".join(key))
        try:
            status_code, body = await compute()
            if status_code < 400 and len(body) <= self.max_entry_bytes:
                self._remember(key, status_code, body)
            return status_code, body, False
        finally:
            IDEMPOTENCY_KEY.reset(token)
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


class PayloadTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the server's limit of {limit} bytes")


@dataclass
class StoreContext:
    """What the shared routes need of the server a request came to."""

    store: LightningStore
    max_wait_seconds: float
    max_body_bytes: int
    replays: Replays = field(default_factory=Replays)
    run_dir: Optional[Path] = None  # a run folder whose metrics.jsonl the dashboard plugin plots


async def store_context(request: Request) -> StoreContext:
    # async: FastAPI would run a plain function in a worker thread, a hand-off per request
    context: StoreContext = request.scope["agl.context"]
    return context


Ctx = Annotated[StoreContext, Depends(store_context)]


def body_error(problems: List[Any]) -> Response:
    """400 for a body that is not JSON, 422 (TypeError/ValueError) for one of the wrong shape."""
    if any(p.get("type") == "json_invalid" for p in problems):
        detail = next((str((p.get("ctx") or {}).get("error", "")) for p in problems), "")
        return error_response(400, "InvalidJSON", f"request body is not valid JSON: {detail}".rstrip(": "))
    message, listed = describe_validation_errors(problems, strip=("body",))
    return error_response(422, validation_error_kind(problems), message, errors=listed)


# -- helpers ------------------------------------------------------------------------------------
def span_key(span: Span) -> Tuple[str, str, str]:
    return (span.rollout_id, span.attempt_id, span.span_id)


def inserted_indexes(spans: List[Span], added: List[Span]) -> List[int]:
    """Positions in ``spans`` of the ones ``add_many_spans`` reported new (it returns them in order)."""
    inserted: List[int] = []
    position = 0
    for index, span in enumerate(spans):
        if position < len(added) and span_key(added[position]) == span_key(span):
            inserted.append(index)
            position += 1
    return inserted


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


class RolloutsQuery(QueryRolloutsRequest):
    model_config = {"strict": False, "extra": "forbid"}


class AttemptsQuery(QueryAttemptsRequest):
    model_config = {"strict": False, "extra": "forbid"}


class SpansQuery(SpanFilters):
    model_config = {"strict": False, "extra": "forbid"}


class ResourcesQuery(QueryResourcesRequest):
    model_config = {"strict": False, "extra": "forbid"}


class WorkersQuery(QueryWorkersRequest):
    model_config = {"strict": False, "extra": "forbid"}
