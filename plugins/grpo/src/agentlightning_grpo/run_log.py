"""What a training run leaves in its folder: metrics history, checkpoints and a curve (GRPO and SFT alike).

``<run_dir>/metrics.jsonl`` holds one JSON object per event (``{"kind": "train", "step": 3, ...}`` or
``{"kind": "validation", "step": 3, "accuracy": ...}``; SFT counts in ``round``), appended and flushed
as they happen, so a killed run keeps its history and a resumed run continues it. Checkpoints are
folders ``<run_dir>/checkpoints/<unit>-NNNNNN`` that count as complete once they hold ``state.json``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["STATE_FILE", "MetricsLog", "checkpoint_dir", "latest_checkpoint", "plot_curves", "prune_checkpoints"]

STATE_FILE = "state.json"
"""Written last into a checkpoint folder: a folder without it is incomplete."""


class MetricsLog:
    """Append-only metrics history of one run; ``unit`` is the key that numbers its events."""

    def __init__(self, run_dir: Path, unit: str = "step") -> None:
        self.path = run_dir / "metrics.jsonl"
        self.unit = unit
        self.records: List[Dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    try:
                        self.records.append(json.loads(line))
                    except ValueError:
                        break  # a line cut by a kill mid-write ends the history

    def truncate_after(self, index: int) -> None:
        """Forget events after step/round ``index`` (a resumed run replays them from its checkpoint)."""
        kept = [r for r in self.records if int(r.get(self.unit, 0)) <= index]
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


def checkpoint_dir(root: Union[str, Path], index: int, unit: str = "step") -> Path:
    """Where the checkpoint after step/round ``index`` lives under ``root`` (``root/step-000012``)."""
    return Path(root) / f"{unit}-{index:06d}"


def latest_checkpoint(root: Union[str, Path], unit: str = "step") -> Optional[Path]:
    """The complete checkpoint with the highest index under ``root``, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = []
    for child in root.iterdir():
        suffix = child.name[len(unit) + 1 :]
        if child.name.startswith(f"{unit}-") and suffix.isdigit() and (child / STATE_FILE).is_file():
            found.append((int(suffix), child))
    return max(found)[1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoint folders (names sort by index; staging folders start with '.')."""
    finished = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in finished[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def plot_curves(
    log: MetricsLog,
    path: Path,
    *,
    title: str,
    train_kind: str = "train",
    train_series: str = "reward_mean",
    train_label: str = "train reward (mean)",
) -> Optional[Path]:
    """One training series per step/round and the held-out accuracy, as a PNG; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train = log.of_kind(train_kind)
    validation = log.of_kind("validation")
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(
            [r[log.unit] for r in train],
            [r[train_series] if r.get(train_series) is not None else math.nan for r in train],
            marker=".",
            label=train_label,
        )
    if validation:
        axis.plot(
            [r[log.unit] for r in validation],
            [r["accuracy"] for r in validation],
            marker="o",
            label="held-out accuracy (greedy)",
        )
    axis.set_xlabel(log.unit)
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
