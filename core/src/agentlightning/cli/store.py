"""``agl store ...``: commands that work on a LightningStore chosen by URI.

Sub-commands are added in :func:`add_parser`; ``agl store serve`` belongs next to ``stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agentlightning.cli import CLIError

__all__ = ["add_parser", "read_only_uri", "read_statistics", "run_stats"]

URI_HELP = "Store URI, for example sqlite:///path/to/store.db or memory://."


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "store",
        help="Inspect (and later serve) a LightningStore.",
        description="Commands that open a LightningStore from its URI.",
    )

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)
    store_commands = parser.add_subparsers(title="store commands", metavar="STORE_COMMAND")

    stats = store_commands.add_parser(
        "stats",
        help="Print a store's statistics.",
        description="Open the store at URI, print its statistics and close it. Nothing is written.",
    )
    stats.add_argument("uri", metavar="URI", help=URI_HELP)
    stats.add_argument("--json", action="store_true", help="Print the statistics as JSON instead of a table.")
    stats.set_defaults(handler=run_stats)


def read_only_uri(uri: str) -> str:
    """``uri`` with read-only access asked for where the backend supports it (``sqlite:`` gets ``mode=ro``).

    Read-only access never creates a missing file and works while another process writes the store.
    """
    parts = urlsplit(uri)
    if parts.scheme != "sqlite" or "mode" in parse_qs(parts.query):
        return uri
    # Appended as text: urlunsplit() would collapse the empty host of sqlite:////abs/path.db.
    base, hash_mark, fragment = uri.partition("#")
    separator = "&" if parts.query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}mode=ro{hash_mark}{fragment}"


async def read_statistics(uri: str) -> dict[str, Any]:
    """Open the store at ``uri``, read its statistics and close it."""
    from agentlightning.errors import UnknownStoreURIError
    from agentlightning.store import open_store

    try:
        opened: Any = open_store(read_only_uri(uri))
        store = await opened if inspect.isawaitable(opened) else opened
    except UnknownStoreURIError as exc:
        raise CLIError(str(exc)) from exc
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise CLIError(f"cannot open store {uri!r}: {exc}") from exc
    except ValueError as exc:  # a malformed URI for a known scheme
        raise CLIError(f"cannot open store {uri!r}: {exc}") from exc
    try:
        return dict(await store.statistics())
    finally:
        await store.close()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={val}" for key, val in sorted(value.items())) or "-"
    return str(value)


def run_stats(args: argparse.Namespace) -> int:
    stats = asyncio.run(read_statistics(args.uri))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True, default=str))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Statistics of {args.uri}")
    table.add_column("Statistic", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for key, value in stats.items():
        table.add_row(key, _format(value))
    Console().print(table)
    return 0
