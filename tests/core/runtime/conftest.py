"""Fixtures for the execution-side tests: runners, trainer, algorithms, agents.

The ``store`` fixture (every backend) comes from ``tests/core/conftest.py``; helpers live in
``runtime_helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentlightning import plugins
from agentlightning.tracer import OtelTracer, clear_active_tracer


@pytest.fixture(autouse=True)
def _isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the built-in plugin: installed fixture plugins must not add instrumentors or listeners."""
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins.reset_plugin_manager()
    clear_active_tracer()
    yield
    clear_active_tracer()
    plugins.reset_plugin_manager()


@pytest.fixture
def tracer() -> OtelTracer:
    return OtelTracer()
