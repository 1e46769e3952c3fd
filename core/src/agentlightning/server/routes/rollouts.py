"""Rollout routes of the store server: start, enqueue/dequeue, query, update, wait, and their attempts."""

from __future__ import annotations

import asyncio
from typing import List

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from typing_extensions import Annotated

from agentlightning import errors
from agentlightning.store.query import check_statuses
from agentlightning.store.wire import (
    AttemptsPage,
    DequeueRolloutsRequest,
    EnqueueRolloutsRequest,
    QueryRolloutsRequest,
    RolloutsPage,
    RolloutView,
    StartAttemptRequest,
    StartRolloutRequest,
    UpdateAttemptRequest,
    UpdateRolloutRequest,
    WaitForRolloutsRequest,
    WaitForRolloutsResponse,
)
from agentlightning.types import (
    ROLLOUT_STATUSES,
    TERMINAL_ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    Rollout,
)

from .common import (
    AttemptsQuery,
    Ctx,
    RolloutsQuery,
    StoreContext,
    error_response,
    json_response,
    not_found,
    page_response,
    present_fields,
    wait_for_disconnect,
)

router = APIRouter()


@router.post("/rollouts", status_code=201, response_model=AttemptedRollout, summary="start_rollout")
async def start_rollout(ctx: Ctx, body: StartRolloutRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.start_rollout(**dict(body)), AttemptedRollout, 201)

    return await ctx.replays.run(request, compute)


@router.post("/queues/rollouts/enqueue", status_code=201, response_model=List[Rollout], summary="enqueue_many_rollouts")
async def enqueue_rollouts(ctx: Ctx, body: EnqueueRolloutsRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.enqueue_many_rollouts(body.rollouts), List[Rollout], 201)

    return await ctx.replays.run(request, compute)


@router.post("/queues/rollouts/dequeue", response_model=List[AttemptedRollout], summary="dequeue_many_rollouts")
async def dequeue_rollouts(ctx: Ctx, body: DequeueRolloutsRequest, request: Request) -> Response:
    async def compute() -> Response:
        result = await ctx.store.dequeue_many_rollouts(limit=body.limit, worker_id=body.worker_id)
        return json_response(result, List[AttemptedRollout])

    return await ctx.replays.run(request, compute)


async def _query_rollouts(ctx: StoreContext, query: QueryRolloutsRequest) -> Response:
    check_statuses(query.status, ROLLOUT_STATUSES, "rollout status")  # the store ignores it beside status_in
    # The wire names are the store's parameter names; the store checks the values and names them in its errors.
    return page_response(await ctx.store.query_rollouts(**dict(query)), RolloutView)


@router.post("/rollouts/search", response_model=RolloutsPage, summary="query_rollouts")
async def search_rollouts(ctx: Ctx, body: QueryRolloutsRequest) -> Response:
    return await _query_rollouts(ctx, body)


@router.get("/rollouts", response_model=RolloutsPage, summary="query_rollouts (query string)")
async def list_rollouts(ctx: Ctx, query: Annotated[RolloutsQuery, Query()]) -> Response:
    return await _query_rollouts(ctx, query)


@router.get("/rollouts/{rollout_id}", response_model=RolloutView, summary="get_rollout_by_id")
async def get_rollout(ctx: Ctx, rollout_id: Annotated[str, Path()]) -> Response:
    rollout = await ctx.store.get_rollout_by_id(rollout_id)
    if rollout is None:
        return not_found(errors.RolloutNotFoundError, rollout_id)
    return json_response(rollout, RolloutView)


@router.patch("/rollouts/{rollout_id}", response_model=Rollout, summary="update_rollout (fields present only)")
async def update_rollout(ctx: Ctx, rollout_id: str, body: UpdateRolloutRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.update_rollout(rollout_id, **present_fields(body)), Rollout)

    return await ctx.replays.run(request, compute)


@router.post("/waits/rollouts", response_model=WaitForRolloutsResponse, summary="wait_for_rollouts (long poll)")
async def wait_for_rollouts(ctx: Ctx, body: WaitForRolloutsRequest, request: Request) -> Response:
    ids = list(dict.fromkeys(body.rollout_ids))
    limit = ctx.max_wait_seconds
    wait = limit if body.timeout is None else min(max(body.timeout, 0.0), limit)
    if ids:
        waiting = asyncio.ensure_future(ctx.store.wait_for_rollouts(rollout_ids=ids, timeout=wait))
        disconnected = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({waiting, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, disconnected):
                task.cancel()
        if not waiting.done() or waiting.cancelled():
            return error_response(499 if disconnected.done() else 503, "ClientClosedRequest", "the client went away")
        waiting.result()  # raises the store's error, if any
    # One consistent snapshot: a rollout finishing right now is either done or pending, never lost.
    found = {r.rollout_id: r for r in await ctx.store.query_rollouts(rollout_id_in=ids)} if ids else {}
    finished = [found[i] for i in ids if i in found and found[i].status in TERMINAL_ROLLOUT_STATUSES]
    pending = [i for i in ids if i in found and found[i].status not in TERMINAL_ROLLOUT_STATUSES]
    payload = WaitForRolloutsResponse.model_construct(rollouts=finished, pending=pending)
    return json_response(payload, WaitForRolloutsResponse)


@router.post(
    "/rollouts/{rollout_id}/attempts", status_code=201, response_model=AttemptedRollout, summary="start_attempt"
)
async def start_attempt(ctx: Ctx, rollout_id: str, body: StartAttemptRequest, request: Request) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.start_attempt(rollout_id, worker_id=body.worker_id), AttemptedRollout, 201)

    return await ctx.replays.run(request, compute)


@router.get("/rollouts/{rollout_id}/attempts", response_model=AttemptsPage, summary="query_attempts")
async def list_attempts(ctx: Ctx, rollout_id: str, query: Annotated[AttemptsQuery, Query()]) -> Response:
    return page_response(await ctx.store.query_attempts(rollout_id, **dict(query)), Attempt)


@router.get(
    "/rollouts/{rollout_id}/attempts/latest",
    response_model=Attempt,
    summary="get_latest_attempt (404 AttemptNotFoundError when the rollout has none)",
)
async def latest_attempt(ctx: Ctx, rollout_id: str) -> Response:
    attempt = await ctx.store.get_latest_attempt(rollout_id)
    if attempt is None:
        return not_found(errors.AttemptNotFoundError, "latest")
    return json_response(attempt, Attempt)


@router.patch(
    "/rollouts/{rollout_id}/attempts/{attempt_id}",
    response_model=Attempt,
    summary="update_attempt (attempt_id may be 'latest'; fields present only)",
)
async def update_attempt(
    ctx: Ctx, rollout_id: str, attempt_id: str, body: UpdateAttemptRequest, request: Request
) -> Response:
    async def compute() -> Response:
        return json_response(await ctx.store.update_attempt(rollout_id, attempt_id, **present_fields(body)), Attempt)

    return await ctx.replays.run(request, compute)
