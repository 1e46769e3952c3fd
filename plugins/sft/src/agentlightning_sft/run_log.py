"""What an SFT run leaves in its folder besides checkpoints: metrics history, kept records, and a curve.

- ``metrics.jsonl``: one JSON object per event (``{"kind": "round", "round": 2, ...}`` or
  ``{"kind": "validation", "round": 2, "accuracy": ...}``), appended and flushed as it happens, so a
  killed run keeps its history and a resumed run continues it;
- ``data/round-000002.jsonl``: the records round 2 trained on (what ``agl export-dataset --run`` reads);
  a round whose filter kept nothing writes no file;
- ``curve.png``: the share of training rollouts kept and the held-out accuracy per round.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping

__all__ = ["MetricsLog", "plot_curves", "records_path", "write_records"]


class MetricsLog:
    """Append-only metrics history of one run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.records: List[Dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    try:
                        self.records.append(json.loads(line))
                    except ValueError:
                        break  # a line cut by a kill mid-write ends the history

    def truncate_after(self, round_index: int) -> None:
        """Forget events of rounds after ``round_index`` (a resumed run replays them from its checkpoint)."""
        kept = [r for r in self.records if int(r.get("round", 0)) <= round_index]
        if len(kept) != len(self.records):
            self.records = kept
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: Dict[str, Any]) -> None:
        self.records.append(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
            handle.flush()

    def of_kind(self, kind: str) -> List[Dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]


def records_path(run_dir: Path, round_index: int) -> Path:
    return run_dir / "data" / f"round-{round_index:06d}.jsonl"


def write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """JSON lines, written beside ``path`` and renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with staging.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    staging.replace(path)
    return path


def plot_curves(log: MetricsLog, path: Path) -> Path:
    """Share of training rollouts kept per round and held-out accuracy, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = log.of_kind("round")
    validation = log.of_kind("validation")
    figure, axis = plt.subplots(figsize=(7, 4))
    if rounds:
        axis.plot(
            [r["round"] for r in rounds],
            [r["kept"] / r["rollouts"] if r.get("rollouts") else math.nan for r in rounds],
            marker=".",
            label="training rollouts kept (share)",
        )
    if validation:
        axis.plot(
            [r["round"] for r in validation], [r["accuracy"] for r in validation], marker="o", label="held-out accuracy"
        )
    axis.set_xlabel("round")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title("SFT run (rejection sampling)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
