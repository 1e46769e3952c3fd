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
            "the hooks each implements and why any failed to load, then what they provide (algorithms, "
            "serving backends, commands, adapters, ...) with the distribution of each; algorithms of the "
            "'agentlightning.algorithms' entry point group are listed, not imported."
        ),
    )
    parser.add_argument("--json", action="store_true", help="Print machine-readable JSON instead of tables.")
    parser.set_defaults(handler=run)


def collect() -> dict[str, Any]:
    """Load plugins, run every registration hook once (so their failures show), and describe the result."""
    from agentlightning import plugins

    components = {kind: [info.to_dict() for info in plugins.list_components(kind)] for kind in plugins.REGISTRY_KINDS}
    algorithms: list[dict[str, Any]] = []
    for ep in plugins.algorithm_entry_points():
        distribution, version = plugins._dist_of(ep)
        algorithms.append({"name": ep.name, "target": ep.value, "distribution": distribution, "version": version})
    return {
        "plugins": [info.to_dict() for info in plugins.list_plugins()],
        "components": components,
        "algorithm_entry_points": algorithms,
    }


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

    for kind, title in TABLES:
        kind_table = Table(title=title, box=box.SIMPLE_HEAD)
        for column in ("Name", "Target", "Distribution", "Registered by"):
            kind_table.add_column(column, overflow="fold")
        for item in data["components"][kind]:
            kind_table.add_row(item["name"], item["target"], item["distribution"] or "-", item["source"])
        console.print(kind_table)
    return 0


TABLES = (
    ("algorithms", "Algorithms (entry point group 'agentlightning.algorithms' listed, not imported)"),
    ("serving_backends", "Serving backends"),
    ("execution_strategies", "Execution strategies (Trainer(strategy=...))"),
    ("commands", "Commands (agl ...)"),
    ("adapters", "Adapters"),
    ("store_backends", "Store backends (URI schemes)"),
    ("tracers", "Tracers"),
    ("span_exporters", "Span exporters"),
    ("instrumentors", "Instrumentors"),
    ("server_routes", "Store server routes"),
)
