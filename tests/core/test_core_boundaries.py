"""The core stays small and standalone: no import cycles, no plugin imports, no heavy or test dependencies.

Read from the sources (``ast``), so a violation fails here even when the offending import sits in a
branch the other tests never run, and again at runtime by importing every core module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import tomllib

import agentlightning

PACKAGE_DIR = Path(agentlightning.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]
CORE_PYPROJECT = REPO / "core" / "pyproject.toml"

# Distributions of this repository's plugins are imported as agentlightning_<name>; none may be imported by core.
PLUGIN_PREFIX = "agentlightning_"
HEAVY_OR_TEST = {"torch", "transformers", "peft", "vllm", "verl", "pytest", "_pytest"}
SERVER_ONLY = {"fastapi", "starlette", "uvicorn"}
SERVER_PACKAGE = "agentlightning.server"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> Dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, *, module_level_only: bool) -> Iterator[Tuple[str, int]]:
    """``(imported module, line)`` for each import; ``from pkg import name`` yields ``pkg.name`` when that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    known = core_modules()

    def visit(nodes: List[ast.stmt]) -> Iterator[Tuple[str, int]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                for alias in node.names:
                    child = f"{target}.{alias.name}"
                    yield (child if child in known else target), node.lineno
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):  # annotations only: never executed
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                yield from visit(node.body)
                for handler in getattr(node, "handlers", []):
                    yield from visit(handler.body)
                yield from visit(getattr(node, "orelse", []))
                yield from visit(getattr(node, "finalbody", []))
            elif not module_level_only:
                yield from visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    yield from visit(tree.body)


def module_graph() -> Dict[str, Set[str]]:
    modules = core_modules()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in imports(name, path, module_level_only=True):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_walker_sees_module_level_imports_only(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "try:\n    import yaml\nexcept ImportError:\n    import toml\n"
        "def later():\n    import pytest\n"
    )
    path = tmp_path / "sample.py"
    path.write_text(source)
    found = {name for name, _ in imports("sample", path, module_level_only=True)}
    assert found == {"typing", "json", "yaml", "toml"}
    everywhere = {name for name, _ in imports("sample", path, module_level_only=False)}
    assert everywhere == found | {"pytest"}


def test_core_has_no_module_level_import_cycle() -> None:
    graph = module_graph()
    assert len(graph) > 50 and any(graph.values())  # the walk did find the package and its imports
    assert find_cycles(graph) == []


def test_core_imports_no_plugin_and_nothing_heavy() -> None:
    problems = []
    for name, path in core_modules().items():
        for target, line in imports(name, path, module_level_only=False):
            top = target.split(".")[0]
            where = f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {target}"
            if top.startswith(PLUGIN_PREFIX) or top in HEAVY_OR_TEST:
                problems.append(where)
            elif top in SERVER_ONLY and not (name == SERVER_PACKAGE or name.startswith(SERVER_PACKAGE + ".")):
                problems.append(f"{where} (only {SERVER_PACKAGE} may: the `server` extra)")
    assert problems == []


def test_core_names_no_plugin_module_in_lazy_references() -> None:
    """LazyObject("...") and import_module("...") targets stay inside agentlightning (or third parties)."""
    problems = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            value = node.args[0].value
            if callee in ("LazyObject", "import_module") and isinstance(value, str) and value.startswith(PLUGIN_PREFIX):
                problems.append(f"{path.name}:{node.lineno} {callee}({value!r})")
    assert problems == []


def test_core_distribution_depends_on_no_heavy_package() -> None:
    project = tomllib.loads(CORE_PYPROJECT.read_text(encoding="utf-8"))["project"]
    names = [
        requirement.split(">")[0].split("=")[0].split("[")[0].strip().lower() for requirement in project["dependencies"]
    ]
    assert not set(names) & (HEAVY_OR_TEST | SERVER_ONLY)
    extras = project.get("optional-dependencies", {})
    assert set(extras) == {"server"}
    assert any(requirement.startswith("fastapi") for requirement in extras["server"])


def test_importing_every_core_module_loads_no_plugin() -> None:
    names = list(core_modules())
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY_OR_TEST)!r}))\n"
        f"plugins = sorted({{m.split('.')[0] for m in sys.modules if m.startswith({PLUGIN_PREFIX!r})}})\n"
        "print(bad, plugins)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"
