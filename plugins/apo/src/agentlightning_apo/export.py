"""``agl export --store URI --what KIND``: the prompts (APO publishes its best as the newest resources)
or resources a past run left in its store.

Each kind is an :class:`Exporter` in :data:`EXPORTERS` (reads the read-only store, returns a JSON
payload and terminal text); adding a kind is one entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional

from agentlightning.cli import CLIError

__all__ = ["EXPORTERS", "Export", "Exporter", "add_parser", "run_export"]


@dataclass
class Export:
    """What an exporter read: ``payload`` (written by ``--output`` / ``--json``) and ``text`` (printed)."""

    payload: Dict[str, Any]
    text: str


@dataclass
class Exporter:
    help: str
    read: Callable[[Any, argparse.Namespace], Awaitable[Export]]
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = field(default=None)


async def _resources_version(store: Any, args: argparse.Namespace) -> Any:
    if args.resources_id:
        update = await store.get_resources_by_id(args.resources_id)
        if update is None:
            raise CLIError(f"the store {args.store!r} has no resources with id {args.resources_id!r}")
        return update
    update = await store.get_latest_resources()
    if update is None:
        raise CLIError(f"the store {args.store!r} holds no resources")
    return update


async def _read_prompts(store: Any, args: argparse.Namespace) -> Export:
    update = await _resources_version(store, args)
    prompts = {
        name: resource.template
        for name, resource in update.resources.items()
        if getattr(resource, "resource_type", None) == "prompt_template"
    }
    if not prompts:
        raise CLIError(
            f"the resources {update.resources_id!r} (version {update.version}) hold no prompt templates; "
            f"they hold {sorted(update.resources)}"
        )
    header = f"# prompts of resources {update.resources_id!r} (version {update.version})"
    text = "\n".join([header, *(f"--- {name} ---\n{template}" for name, template in prompts.items())])
    payload = {"resources_id": update.resources_id, "version": update.version, "prompts": prompts}
    return Export(payload=payload, text=text)


async def _read_resources(store: Any, args: argparse.Namespace) -> Export:
    update = await _resources_version(store, args)
    payload = json.loads(update.model_dump_json())
    return Export(payload=payload, text=json.dumps(payload, indent=2))


def _resources_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resources-id", help="Read this resources version instead of the latest (prompts, resources)."
    )


EXPORTERS: Dict[str, Exporter] = {
    "prompts": Exporter("the prompt templates of the latest (or --resources-id) resources", _read_prompts),
    "resources": Exporter("every resource of the latest (or --resources-id) resources, as JSON", _read_resources),
}
"""The kinds ``--what`` accepts; plugins and later commands add entries here."""

_SHARED_ARGUMENTS = [_resources_arguments]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kinds = "; ".join(f"{name}: {exporter.help}" for name, exporter in EXPORTERS.items())
    parser = subparsers.add_parser(
        "export",
        help="Export prompts or resources of a past run from its store.",
        description=f"Read a store (read-only) and export what a run left there. Kinds: {kinds}.",
    )
    parser.add_argument("--store", required=True, help="Store URI, for example sqlite:///path/to/store.db.")
    parser.add_argument("--what", required=True, choices=sorted(EXPORTERS), help="What to export.")
    parser.add_argument("--output", "-o", help="Write the export to this file (JSON) instead of printing it.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    for add in _SHARED_ARGUMENTS:
        add(parser)
    for exporter in EXPORTERS.values():
        if exporter.add_arguments is not None:
            exporter.add_arguments(parser)
    parser.set_defaults(handler=run_export)


async def _export(args: argparse.Namespace) -> Export:
    from agentlightning.cli.store import open_read_only

    store = await open_read_only(args.store)
    try:
        return await EXPORTERS[args.what].read(store, args)
    finally:
        await store.close()


def run_export(args: argparse.Namespace) -> int:
    result = asyncio.run(_export(args))
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.payload, indent=2) + "\n")
        print(f"wrote {args.what} to {path}", file=sys.stderr)
    elif args.json:
        print(json.dumps(result.payload, indent=2))
    else:
        print(result.text)
    return 0
