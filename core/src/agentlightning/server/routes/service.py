"""Service routes of the store server: health, statistics, sync."""

from __future__ import annotations

from typing import Any, Dict

from fastapi import APIRouter
from fastapi.responses import Response

from agentlightning.store.wire import (
    API_VERSION,
)

from .common import (
    Ctx,
    json_response,
)

router = APIRouter()


@router.get("/health", summary="Liveness check")
async def health() -> Dict[str, str]:
    return {"status": "ok", "api_version": API_VERSION}


@router.get("/statistics", summary="Store statistics", response_model=Dict[str, Any])
async def statistics(ctx: Ctx) -> Response:
    return json_response(dict(await ctx.store.statistics()), Dict[str, Any])


@router.post("/sync", summary="Make every acknowledged write visible to other readers of the backend")
async def sync(ctx: Ctx) -> Dict[str, str]:
    await ctx.store.sync()
    return {"status": "ok"}
