"""Logging setup: ``agentlightning`` logs (and those of loggers you name) to the console, with rich."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, List, Optional, Union

__all__ = ["configure_logger", "setup_logging", "setup_module_logging"]

_HANDLER_NAME = "agentlightning"
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Level = Union[int, str]


def _level(level: Level) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def _console_handler(color: Union[bool, Dict[str, Any]], formatter: Optional[logging.Formatter]) -> logging.Handler:
    handler: logging.Handler
    if color:
        from rich.logging import RichHandler

        options: Dict[str, Any] = {"show_path": False, "rich_tracebacks": True}
        if isinstance(color, dict):
            options.update(color)
        handler = RichHandler(**options)
        handler.setFormatter(formatter or logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter or logging.Formatter(_PLAIN_FORMAT))
    return handler


def _configure(
    name: str, level: int, handlers: List[logging.Handler], propagate: bool, extra: List[logging.Handler]
) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(level)
    # Handlers from an earlier call are replaced, so calling twice never doubles the output.
    for existing in list(logger.handlers):
        if (existing.get_name() or "").startswith(_HANDLER_NAME):
            logger.removeHandler(existing)
    for index, handler in enumerate(handlers):
        handler.set_name(f"{_HANDLER_NAME}-{index}")
        logger.addHandler(handler)
    for handler in extra:
        logger.addHandler(handler)
    logger.propagate = propagate
    return logger


def _disable_other_loggers(kept: List[str]) -> None:
    for name, existing in logging.root.manager.loggerDict.items():
        if isinstance(existing, logging.Logger) and not any(name == k or name.startswith(k + ".") for k in kept):
            existing.disabled = True


def setup_logging(
    level: Level = "INFO",
    *,
    console: bool = True,
    color: Union[bool, Dict[str, Any]] = True,
    propagate: bool = False,
    disable_existing_loggers: bool = False,
    capture_warnings: bool = False,
    submodule_levels: Optional[Dict[str, Level]] = None,
    extra_handlers: Optional[List[logging.Handler]] = None,
    formatter: Optional[logging.Formatter] = None,
    apply_to: Optional[List[str]] = None,
    files: Union[str, Dict[str, str], None] = None,
) -> None:
    """Send ``agentlightning`` logs, and those of the loggers in ``apply_to``, to the console.

    ``color``: rich output (a dict passes options to ``rich.logging.RichHandler``); ``files``: one
    log file for every configured logger, or ``{logger name: file}``; ``submodule_levels``: levels
    of sub-loggers (``{"agentlightning.store": "DEBUG"}``); ``capture_warnings``: route
    ``warnings`` through logging; ``disable_existing_loggers``: silence every other logger.
    """
    names = ["agentlightning", *(apply_to or [])]
    for name in names:
        handlers: List[logging.Handler] = [_console_handler(color, formatter)] if console else []
        target = files.get(name) if isinstance(files, dict) else files
        if target:
            handlers.append(logging.FileHandler(target))
            handlers[-1].setFormatter(formatter or logging.Formatter(_PLAIN_FORMAT))
        _configure(name, _level(level), handlers, propagate, extra_handlers or [])
    for name, sub_level in (submodule_levels or {}).items():
        logging.getLogger(name).setLevel(_level(sub_level))
    if capture_warnings:
        logging.captureWarnings(True)
    if disable_existing_loggers:
        _disable_other_loggers(names)


def setup_module_logging(
    level: Level = "INFO",
    *,
    name: str = "agentlightning",
    console: bool = True,
    color: Union[bool, Dict[str, Any]] = True,
    propagate: bool = False,
    disable_existing_loggers: bool = False,
) -> logging.Logger:
    """Configure the logger ``name`` alone (console output at ``level``) and return it."""
    logger = _configure(name, _level(level), [_console_handler(color, None)] if console else [], propagate, [])
    if disable_existing_loggers:
        _disable_other_loggers([name])
    return logger


def configure_logger(level: int = logging.INFO, name: str = "agentlightning") -> logging.Logger:
    """Deprecated (0.3): plain console logging for ``name``; use :func:`setup_logging`."""
    warnings.warn("configure_logger is deprecated; use agentlightning.setup_logging", DeprecationWarning, stacklevel=2)
    return setup_module_logging(level, name=name, color=False)
