"""``agl export``: prompts and resources of a past run, read from its store (read-only)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import agentlightning as agl
from agentlightning.cli import main
from agentlightning.store import open_store


def _store_with_two_versions(path: Path) -> str:
    uri = f"sqlite:///{path}"

    async def fill() -> None:
        store = open_store(uri)
        await store.update_resources("first", {"system": agl.PromptTemplate(template="Old {x}")})
        await store.add_resources(
            {
                "system": agl.PromptTemplate(template="New {x}"),
                "user": agl.PromptTemplate(template="Ask {y}"),
                "llm": agl.LLM(endpoint="http://127.0.0.1:1/v1", model="m"),
            }
        )
        await store.update_resources("llm-only", {"llm": agl.LLM(endpoint="http://127.0.0.1:1/v1", model="m")})
        await store.close()

    asyncio.run(fill())
    return uri


def test_export_prompts_of_a_version_and_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = _store_with_two_versions(tmp_path / "store.db")
    assert main(["export", "--store", uri, "--what", "prompts", "--resources-id", "first"]) == 0
    assert "--- system ---\nOld {x}" in capsys.readouterr().out
    out = tmp_path / "out" / "prompts.json"
    assert main(["export", "--store", uri, "--what", "prompts", "--resources-id", "first", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["prompts"] == {"system": "Old {x}"}
    assert main(["export", "--store", uri, "--what", "resources", "--resources-id", "first", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["resources"]["system"]["template"] == "Old {x}" and payload["resources_id"] == "first"


def test_export_errors_name_what_is_missing(tmp_path: Path) -> None:
    uri = _store_with_two_versions(tmp_path / "store.db")
    cases = [
        (["--what", "prompts"], "hold no prompt templates"),  # the latest version holds only an LLM
        (["--what", "prompts", "--resources-id", "nope"], "no resources with id 'nope'"),
        (["--what", "nothing"], "invalid choice"),
    ]
    for extra, message in cases:
        result = subprocess.run(
            [sys.executable, "-m", "agentlightning.cli", "export", "--store", uri, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    empty = f"sqlite:///{tmp_path / 'missing.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "export", "--store", empty, "--what", "prompts"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot open store" in result.stderr, result.stderr
