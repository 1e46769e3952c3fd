"""Handing freed heap memory back to the system during a run (glibc; no-ops elsewhere)."""

from __future__ import annotations

import sys
import threading

import pytest

from agentlightning_grpo.memory import limit_heap_growth, release_freed_memory, releasing_freed_memory


def _trim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agl-malloc-trim"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_periodic_release_runs_during_the_block_and_stops_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentlightning_grpo.memory as memory

    calls = threading.Semaphore(0)
    monkeypatch.setattr(memory, "release_freed_memory", calls.release)
    with releasing_freed_memory(every_s=0.01):
        assert len(_trim_threads()) == 1
        assert calls.acquire(timeout=5) and calls.acquire(timeout=5)  # called repeatedly
    assert not _trim_threads()


def test_the_calls_are_safe_to_make_anywhere() -> None:
    limit_heap_growth()
    release_freed_memory()
    with pytest.raises(RuntimeError, match="inside"), releasing_freed_memory(every_s=0.01):
        raise RuntimeError("inside")
    assert not _trim_threads()
