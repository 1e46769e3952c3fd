"""What a run keeps in its folder: every candidate of every round, the best prompts, a table and a plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["plot_scores", "rounds_table", "write_run_files"]

logger = logging.getLogger(__name__)


def rounds_table(candidates: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table: one row per candidate (round, id, parent, edited templates, score, fate)."""
    lines = [
        "| round | candidate | parent | edited | val score | outcome |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in candidates:
        score = c.get("score")
        lines.append(
            f"| {c['round']} | {c['id']} | {c.get('parent') or '-'} | {', '.join(c.get('edited') or []) or '-'} "
            f"| {'-' if score is None else f'{score:.3f}'} | {c.get('outcome', '')} |"
        )
    return "\n".join(lines)


def plot_scores(rounds: Sequence[Mapping[str, Any]], path: Path) -> Optional[Path]:
    """Best and mean validation score of the beam per round (PNG); ``None`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no score plot")
        return None
    xs = [r["round"] for r in rounds]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(xs, [r["best_score"] for r in rounds], marker="o", label="best of beam")
    axes.plot(xs, [r["mean_score"] for r in rounds], marker=".", linestyle="--", label="mean of beam")
    axes.set_xlabel("round")
    axes.set_ylabel("validation score")
    axes.set_xticks(xs)
    axes.set_title("APO: validation score per round")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_run_files(
    folder: Path,
    *,
    best: Mapping[str, str],
    summary: Mapping[str, Any],
    candidates: List[Dict[str, Any]],
    rounds: List[Dict[str, Any]],
) -> Dict[str, Path]:
    """Write ``best_prompts.json``, ``candidates.jsonl``, ``rounds.md`` and ``scores.png``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "best_prompts": folder / "best_prompts.json",
        "candidates": folder / "candidates.jsonl",
        "table": folder / "rounds.md",
    }
    paths["best_prompts"].write_text(json.dumps({"prompts": dict(best), **summary}, indent=2) + "\n")
    paths["candidates"].write_text("".join(json.dumps(c) + "\n" for c in candidates))
    paths["table"].write_text(rounds_table(candidates) + "\n")
    plot = plot_scores(rounds, folder / "scores.png") if rounds else None
    if plot is not None:
        paths["plot"] = plot
    return paths
