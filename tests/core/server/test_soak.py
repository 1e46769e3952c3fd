"""A short run of ``bench/soak.py``: 1,000 rollouts x 20 spans through ``agl store serve`` by 4 runner
processes while a runner is killed every 2 s and the server once; nothing acknowledged may be lost,
no rollout lost or duplicated, no retry applied twice (the script checks and exits 1 otherwise).

The full soak (10,000 rollouts, 8 runners, SQLite and PostgreSQL) is ``nox -s soak``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[3] / "bench" / "soak.py"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_short_soak_with_faults_loses_nothing(backend: str) -> None:
    if backend == "postgres" and not os.environ.get("AGL_TEST_POSTGRES_URI"):
        pytest.skip("AGL_TEST_POSTGRES_URI is not set")
    command = [sys.executable, str(SOAK), "--store", backend, "--rollouts", "1000", "--runners", "4"]
    command += ["--kill-runner-every", "2", "--kill-server-at", "0.3", "--rollout-timeout", "6", "--time-limit", "150"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=220, cwd=SOAK.parent)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "every check passed" in report and "server killed at" in report and "runners killed" in report, report
    assert " 0 runners killed" not in report, report
