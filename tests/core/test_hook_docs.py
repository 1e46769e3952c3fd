"""Every hook in hookspecs.py is documented in docs/plugin-hooks.md and has a test.

Conventions checked here:

* docs/plugin-hooks.md has a ``### `<hook name>``` section that shows the signature (every argument),
  says when the hook is called (``**When:**``) and what it must return or do (``**Contract:**``), and
  holds an example implementation (``@hookimpl`` + ``def <hook name>(``). No section documents a hook
  that does not exist.
* Some test module under tests/ defines ``test_hook_<hook name>`` whose body mentions the hook (by
  name, or for registration hooks by its registry kind).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from agentlightning import hookspecs

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "plugin-hooks.md"
TESTS = REPO / "tests"


def hook_names() -> list[str]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    names = [name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker)]
    assert names, "no hook specifications found in agentlightning.hookspecs"
    return sorted(names)


def doc_sections() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    parts = re.split(r"^### `(agl_\w+)`[ \t]*$", text, flags=re.MULTILINE)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        body = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.MULTILINE)[0]
        sections[name] = body
    return sections


def hook_tests() -> dict[str, tuple[Path, str]]:
    """``test_hook_<name>`` function -> (file, source of the function)."""
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        if "plugin_dists" in path.parts:
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_hook_"):
                found[node.name] = (path, ast.get_source_segment(source, node) or "")
    return found


@pytest.mark.parametrize("hook", hook_names())
def test_hook_is_documented(hook: str) -> None:
    sections = doc_sections()
    assert hook in sections, f"docs/plugin-hooks.md has no '### `{hook}`' section"
    body = sections[hook]
    for argument in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert re.search(rf"\b{argument}\b", body), f"the {hook} section does not show its argument {argument!r}"
    assert f"{hook}(" in body, f"the {hook} section does not show the hook's signature"
    assert "**When:**" in body, f"the {hook} section does not say when the hook is called"
    assert "**Contract:**" in body, f"the {hook} section does not state its return contract"
    assert "@hookimpl" in body and f"def {hook}(" in body, f"the {hook} section has no example implementation"


def test_docs_document_no_unknown_hook() -> None:
    stale = sorted(set(doc_sections()) - set(hook_names()))
    assert not stale, f"docs/plugin-hooks.md documents hooks that hookspecs.py does not define: {stale}"


def test_docs_cover_loading_and_listing() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "AGL_DISABLE_PLUGIN_AUTOLOAD",
        "[project.entry-points.agentlightning]",
        "agentlightning.algorithms",
        "agl plugins",
    ):
        assert needle in text, f"docs/plugin-hooks.md does not mention {needle}"


@pytest.mark.parametrize("hook", hook_names())
def test_hook_has_a_test(hook: str) -> None:
    tests = hook_tests()
    name = f"test_hook_{hook}"
    assert name in tests, f"no test function named {name} under tests/; every hook needs one"
    path, source = tests[name]
    body = source.split("\n", 1)[1] if "\n" in source else ""
    mentions = [hook]
    if hook.startswith("agl_register_"):
        kind = hook.removeprefix("agl_register_")
        mentions += [f'"{kind}"', f"'{kind}'"]
    assert any(m in body for m in mentions), f"{path.name}::{name} does not exercise {hook}"
