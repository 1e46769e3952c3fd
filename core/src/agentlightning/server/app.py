"""The store server's ASGI app (FastAPI): the store's operations under ``/v1/agl``, OTLP at
``/v1/traces``, plugin routes; errors are JSON bodies with a 4xx for anything the request caused."""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, Optional, Type

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentlightning import errors
from agentlightning.plugins import LazyObject, install_hint, registered
from agentlightning.store.base import LightningStore
from agentlightning.store.wire import (
    API_PREFIX,
    API_VERSION,
    BATCH_PATH,
    OTLP_TRACES_PATH,
    AddSpansRequest,
    BatchRequest,
)

from . import ServerRoutes
from .routes import API_ROUTERS
from .routes.batch import run_batch
from .routes.common import ERROR_RESPONSES, JSON, PayloadTooLarge, StoreContext, body_error, error_response, store_error
from .serve import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT_SECONDS

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


# -- ASGI guard: token and body size -------------------------------------------------------------
class StoreApp:
    """The ASGI app of one store server: checks the token and body size, then hands the request to the
    FastAPI app shared by every server of the process (built once)."""

    def __init__(
        self,
        store: LightningStore,
        *,
        token: Optional[str],
        max_body_bytes: int,
        max_wait_seconds: float,
        run_dir: Optional[Path] = None,
    ) -> None:
        if not isinstance(store, LightningStore):
            raise TypeError(f"store must be a LightningStore, got {type(store).__name__}")
        self.store = store
        self.fastapi = shared_app()
        self.context = StoreContext(
            store=store, max_wait_seconds=max_wait_seconds, max_body_bytes=max_body_bytes, run_dir=run_dir
        )
        self.expected = f"Bearer {token}".encode() if token else None
        self.public_paths: frozenset[str] = self.fastapi.state.agl_public_paths
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
        # Files a plugin declares public hold no data (a page that asks for the token and sends it itself).
        public = scope.get("method") in ("GET", "HEAD") and scope.get("path") in self.public_paths
        if self.expected is not None and not public:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                why = "no Authorization header" if not given else "wrong bearer token"
                message = f"{why}: send 'Authorization: Bearer <token>' (clients read AGL_STORE_TOKEN)"
                await error_response(401, "Unauthorized", message)(scope, receive, send)
                return
        length = headers.get(b"content-length")
        limit = self.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                message = f"Content-Length is not a number: {length[:50]!r}"
                await error_response(400, "ValueError", message)(scope, receive, send)
                return
            if declared > limit:
                message = f"request body of {declared} bytes is over the limit of {limit}"
                await error_response(413, "PayloadTooLarge", message)(scope, receive, send)
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

        if scope.get("method") == "POST" and scope.get("path") == _BATCH_ROUTE:
            await self._batch(scope, receive, send)
            return
        scope["agl.context"] = self.context
        try:
            await self.fastapi(scope, limited_receive, tracked_send)
        except PayloadTooLarge as exc:
            if started:
                raise
            await error_response(413, "PayloadTooLarge", str(exc.detail))(scope, receive, send)

    async def _batch(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        """The batch route without FastAPI's per-request work (routing, dependencies, Request objects):
        it carries the hot calls of runners and trainers."""
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message.get("type") != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                detail = f"request body larger than the server's limit of {self.max_body_bytes} bytes"
                await error_response(413, "PayloadTooLarge", detail)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        status, content = await run_batch(self.context, b"".join(chunks))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


_BATCH_ROUTE = API_PREFIX + BATCH_PATH


# -- the app ------------------------------------------------------------------------------------
def create_app(
    store: LightningStore,
    *,
    token: Optional[str] = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    run_dir: Optional[Path] = None,
) -> StoreApp:
    """The ASGI app serving ``store``: ``token`` required as a bearer token (None: no auth), bodies over
    ``max_body_bytes`` get 413, ``max_wait_seconds`` bounds one ``wait_for_rollouts`` request, ``run_dir``
    is the run folder the dashboard plugin plots."""
    return StoreApp(
        store, token=token, max_body_bytes=max_body_bytes, max_wait_seconds=max_wait_seconds, run_dir=run_dir
    )


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
            "Every LightningStore operation as a REST API under /v1/agl, plus the routes of installed plugins "
            "(OTLP/HTTP trace ingest at /v1/traces with agentlightning-otlp). Mutations accept an Idempotency-Key header: a retry with the "
            "same key is answered with the first response instead of being applied twice."
        ),
    )
    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)

    # -- errors ---------------------------------------------------------------------------------
    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return body_error(list(exc.errors()))

    async def on_store_error(request: Request, exc: Exception) -> Response:  # also a bug: 500
        status_code, body = store_error(exc, f"{request.method} {request.url.path}")
        return Response(content=body.model_dump_json(), status_code=status_code, media_type=JSON)

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
            if request.url.path == "/":
                detail += f". No page here: {install_hint('server_routes', 'dashboard')}"
            elif request.url.path == OTLP_TRACES_PATH:
                detail += f". No OTLP ingest here: {install_hint('server_routes', 'otlp')}"
        response = error_response(exc.status_code, name, detail)
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:  # Starlette names the methods of one route; a path has several
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return response

    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for error_type in (errors.AgentLightningError, ValueError, TypeError, Exception):
        app.add_exception_handler(error_type, on_store_error)

    for router in API_ROUTERS:  # one module per resource, under server/routes/
        api.include_router(router)
    plugin_routes = _plugin_routes()
    for routes in plugin_routes:
        if routes.api is not None:
            api.include_router(routes.api)
    app.include_router(api)
    _add_manual_bodies_to_openapi(app, [AddSpansRequest, BatchRequest])
    for routes in plugin_routes:
        if routes.root is not None:
            app.include_router(routes.root)
    app.state.agl_public_paths = frozenset(path for routes in plugin_routes for path in routes.public_paths)
    return app


def _plugin_routes() -> List[ServerRoutes]:
    """The routes plugins register; one that cannot be loaded is left out with a warning."""
    found: List[ServerRoutes] = []
    for name, routes in registered("server_routes").items():
        try:
            routes = routes.load() if isinstance(routes, LazyObject) else routes
            if not isinstance(routes, ServerRoutes):
                raise TypeError(f"registered {type(routes).__name__}, not a ServerRoutes")
        except Exception as exc:  # noqa: BLE001 -- one broken plugin must not take the server down
            logger.warning("store server: leaving out the routes %r: %s: %s", name, type(exc).__name__, exc)
            continue
        found.append(routes)
    return found


def _allowed_methods(app: FastAPI, request: Request) -> List[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods.update(route.methods or ())
    return sorted(methods)


def _require_discriminators(schemas: Dict[str, Any]) -> None:
    """A discriminated union's tag has a default in each model, yet a body must carry it: say so
    (OpenAPI requires the discriminator property in every schema it maps to)."""
    for definition in list(schemas.values()):
        for node in _walk(definition):
            discriminator = node.get("discriminator")
            if not isinstance(discriminator, dict):
                continue
            tag = discriminator["propertyName"]
            for ref in discriminator.get("mapping", {}).values():
                target = schemas[ref.rsplit("/", 1)[-1]]
                if tag not in target.setdefault("required", []):
                    target["required"].insert(0, tag)


def _drop_null_from_query_parameters(document: Dict[str, Any]) -> None:
    """A query string cannot carry null: an optional parameter is left out instead."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                schema = parameter.get("schema", {})
                if parameter.get("in") != "query" or "anyOf" not in schema:
                    continue
                options = [option for option in schema["anyOf"] if option.get("type") != "null"]
                if len(options) == 1:
                    del schema["anyOf"]
                    schema.update(options[0])
                else:
                    schema["anyOf"] = options


def _walk(node: Any) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


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
            _require_discriminators(schemas)
            _drop_null_from_query_parameters(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
