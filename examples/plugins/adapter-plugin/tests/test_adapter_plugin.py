"""The installed example adapter plugin: found by name, listed with its distribution, used by a Trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict

import pytest

import agentlightning as agl
from agentlightning import plugins
from agentlightning.semconv import AGL_OPERATION
from agl_example_adapter import SpanCounts


@pytest.fixture(autouse=True)
def fresh_plugins() -> Any:
    plugins.reset_plugin_manager()
    yield
    plugins.reset_plugin_manager()


@agl.rollout
def lookup_agent(task: Dict[str, Any]) -> float:
    for key in task["keys"]:
        with agl.operation(name="lookup") as op:
            op.set_input(key=key)
    return 1.0


def test_the_adapter_is_registered_by_name() -> None:
    assert plugins.resolve("adapters", "span-counts") is SpanCounts
    (info,) = [c for c in plugins.list_components("adapters") if c.name == "span-counts"]
    assert info.distribution == "agl-example-adapter"


def test_agl_plugins_lists_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "plugins", "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {
        key: value
        for key, value in next(p for p in data["plugins"] if p["name"] == "example-adapter").items()
        if key in ("name", "error")
    } == {"name": "example-adapter", "error": None}
    assert "span-counts" in {c["name"] for c in data["components"]["adapters"]}


def test_a_trainer_uses_it_by_name(tmp_path: Any) -> None:
    baseline = agl.Baseline()
    trainer = agl.Trainer(algorithm=baseline, adapter="span-counts", store=f"sqlite:///{tmp_path / 'store.db'}")
    assert isinstance(trainer.adapter, SpanCounts)
    trainer.dev(lookup_agent, [{"keys": ["a", "b"]}, {"keys": ["c"]}])
    counts = sorted((report.rollout.input["keys"], report.adapted) for report in baseline.reports)
    # One span per lookup, plus the one recording the returned reward.
    assert [(keys, adapted[AGL_OPERATION], sum(adapted.values())) for keys, adapted in counts] == [
        (["a", "b"], 2, 3),
        (["c"], 1, 2),
    ]


def test_options_reach_the_adapter() -> None:
    trainer = agl.Trainer(
        algorithm="baseline", adapter={"type": "span-counts", "ignore": [AGL_OPERATION]}, store="memory://"
    )
    assert isinstance(trainer.adapter, SpanCounts) and trainer.adapter.ignore == {AGL_OPERATION}
