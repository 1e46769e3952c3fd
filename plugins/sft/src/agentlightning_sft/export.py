"""Fine-tuning datasets out of Agent Lightning, to train elsewhere (``agl export-dataset``).

Sources:

- a run folder of :class:`~agentlightning_sft.SFT` (``run_dir``): the records its rounds kept and
  trained on (``data/round-*.jsonl``), optionally only some rounds;
- any store (``store``, a URI): the succeeded rollouts of one mode whose final reward is at least
  ``min_reward``, each LLM call turned into a chat record (:func:`~agentlightning_sft.records.build_chat_records`).

Formats:

- ``jsonl``: OpenAI chat fine-tuning JSON lines, ``{"messages": [...], "tools": [...]}`` per line
  (``tools`` only when the call offered tools; tool call ``arguments`` are JSON text), every record
  checked by :func:`~agentlightning_sft.records.check_chat_record`;
- ``hf``: a Hugging Face ``datasets`` folder (``Dataset.save_to_disk``; read it with
  ``datasets.load_from_disk``). Chat records have the columns ``messages`` (the same messages; keys a
  message lacks load as None) and ``tools`` (JSON text or None: tool schemas differ between records,
  and a column has one type; TRL's ``SFTTrainer`` decodes it). Token records (a run with
  ``record_format="tokens"``) have ``input_ids`` and ``completion_mask`` (1 on the model's tokens),
  which ``SFTTrainer`` trains on as they are with ``completion_only_loss=True``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from agentlightning.emitter.reward import find_final_reward

from .records import InvalidRecordError, build_chat_records, check_chat_record

__all__ = ["ExportFormat", "ExportSummary", "export_dataset", "load_records"]

ExportFormat = Literal["jsonl", "hf"]


class ExportError(ValueError):
    """The export cannot be done as asked (no records, a missing run, a format the records do not fit)."""


@dataclass
class ExportSummary:
    path: Path
    records: int
    kind: str  # "chat" or "tokens"
    excluded: Dict[str, int] = field(default_factory=dict)


def _run_records(run_dir: Path, rounds: Optional[Sequence[int]]) -> List[Dict[str, Any]]:
    data = run_dir / "data"
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a run folder")
    files = sorted(data.glob("round-*.jsonl")) if data.is_dir() else []
    if rounds is not None:
        wanted = set(rounds)
        files = [f for f in files if int(f.stem[len("round-") :]) in wanted]
    records: List[Dict[str, Any]] = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise ExportError(f"{path}:{number} is not a JSON record: {exc}") from exc
    return records


async def _store_records(uri: str, mode: Optional[str], min_reward: float) -> tuple[List[Dict[str, Any]], Counter[str]]:
    from agentlightning.store import open_store

    opened: Any = open_store(_read_only(uri))
    store = await opened if inspect.isawaitable(opened) else opened
    records: List[Dict[str, Any]] = []
    excluded: Counter[str] = Counter()
    try:
        for rollout in await store.query_rollouts(status_in=["succeeded"]):
            if mode is not None and rollout.mode != mode:
                continue
            spans = list(await store.query_spans(rollout.rollout_id, "latest"))
            reward = find_final_reward(spans)
            if reward is None or reward < min_reward:
                continue
            built = build_chat_records(spans, metadata={"rollout_id": rollout.rollout_id, "reward": reward})
            records.extend(built.records)
            excluded.update(built.excluded)
    finally:
        await store.close()
    return records, excluded


def _read_only(uri: str) -> str:
    """A SQLite store is opened read-only: an export never creates or changes one."""
    if uri.startswith("sqlite:") and "mode=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}mode=ro"
    return uri


def load_records(
    *,
    run_dir: Union[str, Path, None] = None,
    store: Optional[str] = None,
    rounds: Optional[Sequence[int]] = None,
    mode: Optional[str] = "train",
    min_reward: float = 1.0,
) -> tuple[List[Dict[str, Any]], Counter[str]]:
    """The records of a run folder or a store (exactly one of them), and those left out by reason."""
    if (run_dir is None) == (store is None):
        raise ExportError("give exactly one source: a run folder or a store URI")
    if run_dir is not None:
        return _run_records(Path(run_dir), rounds), Counter()
    assert store is not None
    return asyncio.run(_store_records(store, mode, min_reward))


def export_dataset(
    out: Union[str, Path],
    *,
    format: ExportFormat = "jsonl",
    run_dir: Union[str, Path, None] = None,
    store: Optional[str] = None,
    rounds: Optional[Sequence[int]] = None,
    mode: Optional[str] = "train",
    min_reward: float = 1.0,
) -> ExportSummary:
    """Write the records of a run (or a store) to ``out`` as ``format``; see the module docstring.

    Raises :class:`ExportError` when there is nothing to export (no empty dataset is written), when
    ``out`` already exists, or when token records are asked for as chat JSONL.
    """
    if format not in ("jsonl", "hf"):
        raise ExportError(f"unknown format {format!r}; use 'jsonl' or 'hf'")
    target = Path(out)
    if target.exists():
        raise ExportError(f"{target} already exists; pick another output path")
    records, excluded = load_records(run_dir=run_dir, store=store, rounds=rounds, mode=mode, min_reward=min_reward)
    if not records:
        source = f"run {run_dir}" if run_dir is not None else f"store {store} (mode {mode}, reward >= {min_reward:g})"
        raise ExportError(f"no records to export from {source}; nothing written")
    kind = "tokens" if "input_ids" in records[0] else "chat"
    if kind == "tokens":
        if format == "jsonl":
            raise ExportError("this run trained on token records, which are not chat records; use --format hf")
        rows: List[Dict[str, Any]] = [
            {"input_ids": list(r["input_ids"]), "completion_mask": list(r["completion_mask"])} for r in records
        ]
    else:
        rows = []
        for index, record in enumerate(records):
            try:
                rows.append(check_chat_record(record))
            except InvalidRecordError as exc:
                raise ExportError(f"record {index} breaks the record format: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    if format == "jsonl":
        staging = target.with_name(f".{target.name}.tmp")
        with staging.open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        staging.replace(target)
    else:
        import datasets

        if kind == "chat":
            rows = [
                {"messages": r["messages"], "tools": json.dumps(r["tools"]) if r.get("tools") else None} for r in rows
            ]
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # the command prints its own one-line summary
        try:
            datasets.Dataset.from_list(rows).save_to_disk(str(target))
        finally:
            if bars:
                datasets.enable_progress_bars()
    return ExportSummary(target, len(rows), kind, dict(excluded))
