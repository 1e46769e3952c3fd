"""Plugin loading, registries and notifications.

One :class:`pluggy.PluginManager` per process (:func:`get_plugin_manager`). It always holds the
built-in plugin (:mod:`agentlightning.builtin_plugins`) and, unless ``AGL_DISABLE_PLUGIN_AUTOLOAD``
is set, every module listed under the ``agentlightning`` entry point group. Each entry point is
loaded on its own: one that fails to import or to register is logged, recorded (see
:func:`list_plugins` and ``agl plugins``) and skipped; the process carries on.

Registration hooks are read through :func:`registered`, algorithms are found by name with
:func:`resolve_algorithm` (entry point group ``agentlightning.algorithms`` first, importing only the
entry point asked for), and notification hooks are fired with :func:`notify`, which isolates every
implementation from the others.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, get_args

import pluggy

from agentlightning import hookspecs
from agentlightning.errors import AgentLightningError, ComponentResolutionError
from agentlightning.hookspecs import PROJECT_NAME

__all__ = [
    "ALGORITHM_ENTRY_POINT_GROUP",
    "BUILTIN_PLUGIN_NAME",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "LazyObject",
    "PluginInfo",
    "PluginLoadError",
    "RegistryKind",
    "UnknownComponentError",
    "algorithm_entry_points",
    "get_plugin_manager",
    "list_plugins",
    "notify",
    "registered",
    "reset_plugin_manager",
    "resolve",
    "resolve_algorithm",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "agentlightning"
"""Entry point group whose entries are plugin modules (or objects) holding ``@hookimpl`` functions."""

ALGORITHM_ENTRY_POINT_GROUP = "agentlightning.algorithms"
"""Entry point group mapping an algorithm name to its class, imported only when that name is asked for."""

DISABLE_AUTOLOAD_ENV = "AGL_DISABLE_PLUGIN_AUTOLOAD"
"""Environment variable; ``1``/``true``/``yes``/``on`` stops entry points of :data:`ENTRY_POINT_GROUP` loading."""

BUILTIN_PLUGIN_NAME = "agentlightning.builtin_plugins"

RegistryKind = Literal["store_backends", "tracers", "span_exporters", "algorithms", "adapters", "instrumentors"]

_REGISTRY_KINDS: tuple[str, ...] = get_args(RegistryKind)
_SINGULAR = {
    "store_backends": "store backend",
    "tracers": "tracer",
    "span_exporters": "span exporter",
    "algorithms": "algorithm",
    "adapters": "adapter",
    "instrumentors": "instrumentor",
}
_TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


# -- errors -------------------------------------------------------------------------------------


class UnknownComponentError(AgentLightningError, LookupError):
    """A component name (algorithm, tracer, store backend, ...) that no plugin provides."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        what = _SINGULAR.get(kind, kind)
        super().__init__(f"unknown {what} {name!r}; known names: {', '.join(self.known) or 'none'}")


class PluginLoadError(AgentLightningError, ImportError):
    """An entry point (or lazily imported object) that could not be imported.

    ``entry_point`` is a readable ``"name = module:attr"`` description and ``original`` the exception
    the import raised (also chained as ``__cause__``).
    """

    def __init__(self, entry_point: str, original: BaseException) -> None:
        self.entry_point = entry_point
        self.original = original
        super().__init__(f"cannot load {entry_point}: {type(original).__name__}: {original}")


# -- records ------------------------------------------------------------------------------------


@dataclass
class PluginInfo:
    """What :func:`list_plugins` reports about one plugin, loaded or not."""

    name: str
    """Entry point name (or the name given to ``PluginManager.register``)."""
    distribution: str | None
    """Distribution that declares the entry point; ``None`` for plugins registered by hand."""
    version: str | None
    """Version of that distribution."""
    hooks: list[str] = field(default_factory=list)
    """Names of the hooks the plugin implements (empty when it did not load)."""
    error: str | None = None
    """Why the plugin failed to load, or which of its registration hooks raised; ``None`` when healthy."""
    builtin: bool = False
    """True for the plugin shipped inside ``agentlightning`` itself."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "error": self.error,
            "builtin": self.builtin,
        }


@dataclass
class _PluginMeta:
    distribution: str | None
    version: str | None
    builtin: bool


class _State:
    """Everything the module remembers besides the manager itself; guarded by ``_lock``."""

    def __init__(self) -> None:
        self.meta: dict[str, _PluginMeta] = {}
        self.load_failures: list[PluginInfo] = []
        self.hook_errors: dict[str, dict[str, str]] = {}


_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_building: pluggy.PluginManager | None = None
_state = _State()


# -- lazy references ----------------------------------------------------------------------------


class LazyObject:
    """A ``"package.module:attr.path"`` reference imported on first use.

    Built-in registrations use it so that registering a component never imports it. Calling a
    :class:`LazyObject` imports the target and calls it with the same arguments, so it can stand in
    for a class or a factory. :meth:`load` returns the target itself; :func:`resolve` and
    :func:`resolve_algorithm` unwrap lazy objects for you.
    """

    __slots__ = ("_has_loaded", "_loaded", "target")

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not module or not sep or not attr:
            raise ValueError(f"lazy target must look like 'package.module:attribute', got {target!r}")
        self.target = target
        self._loaded: Any = None
        self._has_loaded = False

    def load(self) -> Any:
        """Import and return the target; an import failure raises :class:`PluginLoadError`."""
        if self._has_loaded:
            return self._loaded
        module_name, _, attr_path = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr_path.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            raise PluginLoadError(self.target, exc) from exc
        self._loaded = obj
        self._has_loaded = True
        return obj

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyObject({self.target!r})"


def _unwrap(obj: Any) -> Any:
    return obj.load() if isinstance(obj, LazyObject) else obj


# -- manager ------------------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_VALUES


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _entry_point_text(ep: EntryPoint) -> str:
    return f"entry point {ep.name!r} ({ep.value}) of group {ep.group!r}"


def _dist_of(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return str(dist.metadata["Name"]), str(dist.version)
    except Exception:  # noqa: BLE001 -- broken metadata must not break loading
        return None, None


def _builtin_meta() -> _PluginMeta:
    from agentlightning import __version__

    return _PluginMeta(distribution="agentlightning", version=__version__, builtin=True)


def _discard_partial_registration(pm: pluggy.PluginManager, name: str) -> None:
    """pluggy keeps a plugin whose validation failed half registered; drop it."""
    if pm.has_plugin(name):
        try:
            pm.unregister(name=name)
        except Exception:  # noqa: BLE001 -- cleanup of a plugin already reported as failed
            logger.debug("Could not unregister the failed plugin %r", name, exc_info=True)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        distribution, version = _dist_of(ep)
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except (Exception, SystemExit) as exc:
            _discard_partial_registration(pm, ep.name)
            logger.warning("Skipping agentlightning plugin %r (%s): %s", ep.name, ep.value, _describe(exc))
            logger.debug("Traceback of the failed plugin %r", ep.name, exc_info=True)
            _state.load_failures.append(
                PluginInfo(name=ep.name, distribution=distribution, version=version, error=_describe(exc))
            )
            continue
        _state.meta[ep.name] = _PluginMeta(distribution=distribution, version=version, builtin=False)
        for caller in pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                logger.warning(
                    "agentlightning plugin %r implements %r, which is not a hook of this agentlightning version",
                    ep.name,
                    caller.name,
                )


def _build_manager() -> pluggy.PluginManager:
    global _building
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    _building = pm
    try:
        from agentlightning import builtin_plugins

        pm.register(builtin_plugins, name=BUILTIN_PLUGIN_NAME)
        _state.meta[BUILTIN_PLUGIN_NAME] = _builtin_meta()
        if _env_flag(DISABLE_AUTOLOAD_ENV):
            logger.debug("%s is set: plugin entry points are not loaded", DISABLE_AUTOLOAD_ENV)
        else:
            _load_entry_points(pm)
    finally:
        _building = None
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, creating and loading it on the first call.

    Thread safe. A plugin whose import calls :func:`get_plugin_manager` gets the manager being
    built instead of a second one.
    """
    global _manager
    manager = _manager
    if manager is not None:
        return manager
    with _lock:
        if _manager is not None:
            return _manager
        if _building is not None:  # re-entered from a plugin import in this same thread
            return _building
        _manager = _build_manager()
        return _manager


def reset_plugin_manager() -> None:
    """Forget the manager and every record, so the next :func:`get_plugin_manager` starts afresh (tests)."""
    global _manager, _state
    with _lock:
        _manager = None
        _state = _State()


# -- listing ------------------------------------------------------------------------------------


def list_plugins() -> list[PluginInfo]:
    """Every plugin the manager holds, then every entry point that failed to load.

    A loaded plugin whose registration hook raised carries that error in :attr:`PluginInfo.error`
    (registration hooks run when :func:`registered` is first asked for their kind).
    """
    pm = get_plugin_manager()
    infos: list[PluginInfo] = []
    with _lock:
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # blocked name
                continue
            meta = _state.meta.get(name, _PluginMeta(distribution=None, version=None, builtin=False))
            hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
            errors = _state.hook_errors.get(name)
            error = "; ".join(f"{hook} raised {text}" for hook, text in sorted(errors.items())) if errors else None
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=meta.distribution,
                    version=meta.version,
                    hooks=hooks,
                    error=error,
                    builtin=meta.builtin,
                )
            )
        infos.extend(
            PluginInfo(name=f.name, distribution=f.distribution, version=f.version, hooks=[], error=f.error)
            for f in _state.load_failures
        )
    infos.sort(key=lambda info: (not info.builtin, info.name))
    return infos


# -- calling hooks one implementation at a time -------------------------------------------------


def _implementations(pm: pluggy.PluginManager, hook_name: str) -> list[Any]:
    """The plain (non-wrapper) implementations of ``hook_name``, lowest priority first."""
    caller = getattr(pm.hook, hook_name, None)
    if caller is None or not caller.has_spec():
        raise ValueError(f"{hook_name!r} is not an agentlightning hook")
    return [impl for impl in caller.get_hookimpls() if not (impl.hookwrapper or impl.wrapper)]


def _call_impl(impl: Any, kwargs: dict[str, Any]) -> Any:
    return impl.function(*[kwargs[name] for name in impl.argnames])


def _record_hook_error(plugin_name: str, hook_name: str, exc: BaseException) -> None:
    logger.warning("agentlightning plugin %r failed in %s: %s", plugin_name, hook_name, _describe(exc))
    logger.debug("Traceback of %s in plugin %r", hook_name, plugin_name, exc_info=exc)
    with _lock:
        _state.hook_errors.setdefault(plugin_name, {})[hook_name] = _describe(exc)


def registered(kind: RegistryKind | str) -> dict[str, Any]:
    """Run the registration hook of ``kind`` and return ``name -> registered object``.

    Implementations run from lowest to highest priority: the built-in plugin first, then plugins in
    load order (``@hookimpl(trylast=True)`` earlier, ``tryfirst=True`` later). A later registration
    of a name replaces an earlier one, so plugins override built-ins. An implementation that raises
    is logged and recorded (see :func:`list_plugins`), and none of its registrations are kept.
    Objects are returned as registered; :class:`LazyObject` values are not imported.
    """
    if kind not in _REGISTRY_KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {', '.join(_REGISTRY_KINDS)}")
    hook_name = f"agl_register_{kind}"
    pm = get_plugin_manager()
    result: dict[str, Any] = {}
    for impl in _implementations(pm, hook_name):
        collected: dict[str, Any] = {}

        def register(name: str, obj: Any, _collected: dict[str, Any] = collected) -> None:
            if not isinstance(name, str) or not name:
                raise TypeError(f"register() needs a non-empty string name, got {name!r}")
            _collected[name] = obj

        try:
            _call_impl(impl, {"register": register})
        except Exception as exc:  # noqa: BLE001 -- a failing plugin is recorded and skipped
            _record_hook_error(impl.plugin_name, hook_name, exc)
            continue
        with _lock:
            errors = _state.hook_errors.get(impl.plugin_name)
            if errors:
                errors.pop(hook_name, None)
        result.update(collected)
    return result


def resolve(kind: RegistryKind | str, name: str) -> Any:
    """The object registered as ``name`` for ``kind``, with a :class:`LazyObject` imported.

    Raises :class:`UnknownComponentError` listing the known names, or :class:`PluginLoadError`
    when a lazily registered object cannot be imported.
    """
    entries = registered(kind)
    if name not in entries:
        raise UnknownComponentError(kind, name, list(entries))
    return _unwrap(entries[name])


# -- algorithms ---------------------------------------------------------------------------------


def algorithm_entry_points() -> list[EntryPoint]:
    """Entry points of the ``agentlightning.algorithms`` group, without importing any of them."""
    return sorted(entry_points(group=ALGORITHM_ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def resolve_algorithm(name: str) -> type:
    """Find the algorithm class called ``name``.

    The ``agentlightning.algorithms`` entry point group is tried first and only the entry point
    named ``name`` is imported, so other algorithms' dependencies (torch, verl, ...) never load.
    Then the ``agl_register_algorithms`` hook is consulted. Entry points are used even when
    ``AGL_DISABLE_PLUGIN_AUTOLOAD`` is set: naming an algorithm is an explicit request.

    Raises :class:`UnknownComponentError` (a ``LookupError``) listing the known names, and
    :class:`PluginLoadError` (an ``ImportError``) naming the entry point and the original exception
    when it cannot be imported.
    """
    matches = list(entry_points(group=ALGORITHM_ENTRY_POINT_GROUP, name=name))
    if matches:
        ep = matches[0]
        if len(matches) > 1:
            others = ", ".join(m.value for m in matches[1:])
            logger.warning(
                "Several %r entry points are named %r; using %s, ignoring %s", ep.group, name, ep.value, others
            )
        try:
            obj: Any = ep.load()
        except Exception as exc:
            raise PluginLoadError(_entry_point_text(ep), exc) from exc
        source = _entry_point_text(ep)
    else:
        entries = registered("algorithms")
        if name not in entries:
            known = {ep.name for ep in algorithm_entry_points()} | set(entries)
            raise UnknownComponentError("algorithms", name, list(known))
        obj = _unwrap(entries[name])
        source = f"algorithm {name!r} registered through agl_register_algorithms"
    if not isinstance(obj, type):
        raise ComponentResolutionError(f"{source} is {obj!r}, not a class")
    return obj


# -- notifications ------------------------------------------------------------------------------


def notify(hook_name: str, **kwargs: Any) -> None:
    """Call every implementation of the notification hook ``hook_name`` with ``kwargs``.

    Each implementation is called on its own (highest priority first, like pluggy): an exception in
    one is logged as a warning, and neither stops the others nor reaches the caller. Passing
    arguments that do not match the hook specification is a programming error and raises
    ``TypeError``; an unknown hook name raises ``ValueError``.
    """
    pm = get_plugin_manager()
    implementations = _implementations(pm, hook_name)
    caller = getattr(pm.hook, hook_name)
    expected = set(caller.spec.argnames) if caller.spec is not None else set()
    if set(kwargs) != expected:
        missing = sorted(expected - set(kwargs))
        extra = sorted(set(kwargs) - expected)
        raise TypeError(
            f"{hook_name}() arguments do not match its specification: missing {missing}, unexpected {extra}"
        )
    for impl in reversed(implementations):
        try:
            _call_impl(impl, kwargs)
        except Exception as exc:
            logger.warning(
                "agentlightning plugin %r raised in %s (ignored): %s", impl.plugin_name, hook_name, _describe(exc)
            )
            logger.debug("Traceback of %s in plugin %r", hook_name, impl.plugin_name, exc_info=True)
