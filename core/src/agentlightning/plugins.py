"""Plugin loading, registries and notifications.

One pluggy manager per process holds the built-in plugin and (unless ``AGL_DISABLE_PLUGIN_AUTOLOAD``)
every ``agentlightning`` entry point, each loaded on its own: a failing one is recorded (``agl
plugins``) and skipped. Hooks are called through pluggy (wrappers and tracing work); each plain
implementation is wrapped so its exception is recorded against its plugin and becomes "no result".
:func:`registered` reads registration hooks, :func:`resolve` resolves every component kind, :func:`notify` fires notifications.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, get_args

import pluggy

from agentlightning import hookspecs
from agentlightning.env_var import LightningEnvVar, resolve_bool_env_var
from agentlightning.errors import AgentLightningError, ComponentResolutionError
from agentlightning.hookspecs import PROJECT_NAME

__all__ = [
    "ALGORITHM_ENTRY_POINT_GROUP",
    "BUILTIN_PLUGIN_NAME",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "ComponentInfo",
    "LazyObject",
    "PluginInfo",
    "PluginLoadError",
    "REGISTRY_KINDS",
    "RegistryKind",
    "UnknownComponentError",
    "algorithm_entry_points",
    "get_plugin_manager",
    "install_hint",
    "list_components",
    "list_plugins",
    "notify",
    "registered",
    "reset_plugin_manager",
    "resolve",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "agentlightning"
"""Entry point group whose entries are plugin modules (or objects) holding ``@hookimpl`` functions."""

ALGORITHM_ENTRY_POINT_GROUP = "agentlightning.algorithms"
"""Entry point group mapping an algorithm name to its class, imported only when that name is asked for."""

DISABLE_AUTOLOAD_ENV = LightningEnvVar.AGL_DISABLE_PLUGIN_AUTOLOAD.value
"""Environment variable; ``1``/``true``/``yes``/``on`` stops entry points of :data:`ENTRY_POINT_GROUP` loading."""

BUILTIN_PLUGIN_NAME = "agentlightning.builtin_plugins"

RegistryKind = Literal[
    "store_backends",
    "tracers",
    "span_exporters",
    "algorithms",
    "adapters",
    "instrumentors",
    "serving_backends",
    "tokenizers",
    "execution_strategies",
    "commands",
    "server_routes",
]

REGISTRY_KINDS: tuple[str, ...] = get_args(RegistryKind)
"""Every component kind, each read through the hook ``agl_register_<kind>``."""


def _singular(kind: str) -> str:
    """``"execution_strategies"`` -> ``"execution strategy"``."""
    name = kind.replace("_", " ")
    return name[:-3] + "y" if name.endswith("ies") else name.removesuffix("s")


# -- errors -------------------------------------------------------------------------------------


class UnknownComponentError(AgentLightningError, LookupError):
    """A component name that no installed plugin provides; ``hint`` says where it may come from."""

    def __init__(self, kind: str, name: str, known: list[str], hint: str | None = None) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        self.hint = hint
        message = f"unknown {_singular(kind)} {name!r}; known names: {', '.join(self.known) or 'none'}"
        super().__init__(f"{message}. {hint}" if hint else message)


class PluginLoadError(AgentLightningError, ImportError):
    """An entry point (or lazily imported object) that could not be imported; ``original`` is the cause."""

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
        return asdict(self)


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component, as :func:`list_components` and ``agl plugins`` report it."""

    kind: str
    name: str
    target: str
    """What the name stands for: ``module:attr`` for lazy and entry point registrations, else a repr."""
    distribution: str | None
    """Distribution that provides it (``None`` for a plugin registered by hand)."""
    source: str
    """``"entry point"`` (``agentlightning.algorithms``) or the name of the plugin whose hook registered it."""

    def to_dict(self) -> dict[str, Any]:
        """Its fields but ``kind`` (``agl plugins --json`` lists components by kind)."""
        return {key: value for key, value in asdict(self).items() if key != "kind"}


class _State:
    """Everything the module remembers besides the manager itself; guarded by ``_lock``."""

    def __init__(self) -> None:
        self.meta: dict[str, PluginInfo] = {}  # loaded plugins, without their hooks and errors
        self.load_failures: list[PluginInfo] = []
        self.hook_errors: dict[str, dict[str, str]] = {}


_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_building: pluggy.PluginManager | None = None
_state = _State()

# Set by registered()/notify() around one hook call: the plugins whose implementation raised in it.
_failed_in_call: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("agl_failed_in_call", default=None)
# The plugin whose implementation is running, so register() knows who registers what.
_current_plugin: contextvars.ContextVar[str | None] = contextvars.ContextVar("agl_current_plugin", default=None)


# -- lazy references ----------------------------------------------------------------------------


class LazyObject:
    """A ``"package.module:attr.path"`` reference imported on first use (registering never imports);
    calling it calls the target, so it stands in for a class or a factory."""

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


# -- isolating each implementation --------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _is_registration(hook_name: str) -> bool:
    return hook_name.startswith("agl_register_")


def _record_hook_error(plugin_name: str, hook_name: str, exc: BaseException) -> None:
    if _is_registration(hook_name):
        logger.warning("agentlightning plugin %r failed in %s: %s", plugin_name, hook_name, _describe(exc))
        with _lock:
            _state.hook_errors.setdefault(plugin_name, {})[hook_name] = _describe(exc)
    else:
        logger.warning("agentlightning plugin %r raised in %s (ignored): %s", plugin_name, hook_name, _describe(exc))
    logger.debug("Traceback of %s in plugin %r", hook_name, plugin_name, exc_info=exc)
    failed = _failed_in_call.get()
    if failed is not None:
        failed.add(plugin_name)


def _isolated(function: Callable[..., Any], plugin_name: str, hook_name: str) -> Callable[..., Any]:
    """``function`` as pluggy calls it, but an exception becomes a recorded failure and ``None``."""

    @functools.wraps(function)
    def call(*args: Any) -> Any:
        token = _current_plugin.set(plugin_name)
        try:
            result = function(*args)
        except Exception as exc:  # noqa: BLE001 -- a failing plugin is recorded and skipped
            _record_hook_error(plugin_name, hook_name, exc)
            return None
        finally:
            _current_plugin.reset(token)
        if _is_registration(hook_name):
            with _lock:
                errors = _state.hook_errors.get(plugin_name)
                if errors:
                    errors.pop(hook_name, None)
        return result

    return call


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager whose plain hook implementations are isolated from each other (see module doc)."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        plugin_name = super().register(plugin, name)
        if plugin_name is None:
            return None
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                # Wrappers surround every implementation (pluggy runs them as generators); they are
                # left as written, so their exceptions reach the caller (see registered()).
                if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                    # pluggy types HookImpl.function as Final, but its call loop reads the attribute on
                    # every call: replacing it keeps pluggy's loop (wrappers, tracing) and adds isolation.
                    setattr(impl, "function", _isolated(impl.function, plugin_name, caller.name))  # noqa: B010
        return plugin_name


# -- manager ------------------------------------------------------------------------------------


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
        _state.meta[ep.name] = PluginInfo(name=ep.name, distribution=distribution, version=version)
        for caller in pm.get_hookcallers(plugin) or []:
            if not caller.has_spec():
                logger.warning(
                    "agentlightning plugin %r implements %r, which is not a hook of this agentlightning version",
                    ep.name,
                    caller.name,
                )


def _build_manager() -> pluggy.PluginManager:
    global _building
    pm = _PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    _building = pm
    try:
        from agentlightning import __version__, builtin_plugins

        pm.register(builtin_plugins, name=BUILTIN_PLUGIN_NAME)
        _state.meta[BUILTIN_PLUGIN_NAME] = PluginInfo(BUILTIN_PLUGIN_NAME, "agentlightning", __version__, builtin=True)
        if resolve_bool_env_var(LightningEnvVar.AGL_DISABLE_PLUGIN_AUTOLOAD, fallback=False):
            logger.debug("%s is set: plugin entry points are not loaded", DISABLE_AUTOLOAD_ENV)
        else:
            _load_entry_points(pm)
    finally:
        _building = None
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first call (thread safe; re-entrant from plugin imports)."""
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
    """Every plugin the manager holds (with any registration hook error), then the entry points that failed."""
    pm = get_plugin_manager()
    infos: list[PluginInfo] = []
    with _lock:
        for name, plugin in pm.list_name_plugin():
            if plugin is None:  # blocked name
                continue
            hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
            errors = _state.hook_errors.get(name)
            error = "; ".join(f"{hook} raised {text}" for hook, text in sorted(errors.items())) if errors else None
            infos.append(replace(_state.meta.get(name, PluginInfo(name, None, None)), hooks=hooks, error=error))
        infos.extend(replace(failure) for failure in _state.load_failures)
    infos.sort(key=lambda info: (not info.builtin, info.name))
    return infos


# -- calling hooks ------------------------------------------------------------------------------


def _hook_caller(pm: pluggy.PluginManager, hook_name: str) -> Any:
    caller = getattr(pm.hook, hook_name, None)
    if caller is None or not caller.has_spec():
        raise ValueError(f"{hook_name!r} is not an agentlightning hook")
    return caller


def _call_hook(caller: Any, hook_name: str, **kwargs: Any) -> set[str]:
    """Call a hook through pluggy; the plugins that failed in the call (their exceptions are recorded)."""
    failed: set[str] = set()
    token = _failed_in_call.set(failed)
    try:
        caller(**kwargs)
    except Exception as exc:  # noqa: BLE001 -- only a wrapper can raise here: record it, keep the rest
        wrappers = [impl.plugin_name for impl in caller.get_hookimpls() if impl.wrapper or impl.hookwrapper]
        for plugin_name in wrappers or ["?"]:
            _record_hook_error(plugin_name, hook_name, exc)
    finally:
        _failed_in_call.reset(token)
    return failed


def _registrations(kind: str) -> Iterator[tuple[str, Any, str]]:
    """``(name, object, plugin name)`` of every registration of ``kind``, the one that wins first."""
    if kind not in REGISTRY_KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {', '.join(REGISTRY_KINDS)}")
    hook_name = f"agl_register_{kind}"
    caller = _hook_caller(get_plugin_manager(), hook_name)
    by_plugin: dict[str, dict[str, Any]] = {}  # in call order: highest priority first

    def register(name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"register() needs a non-empty string name, got {name!r}")
        by_plugin.setdefault(_current_plugin.get() or "?", {})[name] = obj

    failed = _call_hook(caller, hook_name, register=register)
    seen: set[str] = set()
    for plugin_name, entries in by_plugin.items():
        if plugin_name in failed:  # none of a failing implementation's registrations are kept
            continue
        for name, obj in entries.items():
            if name not in seen:
                seen.add(name)
                yield name, obj, plugin_name


def registered(kind: RegistryKind | str) -> dict[str, Any]:
    """Call the registration hook of ``kind``: ``name -> registered object`` (lazy objects not imported).

    Highest priority first (plugins in reverse load order, the built-in plugin last), so plugins
    override built-ins; an implementation that raises is recorded and none of its registrations kept.
    """
    return {name: obj for name, obj, _ in _registrations(kind)}


def notify(hook_name: str, **kwargs: Any) -> None:
    """Call the notification hook ``hook_name``; an implementation's exception is logged, never raised.

    Arguments that do not match the specification raise ``TypeError``; an unknown hook ``ValueError``.
    """
    caller = _hook_caller(get_plugin_manager(), hook_name)
    expected = set(caller.spec.argnames)
    if set(kwargs) != expected:
        missing = sorted(expected - set(kwargs))
        extra = sorted(set(kwargs) - expected)
        raise TypeError(
            f"{hook_name}() arguments do not match its specification: missing {missing}, unexpected {extra}"
        )
    _call_hook(caller, hook_name, **kwargs)  # a wrapper that raised is recorded: notifications never fail the caller


# -- resolving names ----------------------------------------------------------------------------


def algorithm_entry_points() -> list[EntryPoint]:
    """Entry points of the ``agentlightning.algorithms`` group, without importing any of them."""
    return sorted(entry_points(group=ALGORITHM_ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _load_algorithm_entry_point(name: str) -> tuple[Any, str] | None:
    matches = list(entry_points(group=ALGORITHM_ENTRY_POINT_GROUP, name=name))
    if not matches:
        return None
    ep = matches[0]
    if len(matches) > 1:
        others = ", ".join(m.value for m in matches[1:])
        logger.warning("Several %r entry points are named %r; using %s, ignoring %s", ep.group, name, ep.value, others)
    try:
        return ep.load(), _entry_point_text(ep)
    except Exception as exc:
        distribution, _ = _dist_of(ep)
        where = f"{_entry_point_text(ep)} of distribution {distribution}" if distribution else _entry_point_text(ep)
        raise PluginLoadError(where, exc) from exc


def install_hint(kind: str, name: str) -> str:
    """What to install for a ``kind`` named ``name`` that no plugin registers, derived from what is
    installed (the core keeps no list of plugin names): an installed plugin that did not load, or whose
    ``agl_register_<kind>`` raised, comes first; else the project's naming convention
    ``agentlightning-<name>``, as a suggestion."""
    suggestion = f"{PROJECT_NAME}-{name.replace('_', '-').lower()}"
    autoload_off = resolve_bool_env_var(LightningEnvVar.AGL_DISABLE_PLUGIN_AUTOLOAD, fallback=False)
    pm = get_plugin_manager()
    hook = f"agl_register_{kind}"
    with _lock:
        failures = {f.name: f.error for f in _state.load_failures}
        raised = [f"{plugin} ({errors[hook]})" for plugin, errors in _state.hook_errors.items() if hook in errors]
    if raised:
        return f"Installed plugins whose {hook} raised may provide it: {'; '.join(raised)}"
    not_loaded: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.has_plugin(ep.name):
            continue
        why = failures.get(ep.name) or (f"{DISABLE_AUTOLOAD_ENV} is set" if autoload_off else "blocked")
        distribution = _dist_of(ep)[0] or ep.name
        if name in (ep.name, distribution) or distribution == suggestion:
            return f"The installed plugin {distribution} may provide it, but it did not load: {why}"
        not_loaded.append(f"{distribution} ({why})")
    hint = (
        f"By this project's naming convention the {name!r} {_singular(kind)} would come with {suggestion}: "
        f"pip install {suggestion} (`agl plugins` lists what is installed)"
    )
    if kind in ("commands", "tokenizers"):  # not named after their plugin (agl export comes with apo)
        hint += f"; the README's layout section says which plugin adds which {_singular(kind)}"
    return f"{hint}. Installed plugins that did not load: {'; '.join(not_loaded)}" if not_loaded else hint


def resolve(kind: RegistryKind | str, name: str) -> Any:
    """The component registered as ``name`` for ``kind`` (a :class:`LazyObject` is imported).

    Algorithms come first from the ``agentlightning.algorithms`` entry point named ``name`` (only that
    one is imported, also with autoload off), then from ``agl_register_algorithms``; they must be
    classes (else :class:`ComponentResolutionError`). Raises :class:`UnknownComponentError` with the
    known names and a hint, :class:`PluginLoadError` when the import fails.
    """
    found = _load_algorithm_entry_point(name) if kind == "algorithms" else None
    if found is None:
        entries = registered(kind)
        if name not in entries:
            known = set(entries)
            if kind == "algorithms":
                known |= {ep.name for ep in algorithm_entry_points()}
            raise UnknownComponentError(kind, name, list(known), install_hint(kind, name))
        found = _unwrap(entries[name]), f"{_singular(kind)} {name!r} registered through agl_register_{kind}"
    obj, source = found
    if kind == "algorithms" and not isinstance(obj, type):
        raise ComponentResolutionError(f"{source} is {obj!r}, not a class")
    return obj


def _target_of(obj: Any) -> str:
    if isinstance(obj, LazyObject):
        return obj.target
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(obj)


def list_components(kind: RegistryKind | str) -> list[ComponentInfo]:
    """Every component of ``kind`` with the distribution that provides it, sorted by name; imports nothing."""
    registrations = list(_registrations(kind))  # loads the plugins first, so their records exist
    with _lock:
        meta = dict(_state.meta)
    components: dict[str, ComponentInfo] = {}
    if kind == "algorithms":
        for ep in algorithm_entry_points():
            components.setdefault(ep.name, ComponentInfo(kind, ep.name, ep.value, _dist_of(ep)[0], "entry point"))
    for name, obj, plugin_name in registrations:
        distribution = meta[plugin_name].distribution if plugin_name in meta else None
        components.setdefault(name, ComponentInfo(kind, name, _target_of(obj), distribution, plugin_name))
    return [components[name] for name in sorted(components)]
