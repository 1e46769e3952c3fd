"""``lightning_cli``: build objects from command-line options derived from their constructors.

``lightning_cli(MyAlgorithm, Trainer)`` reads ``--myalgorithm.learning-rate 0.1 --trainer.n-runners 4``
from ``sys.argv`` (one option per ``__init__`` parameter, typed from its annotation) and returns the
instances, one per class (a single instance for a single class).
"""

from __future__ import annotations

import argparse
import inspect
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["lightning_cli"]

_NONE_WORDS = {"none", "null", "nil", "~"}
_TRUE_WORDS = {"1", "true", "t", "yes", "y", "on"}
_FALSE_WORDS = {"0", "false", "f", "no", "n", "off"}


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")


def _converter(kind: Any, nullable: bool) -> Callable[[str], Any]:
    base: Callable[[str], Any] = _parse_bool if kind is bool else kind if kind in (int, float, str) else str

    def convert(text: str) -> Any:
        if nullable and text.strip().lower() in _NONE_WORDS:
            return None
        try:
            return base(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {getattr(kind, '__name__', kind)}") from exc

    convert.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its errors
    return convert


def _unwrap(annotation: Any) -> Tuple[Any, bool, bool]:
    """(element type, accepts None, is a list) of a parameter annotation."""
    nullable = False
    if typing.get_origin(annotation) is Union:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else str
    if typing.get_origin(annotation) in (list, List, Sequence, tuple):
        element_types = typing.get_args(annotation)
        return (element_types[0] if element_types else str), nullable, True
    return annotation, nullable, False


def _add_class_options(parser: argparse.ArgumentParser, cls: type) -> Dict[str, str]:
    """Add one option per constructor parameter of ``cls``; returns {parameter: argparse dest}."""
    prefix = cls.__name__.lower()
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - unresolvable annotations: treat those parameters as strings
        hints = {}
    group = parser.add_argument_group(cls.__name__)
    destinations: Dict[str, str] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        kind, nullable, is_list = _unwrap(hints.get(name, str))
        dest = f"{prefix}__{name}"
        options: Dict[str, Any] = {"dest": dest, "type": _converter(kind, nullable)}
        if is_list:
            options["nargs"] = "*"
        if parameter.default is parameter.empty:
            options["required"] = True
        else:
            options["default"] = parameter.default
        options["help"] = f"{cls.__name__}({name}=...), default: {options.get('default', 'required')}"
        group.add_argument(f"--{prefix}.{name.replace('_', '-')}", **options)
        destinations[name] = dest
    return destinations


def lightning_cli(*classes: type, argv: Optional[Sequence[str]] = None) -> Any:
    """Instantiate ``classes`` from command-line options (``argv``, default ``sys.argv[1:]``)."""
    if not classes:
        return ()
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    plans = [(cls, _add_class_options(parser, cls)) for cls in classes]
    parsed = parser.parse_args(argv)
    instances = tuple(cls(**{name: getattr(parsed, dest) for name, dest in dests.items()}) for cls, dests in plans)
    return instances[0] if len(instances) == 1 else instances
