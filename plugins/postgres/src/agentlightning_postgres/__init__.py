"""PostgreSQL store backend for Agent Lightning.

>>> from agentlightning.store import open_store
>>> store = open_store("postgresql://agl:secret@db-host:5432/agl")

Several store servers, runners and trainers on several hosts can share one database. See
:mod:`agentlightning_postgres.store` for the guarantees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import PostgresAuthError, PostgresUnavailableError, SchemaVersionError

if TYPE_CHECKING:
    from .store import PostgresLightningStore
    from .tempserver import TemporaryPostgres

__all__ = [
    "PostgresAuthError",
    "PostgresLightningStore",
    "PostgresUnavailableError",
    "SchemaVersionError",
    "TemporaryPostgres",
]

_LAZY = {"PostgresLightningStore": "store", "TemporaryPostgres": "tempserver"}


def __getattr__(name: str) -> Any:
    # The plugin's entry point imports this package: asyncpg loads only when a store is used.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
