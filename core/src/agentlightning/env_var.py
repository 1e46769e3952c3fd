"""Every environment switch Agent Lightning reads, and the one parser of each type.

Nothing else in the package reads ``os.environ`` for an ``AGL_*`` switch: booleans accept
1/true/yes/on and 0/false/no/off (any case, surrounding spaces ignored; anything else is a
``ValueError`` naming the variable), lists are comma separated with blanks dropped.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import List, Optional

__all__ = [
    "LightningEnvVar",
    "resolve_bool_env_var",
    "resolve_int_env_var",
    "resolve_list_env_var",
    "resolve_str_env_var",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class LightningEnvVar(str, Enum):
    AGL_DISABLE_PLUGIN_AUTOLOAD = "AGL_DISABLE_PLUGIN_AUTOLOAD"
    """Boolean: load no plugin entry points (``agentlightning`` group) at all."""
    AGL_DISABLE_INSTRUMENTORS = "AGL_DISABLE_INSTRUMENTORS"
    """List: instrumentors runners must not switch on (``all`` or ``*``: none)."""
    AGL_SPAN_EXPORTERS = "AGL_SPAN_EXPORTERS"
    """List: registered span exporters every tracer attaches next to its store writer."""
    AGL_EMITTER_DEBUG = "AGL_EMITTER_DEBUG"
    AGL_STORE_TOKEN = "AGL_STORE_TOKEN"
    """Bearer token of a store server: ``agl store serve`` requires it, HTTP store clients send it."""
    AGL_MANAGED_STORE = "AGL_MANAGED_STORE"
    """0.3: whether an execution strategy wraps the store itself (read by ClientServerExecutionStrategy)."""
    AGL_CURRENT_ROLE = "AGL_CURRENT_ROLE"
    """``algorithm``, ``runner`` or ``both``: which part ClientServerExecutionStrategy runs here."""
    AGL_SERVER_HOST = "AGL_SERVER_HOST"
    AGL_SERVER_PORT = "AGL_SERVER_PORT"
    """Where ClientServerExecutionStrategy serves (role algorithm) or finds (role runner) the store."""


def _name(var: "LightningEnvVar | str") -> str:
    return var.value if isinstance(var, LightningEnvVar) else var


def resolve_bool_env_var(
    var: "LightningEnvVar | str", override: Optional[bool] = None, fallback: Optional[bool] = None
) -> Optional[bool]:
    """``override`` if given, else the variable (1/true/yes/on, 0/false/no/off), else ``fallback``."""
    if override is not None:
        return override
    raw = os.environ.get(_name(var))
    if raw is None or raw.strip() == "":
        return fallback
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{_name(var)}={raw!r} is not a boolean; use 1/true/yes/on or 0/false/no/off")


def resolve_int_env_var(
    var: "LightningEnvVar | str", override: Optional[int] = None, fallback: Optional[int] = None
) -> Optional[int]:
    if override is not None:
        return override
    raw = os.environ.get(_name(var))
    if raw is None or raw.strip() == "":
        return fallback
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{_name(var)}={raw!r} is not an integer") from None


def resolve_str_env_var(
    var: "LightningEnvVar | str", override: Optional[str] = None, fallback: Optional[str] = None
) -> Optional[str]:
    if override is not None:
        return override
    raw = os.environ.get(_name(var))
    return raw if raw not in (None, "") else fallback


def resolve_list_env_var(var: "LightningEnvVar | str", override: Optional[List[str]] = None) -> List[str]:
    """``override`` if given, else the comma-separated names in the variable (blanks dropped), else ``[]``."""
    if override is not None:
        return list(override)
    raw = os.environ.get(_name(var), "")
    return [item.strip() for item in raw.split(",") if item.strip()]
