"""The records an SFT run trained on: ``data/round-000002.jsonl`` holds round 2's (what ``agl export-dataset
--run`` reads); a round whose filter kept nothing writes no file. The rest of the run folder
(``metrics.jsonl``, ``curve.png``, checkpoints) is written by the loop SFT shares with GRPO
(:mod:`agentlightning_grpo.run_log`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["records_path", "write_records"]


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
