"""examples/agentscope_dev.py runs end to end: Trainer.dev over two AgentScope agents, every rollout succeeding."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "agentscope_dev.py"


# A fresh interpreter importing AgentScope: on a loaded machine it outlasts the default 120 s.
@pytest.mark.timeout(300)
def test_agentscope_dev_example_runs() -> None:
    env = {**os.environ, "COLUMNS": "200"}  # one table row per line
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if "succeeded" in line]
    assert len(rows) == 3, result.stdout
    # Every rollout: reward 1.0, two Solver calls (the tool call, the answer) and one Reviewer call (agent_match).
    for row in rows:
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells[2:] == ["succeeded", "1.0", cells[4], "2", "1"], cells
    assert "invoke_agent Solver" in result.stdout and "execute_tool calculator" in result.stdout
    assert "result=51" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr
