"""The store server: a LightningStore behind a versioned REST API (OTLP/HTTP trace ingest: agentlightning-otlp).

Needs the ``server`` extra (FastAPI, uvicorn); without it, building the app
raises :class:`ServerDependencyError` with the install hint. :func:`create_app` builds the ASGI app,
:class:`StoreServer` runs it with uvicorn; plugins add routes (``agl_register_server_routes``).
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
