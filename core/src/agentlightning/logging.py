"""Logging setup with rich."""

from __future__ import annotations

import logging
from typing import Union

__all__ = ["setup_logging", "setup_module_logging"]


def setup_logging(level: Union[int, str] = "INFO", *, rich: bool = True) -> None:
    """Send ``agentlightning`` logs to stderr (through rich when available)."""
    logger = logging.getLogger("agentlightning")
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_agl_handler", False):
            logger.removeHandler(handler)
    handler: logging.Handler
    if rich:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._agl_handler = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


def setup_module_logging(module: str, level: Union[int, str] = "INFO") -> None:
    logging.getLogger(module).setLevel(level)
