"""``agl export-dataset``: a run's kept records (or a store's rewarded calls) as a fine-tuning dataset."""

from __future__ import annotations

import argparse
from typing import List, Optional

from agentlightning.cli import CLIError

__all__ = ["add_parser", "run_export"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export-dataset",
        help="Write an SFT run's records (or a store's rewarded LLM calls) as chat JSONL or a datasets folder.",
        description=(
            "Exports fine-tuning records to train elsewhere. --run DIR takes the records an SFT run kept and "
            "trained on (DIR/data/round-*.jsonl); --store URI builds chat records from the store's succeeded "
            "rollouts whose final reward is at least --min-reward. --format jsonl writes OpenAI chat fine-tuning "
            "JSON lines ({'messages': [...], 'tools': [...]}); --format hf writes a Hugging Face datasets folder "
            "(datasets.load_from_disk). Nothing is written when there is nothing to export."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", metavar="DIR", help="An SFT run folder.")
    source.add_argument("--store", metavar="URI", help="A store URI (sqlite:///path/store.db, http://host:port).")
    parser.add_argument("--format", choices=["jsonl", "hf"], default="jsonl", help="Output format (default: jsonl).")
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="Output file (jsonl) or folder (hf); must not exist."
    )
    parser.add_argument("--rounds", metavar="N[,N...]", default=None, help="With --run: only these rounds.")
    parser.add_argument(
        "--min-reward", type=float, default=1.0, help="With --store: keep rollouts rewarded at least this (default: 1)."
    )
    parser.add_argument("--mode", default="train", help="With --store: rollouts of this mode (default: train; 'any').")
    parser.set_defaults(handler=run_export)


def _rounds(text: Optional[str]) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CLIError(f"--rounds takes round numbers separated by commas, got {text!r}") from exc


def run_export(args: argparse.Namespace) -> int:
    from agentlightning.errors import UnknownStoreURIError

    from .export import ExportError, export_dataset

    try:
        summary = export_dataset(
            args.out,
            format=args.format,
            run_dir=args.run,
            store=args.store,
            rounds=_rounds(args.rounds),
            mode=None if args.mode == "any" else args.mode,
            min_reward=args.min_reward,
        )
    except (ExportError, UnknownStoreURIError, FileNotFoundError, PermissionError) as exc:
        raise CLIError(str(exc)) from exc
    except ImportError as exc:
        raise CLIError(f"--format hf needs the datasets package ({exc})") from exc
    print(f"wrote {summary.records} {summary.kind} records to {summary.path} ({args.format})")
    if summary.excluded:
        left_out = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.excluded.items()))
        print(f"left out (could not be built): {left_out}")
    return 0
