"""The dashboard: its static page at ``/`` and the few aggregated reads it needs under ``/v1/agl/dashboard``.

The page (``static/``: plain HTML, CSS and JavaScript, no build step) reads everything
else through the ordinary REST API. Answers of this module are cached for :data:`CACHE_SECONDS` and
shared by every client, and carry an ``ETag``: a page polling with ``If-None-Match`` costs the store
at most one query per interval, however many tabs are open, and gets ``304`` when nothing changed.
A rollout comes with a summary of each span (ids, times, the attributes naming its kind); a click
fetches one span with long strings and lists cut to :data:`MAX_TEXT` / :data:`MAX_ITEMS` (it says
``agl_truncated``, and ``agl_lengths`` gives the full lengths); the page gets it in full from
``/v1/agl/rollouts/{id}/spans?span_id=`` on demand.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import weakref
from collections import OrderedDict
from importlib import resources
from typing import Annotated, Any, Awaitable, Callable, Dict, List, Optional, Tuple

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from agentlightning import errors
from agentlightning.emitter.reward import find_final_reward
from agentlightning.semconv import AGL_ANNOTATION, AGL_REWARD
from agentlightning.server import ServerRoutes
from agentlightning.server.routes.common import JSON, Ctx, error_response, not_found
from agentlightning.store.base import LightningStore
from agentlightning.store.engine import ROLLOUT_SORT_FIELDS, StoreEngine
from agentlightning.store.query import MAX_PAGE_VALUE
from agentlightning.store.wire import documented_as, one_of
from agentlightning.types import ROLLOUT_STATUSES, Attempt, Rollout, Span

router = APIRouter(prefix="/dashboard")
static_router = APIRouter(include_in_schema=False)

CACHE_SECONDS = 1.0
MAX_TEXT = 2000
MAX_ITEMS = 64
PREVIEW_CHARS = 160
CHART_ROLLOUTS = 5000  # the overview's charts cover this many of the newest rollouts
REWARD_ROLLOUTS = 300  # the reward curve covers this many of the newest finished rollouts
# The attributes a span's summary keeps (the waterfall's colours and labels); the rest comes on a click.
SUMMARY_KEYS = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.tool.name",
        "gen_ai.agent.name",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "exception.type",
    }
)
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# The page runs only its own script and style, and talks only to this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# -- static page --------------------------------------------------------------------------------
def _static(name: str) -> Response:
    body = resources.files("agentlightning_dashboard").joinpath("static").joinpath(name).read_bytes()
    return Response(content=body, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)


@static_router.get("/")
async def dashboard_page() -> Response:
    return _static("index.html")


@static_router.get("/dashboard/{name}")
async def dashboard_asset(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response(content=f"no dashboard file {name!r}", status_code=404, media_type="text/plain")
    return _static(name)


# -- the shared cache ---------------------------------------------------------------------------
_CACHE: "OrderedDict[Tuple[int, str], Tuple[float, str, bytes]]" = OrderedDict()
_CACHE_ENTRIES = 256


async def _cached(request: Request, store: LightningStore, compute: Callable[[], Awaitable[Any]]) -> Response:
    key = (id(store), str(request.url.path) + "?" + str(request.url.query))
    now = time.monotonic()
    hit = _CACHE.get(key)
    if hit is None or hit[0] < now:
        body = _dumps(await compute())
        hit = (now + CACHE_SECONDS, '"' + hashlib.sha1(body).hexdigest()[:20] + '"', body)
        _CACHE[key] = hit
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    headers = {"ETag": hit[1], "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == hit[1]:
        return Response(status_code=304, headers=headers)
    return Response(content=hit[2], media_type=JSON, headers=headers)


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, default=str, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # NaN or infinity somewhere (agent metadata): as text, which JSON.parse accepts
        return json.dumps(truncate(value)[0], default=str, allow_nan=False, separators=(",", ":")).encode()


# -- shaping ------------------------------------------------------------------------------------
def _finite(value: Optional[float]) -> Optional[float]:
    return value if value is not None and math.isfinite(value) else None


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


_SCALARS = (int, bool, type(None))


def truncate(value: Any) -> Tuple[Any, bool]:
    """``value`` with strings over MAX_TEXT and lists over MAX_ITEMS cut; True when anything was cut."""
    if isinstance(value, str):
        return (value[:MAX_TEXT] + "…", True) if len(value) > MAX_TEXT else (value, False)
    if isinstance(value, (list, tuple)):
        if all(type(v) in _SCALARS for v in value[:MAX_ITEMS]):  # token ids: no walk needed
            return list(value[:MAX_ITEMS]), len(value) > MAX_ITEMS
        items = [truncate(v) for v in value[:MAX_ITEMS]]
        return [v for v, _ in items], len(value) > MAX_ITEMS or any(cut for _, cut in items)
    if isinstance(value, dict):
        pairs = {k: truncate(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(cut for _, cut in pairs.values())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value), False
    return value, False


def _span_summary(span: Span) -> Dict[str, Any]:
    """What the waterfall draws: ids, times, status and the small attributes that name the span's kind."""
    return {
        "rollout_id": span.rollout_id,
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "attempt_id": span.attempt_id,
        "sequence_id": span.sequence_id,
        "name": span.name,
        "status": {"status_code": span.status.status_code},
        "start_time": span.start_time,
        "end_time": span.end_time,
        "attributes": {
            k: v
            for k, v in span.attributes.items()
            if (k in SUMMARY_KEYS or k.startswith("agentlightning.reward")) and isinstance(v, (str, int, float))
        },
    }


def _span_json(span: Span) -> Dict[str, Any]:
    data = span.model_dump(mode="json", exclude={"resource", "context", "parent", "links"})
    data["attributes"], cut_attributes = truncate(data["attributes"])
    data["events"], cut_events = truncate(data["events"])
    data["agl_truncated"] = cut_attributes or cut_events
    # The full length of each attribute that was cut (a token id list shows "500 (64 here)").
    data["agl_lengths"] = {
        key: len(value)
        for key, value in span.attributes.items()
        if isinstance(value, (str, list, tuple)) and len(value) > (MAX_TEXT if isinstance(value, str) else MAX_ITEMS)
    }
    return data


def _error_of(attempt: Optional[Attempt]) -> Optional[Dict[str, Any]]:
    error = (attempt.metadata or {}).get("error") if attempt is not None else None
    return error if isinstance(error, dict) else None


async def _final_reward(store: LightningStore, rollout_id: str) -> Optional[float]:
    # Rewards are annotation spans (emit_reward) or, from older code, reward spans: two indexed queries
    # instead of reading every span of the rollout.
    spans = [s for name in (AGL_ANNOTATION, AGL_REWARD) for s in await store.query_spans(rollout_id, None, name=name)]
    return _finite(find_final_reward(sorted(spans, key=lambda s: s.sequence_id)))


def _rollout_row(rollout: Rollout, reward: Optional[float]) -> Dict[str, Any]:
    attempt: Optional[Attempt] = getattr(rollout, "attempt", None)
    error = _error_of(attempt)
    return {
        "rollout_id": rollout.rollout_id,
        "status": rollout.status,
        "mode": rollout.mode,
        "resources_id": rollout.resources_id,
        "start_time": rollout.start_time,
        "end_time": rollout.end_time,
        "input_preview": preview(rollout.input),
        "attempts": attempt.sequence_id if attempt is not None else 0,
        "worker_id": attempt.worker_id if attempt is not None else None,
        "reward": reward,
        "error": preview(f"{error.get('type')}: {error.get('message')}") if error else None,
    }


# -- overview -----------------------------------------------------------------------------------
def _time_series(rollouts: List[Rollout], buckets: int) -> Dict[str, Any]:
    """Rollouts started per status and finished, per time bucket."""
    times = [r.start_time for r in rollouts] + [r.end_time for r in rollouts if r.end_time]
    if not times:
        return {"start": None, "bucket_seconds": None, "started": {}, "finished": []}
    start, end = min(times), max(times)
    width = max((end - start) / buckets, 1.0)
    count = min(buckets, int((end - start) / width) + 1)
    started: Dict[str, List[int]] = {}
    finished = [0] * count
    for rollout in rollouts:
        row = started.setdefault(rollout.status, [0] * count)
        row[min(int((rollout.start_time - start) / width), count - 1)] += 1
        if rollout.end_time:
            finished[min(int((rollout.end_time - start) / width), count - 1)] += 1
    return {"start": start, "bucket_seconds": width, "started": started, "finished": finished}


@router.get("/overview", summary="Dashboard: statistics, status over time, reward curve, throughput, failures")
async def overview(ctx: Ctx, request: Request, buckets: int = 40) -> Response:
    store = ctx.store

    async def compute() -> Dict[str, Any]:
        newest = await store.query_rollouts(sort_by="start_time", sort_order="desc", limit=CHART_ROLLOUTS)
        rollouts = list(newest)
        done = sorted((r for r in rollouts if r.end_time is not None), key=lambda r: r.end_time or 0.0)
        rewards = []
        for rollout in done[-REWARD_ROLLOUTS:]:
            if rollout.status == "succeeded":
                rewards.append([rollout.end_time, await _final_reward(store, rollout.rollout_id), rollout.mode])
        failed = [r for r in reversed(done) if r.status == "failed"][:20]
        window = [r for r in done if r.end_time and r.end_time >= (done[-1].end_time or 0) - 60] if done else []
        return {
            "statistics": dict(await store.statistics()),
            "charted_rollouts": len(rollouts),
            "total_rollouts": newest.total,
            "series": _time_series(rollouts, max(1, min(buckets, 200))),
            "rewards": [r for r in rewards if r[1] is not None],
            "throughput_per_minute": len(window),
            "failures": [_rollout_row(r, None) for r in failed],
            "run_dir": str(ctx.run_dir) if ctx.run_dir else None,
        }

    return await _cached(request, store, compute)


# Per store: rollout id -> (its input object, the input's JSON in lower case), so a search is a scan of
# strings after the first; an updated input is a new object and gets its text again.
_SEARCH_TEXTS: "weakref.WeakKeyDictionary[LightningStore, Dict[str, Tuple[Any, str]]]" = weakref.WeakKeyDictionary()


def _search_text(texts: Dict[str, Tuple[Any, str]], rollout: Rollout) -> str:
    known = texts.get(rollout.rollout_id)
    if known is None or known[0] is not rollout.input:
        known = texts[rollout.rollout_id] = (
            rollout.input,
            json.dumps(rollout.input, default=str, ensure_ascii=False).lower(),
        )
    return known[1]


# -- rollouts -----------------------------------------------------------------------------------
_ONE_STATUS = "|".join(ROLLOUT_STATUSES)
_STATUS_LIST = f"^({_ONE_STATUS})?(,({_ONE_STATUS})?)*$"  # what the split below accepts, empty items included


@router.get("/rollouts", summary="Dashboard: rollouts filtered by status, mode, resources and input text")
async def rollouts(
    ctx: Ctx,
    request: Request,
    status: Annotated[
        Optional[str],
        Query(description="Comma-separated rollout statuses.", json_schema_extra={"pattern": _STATUS_LIST}),
    ] = None,
    mode: Optional[str] = None,
    resources_id: Optional[str] = None,
    q: Optional[str] = None,
    sort_by: Annotated[str, Query(json_schema_extra=documented_as(one_of(ROLLOUT_SORT_FIELDS)))] = "start_time",
    sort_order: Annotated[str, Query(json_schema_extra=documented_as(one_of(("asc", "desc"))))] = "desc",
    limit: Annotated[int, Query(json_schema_extra={"minimum": 1, "maximum": 500})] = 50,
    offset: Annotated[int, Query(json_schema_extra={"minimum": 0, "maximum": MAX_PAGE_VALUE})] = 0,
) -> Response:
    store = ctx.store
    if not 1 <= limit <= 500:
        raise ValueError(f"limit must be in 1..500, got {limit}")
    statuses = [s for s in (status or "").split(",") if s] or None
    for value in statuses or ():
        if value not in ROLLOUT_STATUSES:
            raise errors.InvalidStatusError(value, ROLLOUT_STATUSES, "rollout status")
    needle = (q or "").lower()

    texts = _SEARCH_TEXTS.setdefault(store, {}) if needle else {}

    def wanted(r: Rollout) -> bool:
        return (
            (not mode or r.mode == mode)
            and (not resources_id or r.resources_id == resources_id)
            and (not needle or needle in _search_text(texts, r))
        )

    async def compute() -> Dict[str, Any]:
        filtered = bool(mode or resources_id or needle)
        # The store checks the statuses and the order and names them in its errors.
        query: Dict[str, Any] = {"status_in": statuses, "sort_by": sort_by, "sort_order": sort_order}
        if isinstance(store, StoreEngine):  # filtered before the store copies anything
            page = await store.query_rollouts(**query, limit=limit, offset=offset, where=wanted)
            items: List[Rollout] = list(page)
            total = page.total
        else:  # a remote store: its own filters first, the rest here
            page = await store.query_rollouts(
                **query, limit=-1 if filtered else limit, offset=0 if filtered else offset
            )
            items = [r for r in page if wanted(r)] if filtered else list(page)
            total = len(items) if filtered else page.total
            items = items[offset : offset + limit] if filtered else items
        resource_ids = [u.resources_id for u in await store.query_resources(sort_by="create_time", sort_order="desc")]
        return {
            "items": [_rollout_row(r, await _final_reward(store, r.rollout_id)) for r in items],
            "total": total,
            "limit": limit,
            "offset": offset,
            "resources_ids": resource_ids,
        }

    return await _cached(request, store, compute)


@router.get("/rollouts/{rollout_id}", summary="Dashboard: a rollout with its attempts and a summary of each span")
async def rollout_detail(ctx: Ctx, request: Request, rollout_id: str) -> Response:
    store = ctx.store
    rollout = await store.get_rollout_by_id(rollout_id)
    if rollout is None:
        return not_found(errors.RolloutNotFoundError, rollout_id)

    async def compute() -> Dict[str, Any]:
        assert rollout is not None
        attempts = list(await store.query_attempts(rollout_id))
        spans = list(await store.query_spans(rollout_id, None))
        data = rollout.model_dump(mode="json", exclude={"attempt"})
        data["input"], data["input_truncated"] = truncate(data["input"])
        return {
            "rollout": data,
            "attempts": [{**a.model_dump(mode="json"), "error": _error_of(a)} for a in attempts],
            "spans": [_span_summary(s) for s in spans],
            "reward": _finite(find_final_reward(spans)),
        }

    return await _cached(request, store, compute)


@router.get("/rollouts/{rollout_id}/spans/{span_id}", summary="Dashboard: one span, long values cut")
async def span_detail(
    ctx: Ctx, request: Request, rollout_id: str, span_id: str, attempt_id: Optional[str] = None
) -> Response:
    store = ctx.store

    async def compute() -> Dict[str, Any]:
        found = list(await store.query_spans(rollout_id, attempt_id, span_id=span_id, limit=1))
        if not found:
            raise errors.NotFoundError(span_id, f"no such span in rollout {rollout_id!r}")
        return _span_json(found[0])

    return await _cached(request, store, compute)


# -- run folder ---------------------------------------------------------------------------------
@router.get("/metrics", summary="Dashboard: the run folder's metrics.jsonl (numbers only)")
async def metrics(ctx: Ctx, request: Request) -> Response:
    if ctx.run_dir is None:
        return error_response(404, "RunFolderUnknown", "no run folder is known: start the dashboard with --run-dir DIR")
    path = ctx.run_dir / "metrics.jsonl"

    async def compute() -> Dict[str, Any]:
        rows: List[Dict[str, float]] = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written right now
                if isinstance(record, dict):
                    rows.append({k: v for k, v in record.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        return {"path": str(path), "exists": path.is_file(), "rows": rows}

    return await _cached(request, ctx.store, compute)


# What the plugin registers: the reads under /v1/agl/dashboard, the page at the root; the page's files hold no
# data, so a browser gets them without the token (the page asks for it and sends it with its API calls).
ROUTES = ServerRoutes(
    api=router,
    root=static_router,
    public_paths=frozenset({"/", *(f"/dashboard/{name}" for name in STATIC_FILES)}),
)
