"""Handing freed memory back to the operating system (glibc only; no-ops elsewhere).

A run alternates decoding (many small tensors, several threads) and updates (large activations). glibc
keeps freed heap memory in its arenas, one per thread that allocated, and adapts its mmap threshold
upwards as large blocks are freed; over a run several GB of RSS become memory that is free but held.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, Optional

__all__ = ["limit_heap_growth", "release_freed_memory", "releasing_freed_memory"]

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3


@lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 -- musl has no malloc_trim: treat it as "not glibc"
    except (OSError, AttributeError):
        return None
    return libc


def limit_heap_growth(mmap_threshold: int = 4 << 20, arenas: int = 2) -> None:
    """Call before threads start: at most ``arenas`` heaps, and every block over ``mmap_threshold`` in its
    own mapping (a fixed threshold also stops glibc raising it), unmapped as soon as it is freed."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)


def release_freed_memory() -> None:
    """Return the free pages of every heap to the system (``malloc_trim``); GRPO calls it after each phase."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def releasing_freed_memory(every_s: float = 2.0) -> Iterator[None]:
    """Call :func:`release_freed_memory` every ``every_s`` seconds from a daemon thread while the block runs.

    Decoding frees and reallocates the KV cache's growing tensors at every step, among the prefix cache's
    long-lived entries; without a periodic trim the freed pages stay in the process until the phase ends.
    """
    if _libc() is None:
        yield
        return
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(every_s):
            release_freed_memory()

    thread = threading.Thread(target=trim, name="agl-malloc-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
