"""Resources routes of the store server: add, query, get (latest or by id), update."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from typing_extensions import Annotated

from agentlightning import errors
from agentlightning.store.wire import (
    QueryResourcesRequest,
    ResourcesPage,
    ResourcesRequest,
)
from agentlightning.types import (
    ResourcesUpdate,
)

from .common import (
    Ctx,
    ResourcesQuery,
    StoreContext,
    json_response,
    not_found,
    page_response,
)

router = APIRouter()


@router.post("/resources", status_code=201, response_model=ResourcesUpdate, summary="add_resources")
async def add_resources(ctx: Ctx, body: ResourcesRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.add_resources(body.resources), ResourcesUpdate, 201)

    return await ctx.replays.run(request, compute)


async def _query_resources(ctx: StoreContext, query: QueryResourcesRequest) -> Response:
    return page_response(await ctx.store.query_resources(**dict(query)), ResourcesUpdate)


@router.post("/resources/search", response_model=ResourcesPage, summary="query_resources")
async def search_resources(ctx: Ctx, body: QueryResourcesRequest) -> Response:
    return await _query_resources(ctx, body)


@router.get("/resources", response_model=ResourcesPage, summary="query_resources (query string)")
async def list_resources(ctx: Ctx, query: Annotated[ResourcesQuery, Query()]) -> Response:
    return await _query_resources(ctx, query)


@router.get("/resources/latest", response_model=ResourcesUpdate, summary="get_latest_resources (404 when none)")
async def latest_resources(ctx: Ctx) -> Response:
    found = await ctx.store.get_latest_resources()
    if found is None:
        return not_found(errors.ResourcesNotFoundError, "latest")
    return json_response(found, ResourcesUpdate)


@router.get("/resources/{resources_id}", response_model=ResourcesUpdate, summary="get_resources_by_id")
async def get_resources(ctx: Ctx, resources_id: str) -> Response:
    found = await ctx.store.get_resources_by_id(resources_id)
    if found is None:
        return not_found(errors.ResourcesNotFoundError, resources_id)
    return json_response(found, ResourcesUpdate)


@router.put(
    "/resources/{resources_id}", response_model=ResourcesUpdate, summary="update_resources (creates unknown ids)"
)
async def update_resources(ctx: Ctx, resources_id: str, body: ResourcesRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.update_resources(resources_id, body.resources), ResourcesUpdate)

    return await ctx.replays.run(request, compute)
