"""``agl plugins``: what is installed, what it implements, and what failed to load."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "collect", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="List installed plugins, the hooks they implement and any load errors.",
        description=(
            "List the plugins loaded from the 'agentlightning' entry point group (and the built-in one), "
            "the hooks each implements and why any failed to load, then the algorithms published under "
            "the 'agentlightning.algorithms' entry point group (listed, not imported)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="Print machine-readable JSON instead of tables.")
    parser.set_defaults(handler=run)


def collect() -> dict[str, Any]:
    """Load plugins, run every registration hook once (so their failures show), and describe the result."""
    from agentlightning import plugins

    for kind in ("store_backends", "tracers", "span_exporters", "algorithms", "adapters", "instrumentors"):
        plugins.registered(kind)
    algorithms: list[dict[str, Any]] = []
    for ep in plugins.algorithm_entry_points():
        dist = getattr(ep, "dist", None)
        algorithms.append(
            {
                "name": ep.name,
                "target": ep.value,
                "distribution": dist.metadata["Name"] if dist is not None else None,
                "version": dist.version if dist is not None else None,
            }
        )
    return {"plugins": [info.to_dict() for info in plugins.list_plugins()], "algorithm_entry_points": algorithms}


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    table = Table(title="Plugins (entry point group 'agentlightning')", box=box.SIMPLE_HEAD)
    table.add_column("Name", overflow="fold")
    table.add_column("Distribution", overflow="fold")
    table.add_column("Version", overflow="fold")
    table.add_column("Hooks", overflow="fold")
    table.add_column("Load error", overflow="fold", ratio=1)
    for info in data["plugins"]:
        name = info["name"] + ("\n(built-in)" if info["builtin"] else "")
        error = Text(info["error"], style="red") if info["error"] else Text("-", style="green")
        table.add_row(name, info["distribution"] or "-", info["version"] or "-", "\n".join(info["hooks"]) or "-", error)
    console.print(table)

    algo_table = Table(
        title="Algorithms (entry point group 'agentlightning.algorithms', not imported)", box=box.SIMPLE_HEAD
    )
    algo_table.add_column("Name", overflow="fold")
    algo_table.add_column("Target", overflow="fold")
    algo_table.add_column("Distribution", overflow="fold")
    algo_table.add_column("Version", overflow="fold")
    for algo in data["algorithm_entry_points"]:
        algo_table.add_row(algo["name"], algo["target"], algo["distribution"] or "-", algo["version"] or "-")
    console.print(algo_table)
    return 0
