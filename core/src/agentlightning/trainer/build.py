"""Resolve Trainer component specs: instance, class, factory, import string, registered name or dict."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Type, TypeVar

from agentlightning.errors import ComponentResolutionError

__all__ = ["build_component", "import_object"]

T = TypeVar("T")


def import_object(path: str) -> Any:
    """``"package.module:Name"`` or ``"package.module.Name"``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ComponentResolutionError(
            f"{path!r} is neither a registered name nor an import path (package.module:Name)"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ComponentResolutionError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ComponentResolutionError(f"{module_name!r} has no attribute {attr!r} (from {path!r})") from exc
    return obj


def _instantiate(factory: Callable[..., Any], kwargs: Mapping[str, Any], optional: Mapping[str, Any]) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in optional.items() if k not in kwargs and (accepts_any or k in params)}
    return factory(**kwargs, **extra)


def build_component(
    spec: Any,
    expected_type: Type[T],
    spec_name: str,
    *,
    default_factory: Optional[Callable[[], T]] = None,
    allow_none: bool = False,
    optional_defaults: Optional[Mapping[str, Any]] = None,
    registry: Optional[Callable[[str], Optional[Callable[..., Any]]]] = None,
    dict_default_cls: Optional[Callable[..., Any]] = None,
    dict_requires_type: bool = False,
) -> Optional[T]:
    """Turn ``spec`` into an instance of ``expected_type``.

    ``registry(name)`` maps a short name (``"baseline"``) to a class or factory, or returns None.
    ``optional_defaults`` are passed to a constructor only if it accepts them. A dict without
    ``type`` builds ``dict_default_cls`` from its items, unless ``dict_requires_type``.
    """
    optional = dict(optional_defaults or {})
    if spec is None:
        if default_factory is not None:
            return default_factory()
        if allow_none:
            return None
        raise ComponentResolutionError(f"{spec_name} is required")
    if isinstance(spec, expected_type):
        return spec
    factory: Any
    kwargs: Dict[str, Any] = {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        type_spec = kwargs.pop("type", None)
        if type_spec is None:
            if dict_default_cls is None or dict_requires_type:
                raise ComponentResolutionError(f"{spec_name} dict needs a 'type' key naming the class, got {spec!r}")
            factory = dict_default_cls
        else:
            factory = _lookup(type_spec, spec_name, registry)
    elif isinstance(spec, str):
        factory = _lookup(spec, spec_name, registry)
    elif callable(spec):
        other_kind = _component_kind(spec)
        if other_kind is not None:
            # An Algorithm, Adapter, LitAgent, ... instance is callable, but it is not a factory:
            # calling it would run it.
            raise ComponentResolutionError(
                f"{spec_name} must be a {expected_type.__name__}, got a {other_kind} instance: {spec!r}"
            )
        factory = spec
    else:
        raise ComponentResolutionError(
            f"{spec_name} must be a {expected_type.__name__}, a class, a factory, a name or an import path; got {spec!r}"
        )
    try:
        instance = _instantiate(factory, kwargs, optional)
    except ComponentResolutionError:
        raise
    except TypeError as exc:
        raise ComponentResolutionError(f"cannot build {spec_name} from {spec!r}: {exc}") from exc
    if not isinstance(instance, expected_type):
        raise ComponentResolutionError(
            f"{spec_name} spec {spec!r} produced {type(instance).__name__}, not a {expected_type.__name__}"
        )
    return instance


def _component_kind(obj: Any) -> Optional[str]:
    """The agentlightning component base ``obj`` is an instance of (classes and functions: None)."""
    if isinstance(obj, type):
        return None
    from agentlightning.adapter import Adapter
    from agentlightning.algorithm import Algorithm
    from agentlightning.execution import ExecutionStrategy
    from agentlightning.litagent import LitAgent
    from agentlightning.runner import Runner
    from agentlightning.store.base import LightningStore
    from agentlightning.tracer import Tracer

    for base in (Algorithm, Adapter, LitAgent, Runner, Tracer, ExecutionStrategy, LightningStore):
        if isinstance(obj, base):
            return base.__name__
    return None


def _lookup(name: Any, spec_name: str, registry: Optional[Callable[[str], Optional[Callable[..., Any]]]]) -> Any:
    if not isinstance(name, str):
        return name
    if registry is not None:
        try:
            found = registry(name)
        except ComponentResolutionError:
            raise
        except (LookupError, ImportError) as exc:  # unknown name, or a plugin that cannot be imported
            if not isinstance(exc, LookupError) or not ("." in name or ":" in name):
                raise ComponentResolutionError(f"cannot resolve {spec_name} {name!r}: {exc}") from exc
            found = None  # not registered, but an import path: imported below
        if found is not None:
            return found
    if "." in name or ":" in name:
        try:
            return import_object(name)
        except ComponentResolutionError as exc:
            raise ComponentResolutionError(f"cannot resolve {spec_name} {name!r}: {exc}") from exc
    raise ComponentResolutionError(f"unknown {spec_name} {name!r}: not a registered name nor an import path")
