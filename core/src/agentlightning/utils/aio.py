"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, List, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from sync code, even when this thread already runs a loop
    (a notebook): then it runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    results: List[T] = []
    errors: List[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(coroutine))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="agl-run-sync")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]
