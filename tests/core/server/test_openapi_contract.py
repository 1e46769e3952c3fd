"""The server keeps the contract of its own OpenAPI document, checked as a user of the REST API would:
``st run <server>/openapi.json --checks all`` (schemathesis' command line, every phase: examples,
coverage, fuzzing and stateful sequences; positive and negative data) finds nothing.

Bounded: ``AGL_CONTRACT_EXAMPLES`` cases per operation (15; the CLI's default is 100) and a fixed
seed, so a run takes about a minute; a higher number runs a longer search.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("schemathesis")

from agentlightning.store.sqlite import SqliteLightningStore  # noqa: E402

EXAMPLES = int(os.environ.get("AGL_CONTRACT_EXAMPLES", "15"))
SEED = os.environ.get("AGL_CONTRACT_SEED", "19")


@pytest.mark.timeout(600)
def test_schemathesis_with_every_check_finds_nothing(serve: Any, tmp_path: Path) -> None:
    server = serve(SqliteLightningStore(tmp_path / "contract.db"), max_body_bytes=1 << 20)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st is not None, "schemathesis' command line (st) is not installed"
    command = [
        st,
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        "--request-timeout",
        "60",  # a busy shared machine: slowness is not what this test looks for
        "--workers",
        "1",
    ]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, env=env, cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found contract violations:\n{report[-20000:]}"
    assert "No issues found" in report or "passed" in report, report[-5000:]
