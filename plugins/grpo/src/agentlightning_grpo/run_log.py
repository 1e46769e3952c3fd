"""What a GRPO run leaves in its folder: metrics history, a reward/accuracy curve, and a live display.

``<run_dir>/metrics.jsonl`` holds one JSON object per event (``{"kind": "train", "step": 3, ...}`` or
``{"kind": "validation", "step": 3, "accuracy": ...}``), appended and flushed as they happen, so a
killed run keeps its history and a resumed run continues it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["MetricsLog", "plot_curves"]


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

    def truncate_after(self, step: int) -> None:
        """Forget events of steps after ``step`` (a resumed run replays them from its checkpoint)."""
        kept = [r for r in self.records if int(r.get("step", 0)) <= step]
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

    def last_validation(self) -> Optional[Dict[str, Any]]:
        validations = self.of_kind("validation")
        return validations[-1] if validations else None


def plot_curves(log: MetricsLog, path: Path) -> Optional[Path]:
    """Mean training reward per step and held-out accuracy as a PNG; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = log.of_kind("train")
    validation = log.of_kind("validation")
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(
            [r["step"] for r in train],
            [r["reward_mean"] if r.get("reward_mean") is not None else math.nan for r in train],
            marker=".",
            label="train reward (mean)",
        )
    if validation:
        axis.plot(
            [r["step"] for r in validation],
            [r["accuracy"] for r in validation],
            marker="o",
            label="held-out accuracy (greedy)",
        )
    axis.set_xlabel("step")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title("GRPO run")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
