"""The dashboard in a real browser: Playwright drives Debian's chromium against ``agl dashboard``
(a real process, read-only on a SQLite store filled by a real ``Trainer.dev`` run).

Screenshots of every page land in ``build/dashboard-screenshots/`` (or ``$AGL_SCREENSHOTS``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest
from opentelemetry import trace as trace_api
from playwright import sync_api as playwright_api

import agentlightning as agl
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.types import EnqueueRolloutRequest, PromptTemplate

CHROMIUM = os.environ.get("AGL_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("AGL_SCREENSHOTS", Path(__file__).resolve().parents[3] / "build" / "dashboard-screenshots")
)
SCRIPT = "<script>window.__agl_pwned = 1</script><img src=x onerror='window.__agl_pwned = 2'>"

pytestmark = pytest.mark.timeout(300)


# -- the run ----------------------------------------------------------------------------------
@agl.rollout
def calculator_agent(task: Dict[str, Any], prompt_template: agl.PromptTemplate) -> float:
    agl.emit_message(prompt_template.format(question=task["question"]))
    if task.get("hostile"):
        agl.emit_message(SCRIPT)  # agent output is untrusted: the page must show it as text
        # An LLM call with a tool call, as the proxy records it (with a long token id list).
        tracer = trace_api.get_tracer("dashboard-test")
        with tracer.start_as_current_span("openai.chat.completion", attributes=LLM_CALL_ATTRIBUTES):
            time.sleep(0.05)
    with agl.operation(name="evaluate") as op:
        op.set_input(expression=task["question"])
        if task.get("crash"):
            raise ZeroDivisionError("the agent divided by zero on purpose")
        result = eval(task["question"], {"__builtins__": {}})
        op.set_output(result)
    return 1.0 if result == task["answer"] else 0.0


TRAIN = [{"question": f"{i} + {i}", "answer": 2 * i if i % 3 else -1} for i in range(12)]
TRAIN += [{"question": "1 / 0", "answer": 0, "crash": True}, {"question": "6 * 7", "answer": 42, "hostile": True}]
VAL = [{"question": f"{i} * 3", "answer": 3 * i} for i in range(4)]

LLM_REQUEST = {
    "model": "tiny",
    "messages": [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "What is 123 * 45? " + SCRIPT},
    ],
}
LLM_RESPONSE = {
    "choices": [
        {
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"a": 123}'}}
                ],
            }
        }
    ]
}
LLM_CALL_ATTRIBUTES: Dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "tiny",
    "gen_ai.usage.input_tokens": 31,
    "gen_ai.usage.output_tokens": 9,
    "agentlightning.llm.request": json.dumps(LLM_REQUEST),
    "agentlightning.llm.response": json.dumps(LLM_RESPONSE),
    "agentlightning.llm.prompt_token_ids": list(range(500)),
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    trainer = agl.Trainer(
        algorithm="baseline",
        n_runners=2,
        store=f"sqlite:///{folder / 'store.db'}",
        initial_resources={"prompt_template": PromptTemplate(template="Compute: {question}", engine="f-string")},
    )
    with trainer:
        trainer.dev(calculator_agent, TRAIN, val_dataset=VAL)

    async def extend() -> None:
        # What a real run adds beside Trainer.dev: a second prompt version and the algorithm's metrics.jsonl.
        store = SqliteLightningStore(folder / "store.db")
        try:
            await store.add_resources(
                {"prompt_template": PromptTemplate(template="Compute step by step: {question}", engine="f-string")}
            )
        finally:
            await store.close()

    asyncio.run(extend())
    with open(folder / "metrics.jsonl", "w") as handle:
        for step in range(1, 6):
            handle.write(json.dumps({"step": step, "reward": step / 10, "loss": 1 / step}) + "\n")
    return folder


class Dashboard:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url


def _start(args: List[str]) -> Dashboard:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentlightning.cli", "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        found = re.search(r"open:\s+(http://\S+?)/\s", line)
        if found:
            return Dashboard(process, found.group(1))
    raise AssertionError("agl dashboard did not start:\n" + "".join(lines))


def _stop(dashboard: Dashboard) -> None:
    dashboard.process.terminate()
    dashboard.process.wait(10)


@pytest.fixture(scope="module")
def dashboard(run_dir: Path) -> Iterator[Dashboard]:
    started = _start(["--store", f"sqlite:///{run_dir / 'store.db'}", "--refresh", "0.3"])
    yield started
    _stop(started)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: List[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _visit(page: Any, url: str) -> None:
    page.goto("about:blank")  # a goto that changes only the #fragment would not load the page again
    page.goto(url)


def _rows(page: Any) -> List[str]:
    return [r.get_attribute("data-rollout") for r in page.locator("table.rollouts tbody tr").all()]


# -- tests ------------------------------------------------------------------------------------
def test_every_page_loads_on_a_trainer_dev_run(dashboard: Dashboard, page: Any) -> None:
    page.goto(dashboard.url + "/")
    page.wait_for_selector("text=Run overview")
    page.wait_for_selector(".card >> text=rollouts")
    assert page.locator(".card").first.locator(".v").inner_text() == str(len(TRAIN) + len(VAL) + 0)
    page.wait_for_selector("svg.chart polyline")  # the reward curve
    assert page.locator("table.rollouts tbody tr").count() == 1  # the crashed rollout, under recent failures
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

    page.click("header >> text=Rollouts")
    page.wait_for_selector("form.filters")
    assert len(_rows(page)) == len(TRAIN) + len(VAL)
    page.screenshot(path=str(SCREENSHOTS / "rollouts.png"), full_page=True)

    page.click("header >> text=Resources")
    page.wait_for_selector(".diff")
    assert page.locator(".diff .add").first.inner_text().startswith("+ Compute step by step")
    assert page.locator(".diff .del").first.inner_text().startswith("- Compute: {question}")
    page.screenshot(path=str(SCREENSHOTS / "resources.png"), full_page=True)

    page.click("header >> text=Workers")
    page.wait_for_selector("table >> text=idle")
    page.screenshot(path=str(SCREENSHOTS / "workers.png"), full_page=True)

    page.click("header >> text=Metrics")
    page.wait_for_selector(".metric[data-metric=loss] polyline")
    assert page.locator(".metric").count() == 2  # reward and loss against the step
    page.screenshot(path=str(SCREENSHOTS / "metrics.png"), full_page=True)


def test_filters_search_and_pagination(dashboard: Dashboard, page: Any) -> None:
    _visit(page, dashboard.url + "/#/rollouts?limit=5")
    page.wait_for_selector("#page-info >> text=1–5 of 18")
    first = _rows(page)
    assert len(first) == 5
    page.click("#next")
    page.wait_for_selector("#page-info >> text=6–10 of 18")
    second = _rows(page)
    assert len(second) == 5 and not set(first) & set(second)
    page.click("#prev")
    page.wait_for_selector("#page-info >> text=1–5 of 18")
    assert _rows(page) == first

    page.select_option("select[name=mode]", "val")
    page.wait_for_selector("#page-info >> text=1–4 of 4")
    assert set(page.locator("table.rollouts td:nth-child(3)").all_inner_texts()) == {"val"}

    _visit(page, dashboard.url + "/#/rollouts")
    page.select_option("select[name=status]", "failed")
    page.wait_for_selector("#page-info >> text=1–1 of 1")
    assert "ZeroDivisionError" in page.locator("table.rollouts tbody").inner_text()

    _visit(page, dashboard.url + "/#/rollouts")
    page.fill("input[name=q]", "6 * 7")
    page.click("text=Search")
    page.wait_for_selector("#page-info >> text=1–1 of 1")
    assert "6 * 7" in page.locator("td.input").inner_text()

    _visit(page, dashboard.url + "/#/rollouts?sort_by=rollout_id&sort_order=asc")
    page.wait_for_selector("table.rollouts tbody tr")
    ids = _rows(page)
    assert ids == sorted(ids)


def test_rollout_page_shows_agent_output_as_text(dashboard: Dashboard, page: Any) -> None:
    _visit(page, dashboard.url + "/#/rollouts?q=6%20*%207")
    page.wait_for_selector("table.rollouts tbody tr")
    page.click("table.rollouts tbody tr a")
    page.wait_for_selector(".waterfall .row")
    names = page.locator(".waterfall .name").all_inner_texts()
    assert any("agentlightning.message" in n for n in names) and any("openai.chat.completion" in n for n in names)
    assert any("agentlightning.annotation" in n for n in names)  # the reward

    # The hostile message span: its body shows as text and nothing in it runs.
    page.click(".waterfall .row:has-text('openai.chat.completion')")
    page.wait_for_selector(".msg.system")
    page.screenshot(path=str(SCREENSHOTS / "rollout.png"), full_page=True)
    for row in page.locator(".waterfall .row:not(:has-text('openai.chat.completion'))").all():
        row.click()
    page.wait_for_selector(".detail:has-text('agentlightning.message.body') >> nth=1")
    assert page.locator(f"pre:has-text('{SCRIPT[:30]}')").count() >= 1
    assert page.evaluate("window.__agl_pwned") is None
    assert page.locator(".detail script, .detail img").count() == 0

    # The LLM call: messages, the tool call, token counts; its 500 token ids come cut, then in full.
    assert page.locator(".msg.system >> text=You are a calculator.").count() == 1
    assert page.locator(".tool-call >> text=tool call calculator").count() == 1
    assert page.locator(".kv >> text=500 (64 here)").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "rollout-all-spans.png"), full_page=True)
    page.click("button.full")
    page.wait_for_selector(".kv >> text=/^500$/")
    assert page.evaluate("window.__agl_pwned") is None


def test_failed_rollout_shows_its_stack(dashboard: Dashboard, page: Any) -> None:
    _visit(page, dashboard.url + "/#/rollouts?status=failed")
    page.wait_for_selector("table.rollouts tbody tr")
    page.click("table.rollouts tbody tr a")
    page.wait_for_selector("details summary.error-box")
    page.click("details summary.error-box")
    assert "Traceback" in page.locator("details pre").inner_text()
    assert "ZeroDivisionError" in page.locator("details pre").inner_text()


def test_a_rollout_added_while_the_page_is_open_appears(dashboard: Dashboard, run_dir: Path, page: Any) -> None:
    _visit(page, dashboard.url + "/#/rollouts")
    page.wait_for_selector("table.rollouts tbody tr")
    marker = f"arrived-live-{time.time_ns()}"

    async def add() -> None:
        store = SqliteLightningStore(run_dir / "store.db")  # the dashboard only reads: the file is free to write
        try:
            await store.enqueue_many_rollouts([EnqueueRolloutRequest(input={"question": marker})])
            await store.sync()
        finally:
            await store.close()

    writer = threading.Thread(target=asyncio.run, args=(add(),))  # Playwright's loop owns this thread
    writer.start()
    writer.join(60)
    page.wait_for_selector(f"td.input >> text={marker}", timeout=15_000)  # no reload: the page polls
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_token_is_required_beyond_loopback(run_dir: Path, page: Any) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "dashboard", "--store", f"sqlite:///{run_dir / 'store.db'}",
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "AGL_STORE_TOKEN": ""},
    )  # fmt: skip
    assert refused.returncode != 0 and "without a token" in refused.stderr

    guarded = _start(["--store", f"sqlite:///{run_dir / 'store.db'}", "--host", "0.0.0.0", "--token", "s3cret"])
    try:
        assert _get(guarded.url + "/v1/agl/dashboard/overview") == 401
        assert _get(guarded.url + "/v1/agl/rollouts") == 401
        assert _get(guarded.url + "/v1/agl/dashboard/overview", "wrong") == 401
        assert _get(guarded.url + "/v1/agl/dashboard/overview", "s3cret") == 200
        page.goto(guarded.url + "/")
        page.wait_for_selector("form.login")
        assert page.locator(".card").count() == 0
        page.fill("#token", "wrong")
        page.click("text=Open")
        page.wait_for_selector("text=The token was not accepted.")
        page.fill("#token", "s3cret")
        page.click("text=Open")
        page.wait_for_selector("text=Run overview")
        page.wait_for_selector(".card")
    finally:
        _stop(guarded)


def test_the_store_server_serves_the_dashboard_at_the_root(run_dir: Path, page: Any) -> None:
    from agentlightning.server import StoreServer
    from agentlightning.store.memory import InMemoryLightningStore

    with StoreServer(InMemoryLightningStore(), port=0) as server:
        page.goto(server.url + "/")
        page.wait_for_selector("text=Run overview")
        assert _get(server.url + "/v1/agl/health") == 200
        assert _get(server.url + "/dashboard/nothing.js") == 404


def test_agl_dashboard_reads_any_store_uri(run_dir: Path, page: Any) -> None:
    """Over http:// the dashboard reads a store server's store (here one serving a memory store)."""
    from agentlightning.server import StoreServer
    from agentlightning.store.memory import InMemoryLightningStore

    backing = InMemoryLightningStore()
    with StoreServer(backing, port=0) as server:
        through = _start(["--store", server.url, "--run-dir", str(run_dir)])
        try:
            writer = threading.Thread(target=asyncio.run, args=(backing.enqueue_rollout({"question": "over http"}),))
            writer.start()
            writer.join(30)
            _visit(page, through.url + "/#/rollouts")
            page.wait_for_selector("td.input >> text=over http")
            _visit(page, through.url + "/#/metrics")
            page.wait_for_selector(".metric[data-metric=reward] polyline")
        finally:
            _stop(through)
    bad = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "dashboard", "--store", "memory://", "--run-dir", "/nonexistent"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "is not a folder" in bad.stderr
