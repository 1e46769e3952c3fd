"""The framework adapter contract: instrumentors, and how runners turn them on.

A framework adapter ships one :class:`Instrumentor` that turns the framework's own callbacks into
spans. ``instrument()``/``uninstrument()`` are idempotent and thread safe and restore what they
changed; the framework (a :class:`FrameworkRequirement`) is checked before it is imported. Runners
call :func:`auto_instrument` on start for every instrumentor registered through
``agl_register_instrumentors`` (``AGL_DISABLE_INSTRUMENTORS=name,...|all`` opts out). The contract
is described in ``docs/adapters.md``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Set, Tuple

from agentlightning.env_var import LightningEnvVar, resolve_list_env_var
from agentlightning.errors import AgentLightningError

__all__ = [
    "DISABLE_INSTRUMENTORS_ENV",
    "AutoInstrumentation",
    "FrameworkNotAvailableError",
    "FrameworkRequirement",
    "Instrumentor",
    "auto_instrument",
    "disabled_instrumentors",
]

logger = logging.getLogger(__name__)

DISABLE_INSTRUMENTORS_ENV = LightningEnvVar.AGL_DISABLE_INSTRUMENTORS.value
"""Comma-separated instrumentor names that runners must not instrument; ``all`` (or ``*``) disables every one."""

_DISABLE_ALL = frozenset({"all", "*"})


class FrameworkNotAvailableError(AgentLightningError, ImportError):
    """``instrument()`` was called but the framework is missing or older than the adapter supports."""

    def __init__(self, instrumentor: str, problems: List[str]) -> None:
        self.instrumentor = instrumentor
        self.problems = list(problems)
        super().__init__(f"instrumentor {instrumentor!r} cannot instrument: {'; '.join(problems)}")


def _release(version: str) -> Tuple[int, ...]:
    """The numeric release of a version string without trailing zeros (``"1.7.0rc1"`` -> ``(1, 7)``):
    enough to compare against lower bounds."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    parts = [int(part) for part in match.group().split(".")] if match else []
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _at_least(installed: str, minimum: str) -> bool:
    return _release(installed) >= _release(minimum)


@dataclass(frozen=True)
class FrameworkRequirement:
    """A distribution an adapter needs (``minimum`` version; ``module`` when the import name differs),
    checked without importing it."""

    distribution: str
    minimum: Optional[str] = None
    module: Optional[str] = None

    @property
    def import_name(self) -> str:
        return self.module or self.distribution.replace("-", "_")

    def problem(self) -> Optional[str]:
        """Why the requirement is not met, or None when it is."""
        try:
            found = importlib.util.find_spec(self.import_name) is not None
        except (ImportError, ValueError):  # a parent package that fails, or a broken __spec__
            found = False
        if not found:
            return f"{self.distribution} is not installed (module {self.import_name!r} not found)"
        if self.minimum is None:
            return None
        try:
            installed = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            # Importable without metadata (a source checkout on sys.path): trust it.
            return None
        if not _at_least(installed, self.minimum):
            return f"{self.distribution} {installed} is installed; version {self.minimum} or newer is needed"
        return None

    def __str__(self) -> str:
        return f"{self.distribution}>={self.minimum}" if self.minimum else self.distribution


@dataclass
class _Patch:
    owner: Any
    attribute: str
    original: Any
    owned: bool  # the attribute was set on ``owner`` itself (not inherited), so restoring sets it back


class Instrumentor(ABC):
    """Base class of framework instrumentors: set :attr:`name` and :attr:`requirements`, implement
    :meth:`_instrument` (importing the framework only there)."""

    name: ClassVar[str] = ""
    """The name registered through ``agl_register_instrumentors`` and used by ``AGL_DISABLE_INSTRUMENTORS``."""
    requirements: ClassVar[Tuple[FrameworkRequirement, ...]] = ()
    """What must be installed before :meth:`instrument` may import the framework."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._instrumented = False
        self._patches: List[_Patch] = []

    @property
    def is_instrumented(self) -> bool:
        return self._instrumented

    def missing_requirements(self) -> List[str]:
        """Problems with :attr:`requirements` (empty when the framework can be instrumented)."""
        return [problem for problem in (req.problem() for req in self.requirements) if problem is not None]

    def is_available(self) -> bool:
        return not self.missing_requirements()

    def instrument(self) -> None:
        """Start capturing the framework (idempotent); :class:`FrameworkNotAvailableError` when it is missing."""
        with self._lock:
            if self._instrumented:
                return
            problems = self.missing_requirements()
            if problems:
                raise FrameworkNotAvailableError(self.name or type(self).__name__, problems)
            try:
                self._instrument()
            except BaseException:
                self._restore_patches()  # a half-done instrument() leaves the framework as it was
                raise
            self._instrumented = True
            logger.debug("instrumented %s", self.name)

    def uninstrument(self) -> None:
        """Stop capturing and restore the framework as it was. Does nothing when not instrumented."""
        with self._lock:
            if not self._instrumented:
                return
            try:
                self._uninstrument()
            finally:
                self._restore_patches()
                self._instrumented = False
            logger.debug("uninstrumented %s", self.name)

    @abstractmethod
    def _instrument(self) -> None:
        """Hook the framework (import it here)."""

    def _uninstrument(self) -> None:  # noqa: B027 -- optional: patches are restored by the base class
        """Undo what :meth:`_instrument` did besides :meth:`patch` calls."""

    def patch(self, owner: Any, attribute: str, replacement: Any) -> Any:
        """Replace ``owner.attribute`` until :meth:`uninstrument`; returns the original value."""
        original = getattr(owner, attribute)
        owned = attribute in getattr(owner, "__dict__", {})
        raw = owner.__dict__[attribute] if owned else original  # keep staticmethod/classmethod wrappers
        setattr(owner, attribute, replacement)
        self._patches.append(_Patch(owner, attribute, raw, owned))
        return original

    def _restore_patches(self) -> None:
        while self._patches:
            patch = self._patches.pop()
            try:
                if patch.owned:
                    setattr(patch.owner, patch.attribute, patch.original)
                else:
                    delattr(patch.owner, patch.attribute)
            except Exception:  # restore the others even if one owner refuses
                logger.exception("could not restore %r.%s", patch.owner, patch.attribute)

    def __repr__(self) -> str:
        state = "instrumented" if self._instrumented else "not instrumented"
        return f"<{type(self).__name__} {self.name!r} {state}>"


# -- automatic instrumentation by runners -----------------------------------------------------------


def disabled_instrumentors() -> Set[str]:
    """Names listed in ``AGL_DISABLE_INSTRUMENTORS`` (``{"all"}`` when every instrumentor is disabled)."""
    names = set(resolve_list_env_var(LightningEnvVar.AGL_DISABLE_INSTRUMENTORS))
    return {"all"} if names & _DISABLE_ALL else names


_auto_lock = threading.Lock()
# How many runners hold each instrumentor (by id), and which of them a runner turned on (and so
# turns off again): an instrumentor the user enabled explicitly stays on after the runners stop.
_auto_users: Dict[int, int] = {}
_auto_owned: Set[int] = set()
_class_instances: Dict[type, Any] = {}


def _as_instance(obj: Any) -> Any:
    """A registered instrumentor as an object: lazy references imported, classes instantiated once."""
    from agentlightning.plugins import LazyObject

    if isinstance(obj, LazyObject):
        obj = obj.load()
    if isinstance(obj, type):
        with _auto_lock:
            instance = _class_instances.get(obj)
            if instance is None:
                instance = _class_instances[obj] = obj()
        return instance
    return obj


class AutoInstrumentation:
    """The instrumentors one runner turned on; :meth:`release` turns them off when no runner needs them."""

    def __init__(self, entries: List[Tuple[str, Any]]) -> None:
        self._entries = entries
        self._released = False

    @property
    def names(self) -> List[str]:
        return [name for name, _ in self._entries]

    def release(self) -> None:
        """Give the instrumentors back; the last runner to release one uninstruments it. Idempotent."""
        if self._released:
            return
        self._released = True
        for name, instrumentor in reversed(self._entries):
            key = id(instrumentor)
            with _auto_lock:
                remaining = _auto_users.get(key, 1) - 1
                if remaining > 0:
                    _auto_users[key] = remaining
                    continue
                _auto_users.pop(key, None)
                owned = key in _auto_owned
                _auto_owned.discard(key)
            if not owned:
                continue
            try:
                instrumentor.uninstrument()
            except Exception:  # one failing instrumentor must not keep the others on
                logger.exception("instrumentor %r failed to uninstrument", name)


def auto_instrument(instrumentors: Optional[Mapping[str, Any]] = None) -> AutoInstrumentation:
    """Instrument every registered instrumentor whose framework is installed (runners call it on start).

    Disabled, missing or failing ones are logged and skipped. Reference counted across the runners of
    a process: release the result when the runner stops.
    """
    if instrumentors is None:
        from agentlightning.plugins import registered

        instrumentors = registered("instrumentors")
    disabled = disabled_instrumentors()
    taken: List[Tuple[str, Any]] = []
    for name, registered_obj in instrumentors.items():
        if "all" in disabled or name in disabled:
            logger.info("instrumentor %r disabled by %s", name, DISABLE_INSTRUMENTORS_ENV)
            continue
        try:
            instrumentor = _as_instance(registered_obj)
        except Exception as exc:
            logger.warning("instrumentor %r could not be loaded: %s", name, exc)
            continue
        if isinstance(instrumentor, Instrumentor):
            problems = instrumentor.missing_requirements()
            if problems:
                logger.info("instrumentor %r skipped: %s", name, "; ".join(problems))
                continue
        key = id(instrumentor)
        with _auto_lock:
            users = _auto_users.get(key, 0)
            if users == 0:
                already_on = bool(getattr(instrumentor, "is_instrumented", False))
                try:
                    instrumentor.instrument()
                except Exception:  # a broken framework install: trace without this adapter
                    logger.warning("instrumentor %r could not instrument", name, exc_info=True)
                    continue
                if not already_on:
                    _auto_owned.add(key)
            _auto_users[key] = users + 1
        taken.append((name, instrumentor))
    if taken:
        logger.debug("auto-instrumented: %s", ", ".join(name for name, _ in taken))
    return AutoInstrumentation(taken)
