"""``agl proxy`` as a real process: banner, a recorded call in a SQLite store, Ctrl-C, bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import openai

from agentlightning.semconv import LLMCallAttributes
from agentlightning.store import SqliteLightningStore
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply


def _agl_proxy(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AGL_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "agentlightning.cli", "proxy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _banner(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    lines: List[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return "".join(lines)
    process.kill()
    raise AssertionError(f"no banner; stdout={lines} stderr={process.stderr.read() if process.stderr else ''}")


async def test_records_a_call_into_a_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = SqliteLightningStore(db)
    rollout = await store.start_rollout(input="q")
    await store.close()
    with FakeOpenAIServer() as fake:
        fake.enqueue(FakeReply.text("hello", token_ids=[5, 6, 7]))
        process = _agl_proxy(
            "--backend", f"fake-model={fake.base_url}", "--token-ids", "--store", f"sqlite:///{db}", "--port", "0"
        )
        try:
            banner = _banner(process)
            url = re.search(r"listening:\s+(http://127\.0\.0\.1:\d+)", banner)
            assert url is not None, banner
            assert "models: fake-model" in banner
            client = openai.OpenAI(
                base_url=f"{url.group(1)}/rollout/{rollout.rollout_id}/attempt/{rollout.attempt.attempt_id}/v1",
                api_key="x",
            )
            answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "hello"
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopped after 1 call(s); spans not stored: 0" in stderr
    reopened = SqliteLightningStore(db)
    try:
        (span,) = await reopened.query_spans(rollout.rollout_id)
        assert span.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] == [5, 6, 7]
    finally:
        await reopened.close()


def test_bad_backend_is_a_one_line_error() -> None:
    process = _agl_proxy("--backend", "localhost:8000", "--store", "memory://")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "bad --backend 'localhost:8000'" in stderr and "http://" in stderr
    assert "Traceback" not in stderr
