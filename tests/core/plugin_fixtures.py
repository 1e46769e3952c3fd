"""Fixtures shared by the plugin and CLI tests: the test distributions and a fresh plugin manager."""

from __future__ import annotations

import importlib.metadata
import sys
from typing import Iterator

import pytest

from agentlightning import plugins

TEST_DISTS = {
    "agl-broken-plugin": "tests/plugin_dists/agl-broken-plugin",
    "agl-sample-plugin": "tests/plugin_dists/agl-sample-plugin",
}


@pytest.fixture
def test_dists() -> None:
    """Fail (never skip) when the fixture distributions are not installed: CI must install them."""
    missing = []
    for dist, path in TEST_DISTS.items():
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(path)
    if missing:
        raise RuntimeError(
            "the plugin test distributions are not installed in this environment; run "
            f"`{sys.executable} -m pip install {' '.join(missing)}` from the repository root (nox does this)"
        )


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()
