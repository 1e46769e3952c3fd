"""Typed errors. Each names the offending value so a caller can act on it.

They subclass the builtin the 0.3 line raised (``ValueError``/``KeyError``-free ``ValueError``),
so code that caught ``ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentLightningError",
    "NotFoundError",
    "RolloutNotFoundError",
    "AttemptNotFoundError",
    "ResourcesNotFoundError",
    "WorkerNotFoundError",
    "InvalidStatusError",
    "InvalidTransitionError",
    "InvalidSpanError",
    "StoreClosedError",
    "UnknownStoreURIError",
    "ComponentResolutionError",
    "StoreUnavailableError",
    "StoreAuthError",
    "PayloadTooLargeError",
    "StoreServerError",
    "InsecureBindError",
]


class AgentLightningError(Exception):
    """Base of every error raised on purpose by agentlightning."""


class NotFoundError(AgentLightningError, ValueError):
    """An id that the store does not know."""

    kind = "item"

    def __init__(self, item_id: Any, detail: str | None = None) -> None:
        self.item_id = item_id
        message = f"{self.kind} {item_id!r} does not exist"
        super().__init__(f"{message}: {detail}" if detail else message)


class RolloutNotFoundError(NotFoundError):
    kind = "rollout"


class AttemptNotFoundError(NotFoundError):
    kind = "attempt"


class ResourcesNotFoundError(NotFoundError):
    kind = "resources"


class WorkerNotFoundError(NotFoundError):
    kind = "worker"


class InvalidStatusError(AgentLightningError, ValueError):
    """A status string outside the allowed literal set."""

    def __init__(self, status: Any, allowed: tuple[str, ...], what: str = "status") -> None:
        self.status = status
        self.allowed = allowed
        super().__init__(f"invalid {what} {status!r}; expected one of {', '.join(allowed)}")


class InvalidTransitionError(AgentLightningError, ValueError):
    """A status change that the state machine forbids (e.g. leaving a terminal status)."""

    def __init__(self, item_id: str, current: str, requested: str, hint: str = "") -> None:
        self.item_id = item_id
        self.current = current
        self.requested = requested
        text = f"cannot move {item_id!r} from {current!r} to {requested!r}"
        super().__init__(f"{text}; {hint}" if hint else text)


class InvalidSpanError(AgentLightningError, ValueError):
    """A span that cannot be stored (wrong type, missing ids, malformed fields)."""


class StoreClosedError(AgentLightningError, RuntimeError):
    """An operation on a store that was closed."""


class UnknownStoreURIError(AgentLightningError, ValueError):
    """No registered backend handles a store URI's scheme."""

    def __init__(self, uri: str, known: list[str]) -> None:
        self.uri = uri
        self.known = known
        super().__init__(f"no store backend for {uri!r}; registered schemes: {', '.join(sorted(known)) or 'none'}")


class ComponentResolutionError(AgentLightningError, TypeError):
    """A Trainer component spec that cannot be turned into the expected type."""


class StoreUnavailableError(AgentLightningError, ConnectionError):
    """A store server could not be reached (or kept failing) after every retry."""


class StoreServerError(AgentLightningError, RuntimeError):
    """A store server answered with an error that is not the caller's fault (HTTP 5xx)."""

    def __init__(self, message: str, status_code: int = 500) -> None:
        self.status_code = status_code
        super().__init__(message)


class StoreAuthError(AgentLightningError, PermissionError):
    """A store server refused the request's credentials (HTTP 401): set ``AGL_STORE_TOKEN``."""


class PayloadTooLargeError(AgentLightningError, ValueError):
    """A request body over the store server's ``--max-body-bytes`` limit (HTTP 413)."""


class InsecureBindError(AgentLightningError, ValueError):
    """A store server asked to listen beyond loopback without a token."""
