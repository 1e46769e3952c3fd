"""``POST /v1/agl/batch``: several store calls in one request, each answered as its own route
would answer it (design notes: ``docs/internals.md``)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from agentlightning.errors import InvalidStatusError
from agentlightning.store.engine import SPAN_SORT_FIELDS
from agentlightning.store.query import check_filter_logic, check_page, check_sort
from agentlightning.store.wire import (
    BATCH_OPERATIONS,
    BATCH_PATH,
    AddSpansRequest,
    AddSpansResponse,
    BatchRequest,
    BatchResponse,
    SequenceIdsResponse,
    type_adapter,
)
from agentlightning.types import ATTEMPT_STATUSES, Span

from .common import JSON, Ctx, StoreContext, body_error, inserted_indexes, page_json, store_error

__all__ = ["router", "run_batch"]

router = APIRouter()

Answer = Tuple[int, bytes]


async def _add_many_spans(ctx: StoreContext, args: AddSpansRequest) -> Any:
    inserted = inserted_indexes(args.spans, await ctx.store.add_many_spans(args.spans))
    return AddSpansResponse.model_construct(inserted=inserted)


async def _query_spans(ctx: StoreContext, args: Any) -> Any:
    fields = dict(args)
    return await ctx.store.query_spans(fields.pop("rollout_id"), fields.pop("attempt_id"), **fields)


async def _update_attempt(ctx: StoreContext, args: Any) -> Any:
    present = {name: getattr(args, name) for name in args.model_fields_set - {"rollout_id", "attempt_id"}}
    return await ctx.store.update_attempt(args.rollout_id, args.attempt_id, **present)


async def _sequence_ids(ctx: StoreContext, args: Any) -> Any:
    issued = await ctx.store.get_many_span_sequence_ids([(r, a) for r, a in args.pairs])
    return SequenceIdsResponse.model_construct(sequence_ids=issued)


_HANDLERS: Dict[str, Callable[[StoreContext, Any], Awaitable[Any]]] = {
    "enqueue_many_rollouts": lambda ctx, args: ctx.store.enqueue_many_rollouts(args.rollouts),
    "dequeue_many_rollouts": lambda ctx, args: ctx.store.dequeue_many_rollouts(
        limit=args.limit, worker_id=args.worker_id
    ),
    "get_many_span_sequence_ids": _sequence_ids,
    "add_many_spans": _add_many_spans,
    "update_attempt": _update_attempt,
    "query_spans": _query_spans,
}
assert _HANDLERS.keys() == BATCH_OPERATIONS.keys()


def _dump(op: str, result: Any) -> bytes:
    _, answer_type, _ = BATCH_OPERATIONS[op]
    if op == "query_spans":
        return page_json(result, Span)
    return type_adapter(answer_type).dump_json(result)


def _error(exc: BaseException, op: str) -> Answer:
    status, body = store_error(exc, f"batch call {op}")
    return status, body.model_dump_json().encode()


async def _run_call(ctx: StoreContext, call: Any) -> Answer:
    op = call.op
    _, _, ok_status = BATCH_OPERATIONS[op]

    async def compute() -> Answer:
        try:
            return ok_status, _dump(op, await _HANDLERS[op](ctx, call.args))
        except Exception as exc:  # the call's own error, as its route would answer it
            return _error(exc, op)

    if call.idempotency_key is None:
        return await compute()
    status, body, _ = await ctx.replays.run_keyed(("BATCH", op, call.idempotency_key), compute)
    return status, body


def _check_documented_values(call: Any) -> None:
    """Raise the store's own error for a value outside what the OpenAPI document allows.

    The document lists the allowed values of fields the store checks itself (statuses, sort fields,
    page bounds); a batch carrying such a value is refused as a whole, before anything is applied,
    like any other request that breaks the document (the client then sends that call alone, so
    its caller gets the store's typed error)."""
    args = call.args
    if call.op == "dequeue_many_rollouts" and args.limit < 1:
        raise ValueError(f"limit must be a positive int, got {args.limit!r}")
    elif call.op == "query_spans":
        check_sort(args.sort_by, args.sort_order, SPAN_SORT_FIELDS)
        check_page(args.limit, args.offset)
        check_filter_logic(args.filter_logic)
    elif call.op == "update_attempt":
        present = args.model_fields_set
        if "status" in present and args.status not in ATTEMPT_STATUSES:
            raise InvalidStatusError(args.status, ATTEMPT_STATUSES, "attempt status")
        if "last_heartbeat_time" in present and args.last_heartbeat_time is None:
            raise TypeError("last_heartbeat_time must be a number, got None")


async def run_batch(ctx: StoreContext, body: bytes) -> Tuple[int, bytes]:
    """Apply a batch request's body; the response's status and JSON body."""
    try:
        request = BatchRequest.model_validate_json(body, strict=True)  # nested models too: as documented
    except ValidationError as exc:
        response = body_error(exc.errors())
        return response.status_code, bytes(response.body)
    calls: List[Any] = request.calls
    for call in calls:
        try:
            _check_documented_values(call)
        except (ValueError, TypeError) as exc:
            return _error(exc, call.op)
    if len(calls) == 1:
        answers = [await _run_call(ctx, calls[0])]
    else:
        # Concurrently: calls that write wait for one durable flush together (group commit).
        answers = list(await asyncio.gather(*(_run_call(ctx, call) for call in calls)))
    parts = [b'{"status":%d,"body":%s}' % (status, payload) for status, payload in answers]
    return 200, b'{"results":[' + b",".join(parts) + b"]}"


@router.post(
    BATCH_PATH,
    response_model=BatchResponse,
    summary="several calls in one request (each answered as its own route would)",
    openapi_extra={
        "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/BatchRequest"}}}}
    },
)
async def batch(ctx: Ctx, request: Request) -> Response:
    status, content = await run_batch(ctx, await request.body())
    return Response(content=content, status_code=status, media_type=JSON)
