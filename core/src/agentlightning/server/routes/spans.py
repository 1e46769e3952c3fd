"""Span routes of the store server: add a batch, issue sequence ids, query."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from typing_extensions import Annotated

from agentlightning.store.wire import (
    AddSpansRequest,
    AddSpansResponse,
    QuerySpansRequest,
    SequenceIdsRequest,
    SequenceIdsResponse,
    SpansPage,
)
from agentlightning.types import (
    Span,
)

from .common import (
    JSON,
    Ctx,
    SpansQuery,
    StoreContext,
    body_error,
    inserted_indexes,
    json_response,
    page_response,
)

router = APIRouter()


@router.post(
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
        return body_error(exc.errors())

    async def compute() -> Response:
        inserted = inserted_indexes(body.spans, await ctx.store.add_many_spans(body.spans))
        return json_response(AddSpansResponse.model_construct(inserted=inserted), AddSpansResponse)

    return await ctx.replays.run(request, compute)


@router.post("/spans/sequence-ids", response_model=SequenceIdsResponse, summary="get_many_span_sequence_ids")
async def sequence_ids(ctx: Ctx, body: SequenceIdsRequest) -> Response:
    issued = await ctx.store.get_many_span_sequence_ids([(r, a) for r, a in body.pairs])
    return json_response(SequenceIdsResponse.model_construct(sequence_ids=issued), SequenceIdsResponse)


async def _query_spans(ctx: StoreContext, query: QuerySpansRequest) -> Response:
    fields = query.model_dump()
    rollout_id = fields.pop("rollout_id")
    attempt_id = fields.pop("attempt_id")
    return page_response(await ctx.store.query_spans(rollout_id, attempt_id, **fields), Span)


@router.post("/spans/search", response_model=SpansPage, summary="query_spans")
async def search_spans(ctx: Ctx, body: QuerySpansRequest) -> Response:
    return await _query_spans(ctx, body)


@router.get("/rollouts/{rollout_id}/spans", response_model=SpansPage, summary="query_spans (query string)")
async def list_spans(ctx: Ctx, rollout_id: str, query: Annotated[SpansQuery, Query()]) -> Response:
    return await _query_spans(ctx, QuerySpansRequest(rollout_id=rollout_id, **query.model_dump()))
