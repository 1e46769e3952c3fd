"""The store server: a LightningStore behind a versioned REST API and OTLP/HTTP trace ingest.

Needs the ``server`` extra (``pip install "agentlightning[server]"``: FastAPI, uvicorn,
opentelemetry-proto). This package imports without them; building the app or starting a server
raises :class:`ServerDependencyError` with that install hint when they are missing.

* :func:`create_app` builds the ASGI app for a store (``/v1/agl/...``, ``/v1/traces``,
  ``/openapi.json``, ``/docs``); any ASGI server can run it.
* Plugins add routes (``agl_register_server_routes``, a :class:`ServerRoutes` each): the
  ``agentlightning-dashboard`` plugin adds the dashboard at ``/``.
* :class:`StoreServer` runs it with uvicorn: in the foreground (``agl store serve``) or in a
  background thread (tests, notebooks, a trainer that hosts its store).

Clients use the ``http://host:port`` store backend (:class:`agentlightning.store.client.HttpLightningStore`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, FrozenSet, Optional

from .serve import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_WAIT_SECONDS,
    DEFAULT_PORT,
    ServerDependencyError,
    StoreServer,
    check_bind_address,
    is_loopback_host,
)

if TYPE_CHECKING:
    from fastapi import APIRouter

    from agentlightning.store.base import LightningStore

    from .app import StoreApp

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_WAIT_SECONDS",
    "DEFAULT_PORT",
    "ServerDependencyError",
    "ServerRoutes",
    "StoreServer",
    "check_bind_address",
    "create_app",
    "is_loopback_host",
]


@dataclass(frozen=True)
class ServerRoutes:
    """Routes a plugin adds to every store server, registered through ``agl_register_server_routes``.

    ``api``: a FastAPI ``APIRouter`` mounted under ``/v1/agl`` (token checked, errors as JSON bodies).
    ``root``: one mounted at the root (a page at ``/``). ``public_paths``: exact paths a GET or HEAD
    reaches without the bearer token; only for files that hold no data.
    """

    api: Optional["APIRouter"] = None
    root: Optional["APIRouter"] = None
    public_paths: FrozenSet[str] = frozenset()


def create_app(store: "LightningStore", **options: Any) -> "StoreApp":
    """The ASGI app serving ``store``; see :func:`agentlightning.server.app.create_app` for the options."""
    from .serve import import_server_dependencies

    import_server_dependencies()
    from .app import create_app as _create_app

    return _create_app(store, **options)
