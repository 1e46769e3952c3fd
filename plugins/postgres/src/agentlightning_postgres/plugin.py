"""The plugin module (entry point ``agentlightning``): registers ``postgresql://`` and ``postgres://``.

Importing it imports neither asyncpg nor the store: the backend loads the first time a URI needs it.
"""

from __future__ import annotations

from collections.abc import Callable

from agentlightning.hookspecs import StoreFactory, hookimpl
from agentlightning.plugins import LazyObject

__all__ = ["agl_register_store_backends"]


@hookimpl
def agl_register_store_backends(register: Callable[[str, StoreFactory], None]) -> None:
    factory = LazyObject("agentlightning_postgres.store:PostgresLightningStore.from_uri")
    register("postgresql", factory)
    register("postgres", factory)  # the short scheme libpq accepts too
