"""Logging setup with rich."""

from __future__ import annotations

import logging
from typing import Union

__all__ = ["setup_logging", "setup_module_logging"]

_HANDLER_NAME = "agentlightning"


def setup_logging(level: Union[int, str] = "INFO", *, rich: bool = True) -> None:
    """Send ``agentlightning`` logs to stderr (through rich when available)."""
    logger = logging.getLogger("agentlightning")
    logger.setLevel(level)
    for existing in list(logger.handlers):
        if existing.get_name() == _HANDLER_NAME:
            logger.removeHandler(existing)
    handler: logging.Handler
    if rich:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(_HANDLER_NAME)  # so a second call replaces it instead of doubling output
    logger.addHandler(handler)


def setup_module_logging(module: str, level: Union[int, str] = "INFO") -> None:
    logging.getLogger(module).setLevel(level)
