"""Worker routes of the store server: query, get, update (heartbeats)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from typing_extensions import Annotated

from agentlightning import errors
from agentlightning.store.wire import (
    QueryWorkersRequest,
    UpdateWorkerRequest,
    WorkersPage,
)
from agentlightning.types import Worker

from .common import (
    Ctx,
    StoreContext,
    WorkersQuery,
    json_response,
    not_found,
    page_response,
    present_fields,
)

router = APIRouter()


async def _query_workers(ctx: StoreContext, query: QueryWorkersRequest) -> Response:
    return page_response(await ctx.store.query_workers(**dict(query)), Worker)


@router.post("/workers/search", response_model=WorkersPage, summary="query_workers")
async def search_workers(ctx: Ctx, body: QueryWorkersRequest) -> Response:
    return await _query_workers(ctx, body)


@router.get("/workers", response_model=WorkersPage, summary="query_workers (query string)")
async def list_workers(ctx: Ctx, query: Annotated[WorkersQuery, Query()]) -> Response:
    return await _query_workers(ctx, query)


@router.get("/workers/{worker_id}", response_model=Worker, summary="get_worker_by_id")
async def get_worker(ctx: Ctx, worker_id: str) -> Response:
    found = await ctx.store.get_worker_by_id(worker_id)
    if found is None:
        return not_found(errors.WorkerNotFoundError, worker_id)
    return json_response(found, Worker)


@router.patch("/workers/{worker_id}", response_model=Worker, summary="update_worker (a heartbeat; creates the worker)")
async def update_worker(ctx: Ctx, worker_id: str, body: UpdateWorkerRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.update_worker(worker_id, **present_fields(body)), Worker)

    return await ctx.replays.run(request, compute)
