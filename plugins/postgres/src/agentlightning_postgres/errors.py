"""Typed errors of the PostgreSQL backend; each names the server and database it is about."""

from __future__ import annotations

from agentlightning.errors import AgentLightningError, StoreAuthError, StoreUnavailableError

__all__ = ["PostgresAuthError", "PostgresUnavailableError", "SchemaVersionError"]


class PostgresUnavailableError(StoreUnavailableError):
    """The PostgreSQL server cannot be reached (down, wrong host/port, no such database)."""

    def __init__(self, message: str, *, host: str, port: int, database: str) -> None:
        self.host = host
        self.port = port
        self.database = database
        super().__init__(message)


class PostgresAuthError(StoreAuthError):
    """The PostgreSQL server refused the login (wrong user or password, not allowed from this host)."""

    def __init__(self, message: str, *, host: str, port: int, database: str, user: str) -> None:
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        super().__init__(message)


class SchemaVersionError(AgentLightningError, RuntimeError):
    """The store's tables were created by a newer agentlightning-postgres than the one installed."""

    def __init__(self, message: str, *, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(message)
