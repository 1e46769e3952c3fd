"""LightningStore backends, chosen by URI (``open_store("sqlite:///run/store.db")``, ``"memory://"``,
``"http://127.0.0.1:4747"``); backends register through ``agl_register_store_backends``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentlightning.errors import UnknownStoreURIError

from .base import (
    UNSET,
    LightningStore,
    LightningStoreCapabilities,
    LightningStoreStatistics,
    Unset,
    is_finished,
    is_queuing,
    is_running,
)
from .engine import StoreEngine, rollout_status_from_attempt
from .memory import InMemoryLightningStore
from .sqlite import SqliteLightningStore, StoreLockedError
from .wrappers import LightningStoreServer, LightningStoreThreaded

CollectionBasedLightningStore = StoreEngine
"""0.3 name of the base class that holds the store logic; here every backend derives from StoreEngine."""

if TYPE_CHECKING:
    from .client import HttpLightningStore, LightningStoreClient

__all__ = [
    "HttpLightningStore",
    "LightningStoreClient",
    "LightningStore",
    "LightningStoreCapabilities",
    "LightningStoreStatistics",
    "InMemoryLightningStore",
    "CollectionBasedLightningStore",
    "LightningStoreServer",
    "LightningStoreThreaded",
    "SqliteLightningStore",
    "StoreEngine",
    "StoreLockedError",
    "UNSET",
    "Unset",
    "is_finished",
    "is_queuing",
    "is_running",
    "open_store",
    "rollout_status_from_attempt",
]


_LAZY = {"HttpLightningStore": "client", "LightningStoreClient": "client"}


def __getattr__(name: str) -> Any:
    # The HTTP client imports httpx; only pay for it when it is used.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(uri: str) -> LightningStore:
    """Build a store from a URI (``memory://``, ``sqlite:///path.db``, ``http://host:port``, or a plugin's scheme)."""
    from agentlightning.plugins import registered

    if not isinstance(uri, str) or not uri:
        raise TypeError(f"store URI must be a non-empty str, got {uri!r}")
    scheme = urlsplit(uri).scheme
    backends = registered("store_backends")
    factory = backends.get(scheme)
    if factory is None:
        raise UnknownStoreURIError(uri, list(backends))
    store = factory(uri)
    if not isinstance(store, LightningStore):
        raise TypeError(f"the store backend for {scheme!r} returned {type(store).__name__}, not a LightningStore")
    return store
