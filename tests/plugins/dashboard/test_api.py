"""The dashboard's reads over real HTTP: filters, ETags shared by clients, cut payloads, errors, token.

The page itself is tested in a browser by test_browser.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from agentlightning.server import StoreServer
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.types import EnqueueRolloutRequest, Span
from agentlightning_dashboard import routes as dashboard

API = "/v1/agl/dashboard"


@pytest.fixture()
def store() -> InMemoryLightningStore:
    store = InMemoryLightningStore()

    async def fill() -> None:
        await store.enqueue_many_rollouts(
            [
                EnqueueRolloutRequest(input={"n": i, "text": "x" * 500}, mode="val" if i % 4 == 0 else "train")
                for i in range(12)
            ]
        )
        started = await store.start_rollout({"big": True, "needle": "find-me"})
        spans = [
            Span(
                rollout_id=started.rollout_id,
                attempt_id=started.attempt.attempt_id,
                sequence_id=i + 1,
                trace_id="ab" * 16,
                span_id=f"{i:016x}",
                name="agentlightning.annotation" if i == 2 else "step",
                attributes={"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.5}
                if i == 2
                else {"text": "y" * 5000, "ids": list(range(300)), "script": "<script>alert(1)</script>"},
                start_time=time.time(),
                end_time=time.time() + 0.1,
            )
            for i in range(3)
        ]
        await store.add_many_spans(spans)

    asyncio.run(fill())
    return store


@pytest.fixture()
def http(store: InMemoryLightningStore, tmp_path: Path) -> Iterator[httpx.Client]:
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 0.5, "note": "text"}\n{"step": 2, "loss": 0.25}\n{"ste'
    )
    with StoreServer(store, port=0, run_dir=tmp_path) as server, httpx.Client(base_url=server.url) as client:
        yield client


def test_rollout_list_filters_sorts_and_pages(http: httpx.Client) -> None:
    page = http.get(f"{API}/rollouts", params={"limit": 5}).json()
    assert page["total"] == 13 and len(page["items"]) == 5
    assert all(len(item["input_preview"]) <= dashboard.PREVIEW_CHARS + 1 for item in page["items"])
    vals = http.get(f"{API}/rollouts", params={"mode": "val", "limit": 2, "offset": 2}).json()
    assert vals["total"] == 3 and [i["mode"] for i in vals["items"]] == ["val"]
    found = http.get(f"{API}/rollouts", params={"q": "FIND-ME"}).json()
    assert found["total"] == 1 and found["items"][0]["reward"] == 0.5 and found["items"][0]["status"] == "running"
    queued = http.get(f"{API}/rollouts", params={"status": "queuing", "sort_by": "rollout_id", "sort_order": "asc"})
    ids = [i["rollout_id"] for i in queued.json()["items"]]
    assert len(ids) == 12 and ids == sorted(ids)


def test_bad_parameters_get_4xx(http: httpx.Client) -> None:
    bad = http.get(f"{API}/rollouts", params={"status": "exploded"})
    assert bad.status_code == 400 and "exploded" in bad.json()["message"]
    assert http.get(f"{API}/rollouts", params={"sort_by": "nonsense"}).status_code == 400
    assert http.get(f"{API}/rollouts", params={"sort_order": "sideways"}).status_code == 400
    assert http.get(f"{API}/rollouts", params={"limit": 0}).status_code == 400
    assert http.get(f"{API}/rollouts", params={"limit": "many"}).status_code == 422
    assert http.get(f"{API}/rollouts/ro-missing").status_code == 404


def test_etag_answers_304_until_something_changes(http: httpx.Client, store: InMemoryLightningStore) -> None:
    first = http.get(f"{API}/overview")
    etag = first.headers["etag"]
    assert first.json()["statistics"]["total_rollouts"] == 13
    again = http.get(f"{API}/overview", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    asyncio.run(store.enqueue_rollout({"new": 1}))
    time.sleep(dashboard.CACHE_SECONDS + 0.1)
    changed = http.get(f"{API}/overview", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["statistics"]["total_rollouts"] == 14


def test_rollout_detail_cuts_long_values_and_the_span_api_gives_them_in_full(http: httpx.Client) -> None:
    rollout_id = http.get(f"{API}/rollouts", params={"q": "find-me"}).json()["items"][0]["rollout_id"]
    detail = http.get(f"{API}/rollouts/{rollout_id}").json()
    assert detail["reward"] == 0.5 and len(detail["attempts"]) == 1
    summary = detail["spans"][0]
    assert summary["name"] == "step" and summary["attributes"] == {}  # the big values come on a click
    assert detail["spans"][2]["attributes"] == {
        "agentlightning.reward.0.name": "primary",
        "agentlightning.reward.0.value": 0.5,
    }
    step = http.get(f"{API}/rollouts/{rollout_id}/spans/{summary['span_id']}").json()
    assert step["agl_truncated"] is True and step["agl_lengths"] == {"text": 5000, "ids": 300}
    assert len(step["attributes"]["text"]) == dashboard.MAX_TEXT + 1 and len(step["attributes"]["ids"]) == 64
    assert step["attributes"]["script"] == "<script>alert(1)</script>"  # data stays data; the page shows it as text
    assert http.get(f"{API}/rollouts/{rollout_id}/spans/nope").status_code == 404
    full = http.get(f"/v1/agl/rollouts/{rollout_id}/spans", params={"span_id": step["span_id"]}).json()["items"][0]
    assert len(full["attributes"]["text"]) == 5000 and len(full["attributes"]["ids"]) == 300


def test_metrics_of_the_run_folder(http: httpx.Client) -> None:
    metrics = http.get(f"{API}/metrics").json()
    assert metrics["rows"] == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]  # text and a torn line skipped


def test_metrics_without_a_run_folder_is_404() -> None:
    with StoreServer(InMemoryLightningStore(), port=0) as server:
        response = httpx.get(f"{server.url}{API}/metrics")
        assert response.status_code == 404 and "--run-dir" in response.json()["message"]


def test_page_is_public_data_needs_the_token() -> None:
    with StoreServer(InMemoryLightningStore(), port=0, token="t0ken") as server:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and "dashboard/app.js" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert httpx.get(server.url + "/dashboard/app.js").headers["content-type"].startswith("text/javascript")
        assert httpx.get(server.url + "/dashboard/app.py").status_code == 401  # only the page's own files are public
        assert httpx.get(f"{server.url}{API}/overview").status_code == 401
        authorized = httpx.get(f"{server.url}{API}/overview", headers={"Authorization": "Bearer t0ken"})
        assert authorized.status_code == 200


def test_the_plugin_registers_its_routes_and_command() -> None:
    import json
    import subprocess
    import sys

    listed = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "plugins", "--json"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    plugin = next(p for p in data["plugins"] if p["name"] == "dashboard")
    assert plugin["distribution"] == "agentlightning-dashboard" and plugin["error"] is None
    assert {"agl_register_commands", "agl_register_server_routes"} <= set(plugin["hooks"])
    for kind, target in (("server_routes", "routes:ROUTES"), ("commands", "cli:add_parser")):
        (component,) = [c for c in data["components"][kind] if c["name"] == "dashboard"]
        assert component["target"] == f"agentlightning_dashboard.{target}"
        assert component["distribution"] == "agentlightning-dashboard"


def test_the_store_server_banner_points_at_the_dashboard() -> None:
    from agentlightning.cli.store import _banner

    with StoreServer(InMemoryLightningStore(), port=0) as server:
        text = _banner(server, "memory://")
        page = httpx.get(f"{server.url}/", timeout=10)
    assert f"  dashboard:  {server.url}/\n" in text
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
