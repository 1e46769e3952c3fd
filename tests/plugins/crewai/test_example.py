"""examples/crewai_dev.py runs end to end: Trainer.dev over a two-agent crew, every rollout succeeding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "crewai_dev.py"


def test_crewai_dev_example_runs() -> None:
    env = {**os.environ, "COLUMNS": "200"}  # one table row per line
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if "succeeded" in line]
    assert len(rows) == 3, result.stdout
    # Every rollout: reward 1.0, two Researcher calls and one Writer call (agent_match by role).
    for row in rows:
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells[2:] == ["succeeded", "1.0", cells[4], "2", "1"], cells
    assert "invoke_agent Researcher" in result.stdout and "execute_tool calculator" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr
