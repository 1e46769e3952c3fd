"""The ``agl`` command line, run as a real process (console script and ``python -m agentlightning.cli``).

Needs the fixture distributions under tests/plugin_dists installed (nox does it):

    pip install tests/plugin_dists/agl-broken-plugin tests/plugin_dists/agl-sample-plugin
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures import TEST_DISTS, fresh_manager, test_dists  # noqa: F401 - fixtures

import agentlightning
from agentlightning import hookimpl, plugins
from agentlightning.cli import build_parser, main


def agl(*args: str, console_script: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if console_script:
        script = Path(sys.executable).parent / ("agl.exe" if os.name == "nt" else "agl")
        assert script.exists(), f"console script {script} is missing; is agentlightning installed in this venv?"
        command = [str(script), *args]
    else:
        command = [sys.executable, "-m", "agentlightning.cli", *args]
    env = {key: value for key, value in os.environ.items() if key != plugins.DISABLE_AUTOLOAD_ENV}
    env["COLUMNS"] = "200"  # rich wraps tables to the terminal width
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The ``agl: error:`` line of stderr; exactly one, and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("agl: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- general ------------------------------------------------------------------------------------


@pytest.mark.parametrize("console_script", [True, False], ids=["agl", "python-m"])
def test_version(console_script: bool) -> None:
    result = agl("--version", console_script=console_script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"agentlightning {agentlightning.__version__} (Python ")


def test_no_command_prints_help() -> None:
    result = agl()
    assert result.returncode == 2
    assert "usage: agl" in result.stderr and "plugins" in result.stderr and "store" in result.stderr


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: agl" in capsys.readouterr().out
    assert main(["--no-such-option"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    assert main(["store", "stats"]) == 2  # URI missing
    assert "URI" in capsys.readouterr().err


def walk_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk_parsers(sub)


def test_every_option_and_command_has_help() -> None:
    parsers = list(walk_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {"agl", "agl plugins", "agl store", "agl store stats"}
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"command {parser.prog} {choice.dest} has no help text"
                continue
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{parser.prog}: option {action.option_strings or action.dest} has no help text"
            )


# -- agl plugins --------------------------------------------------------------------------------


@pytest.mark.usefixtures("test_dists")
def test_plugins_table_shows_broken_plugin() -> None:
    result = agl("plugins", console_script=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "agentlightning.builtin_plugins" in out and "(built-in)" in out
    assert "agl-broken-plugin" in out
    assert "RuntimeError: agl-broken-plugin fails on import on purpose" in out
    assert "agl-sample-plugin" in out and "agl_on_rollout_end" in out
    assert "sample-broken-algo" in out  # listed from the algorithms group without being imported


@pytest.mark.usefixtures("test_dists")
def test_plugins_json() -> None:
    result = agl("plugins", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    found = {p["name"]: p for p in data["plugins"]}
    assert found["broken"] == {
        "name": "broken",
        "distribution": "agl-broken-plugin",
        "version": "0.1.0",
        "hooks": [],
        "error": "RuntimeError: agl-broken-plugin fails on import on purpose",
        "builtin": False,
    }
    assert found["sample"]["error"] is None
    assert len(found["sample"]["hooks"]) == 10
    assert found["agentlightning.builtin_plugins"]["builtin"] is True
    algorithms = {a["name"]: a for a in data["algorithm_entry_points"]}
    assert algorithms["sample-broken-algo"] == {
        "name": "sample-broken-algo",
        "target": "agl_sample_plugin.broken_algorithm:BrokenAlgorithm",
        "distribution": "agl-sample-plugin",
        "version": "0.2.0",
    }
    assert algorithms["baseline"]["distribution"] == "agentlightning"


def test_plugins_reports_registration_hook_failures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")

    class Faulty:
        @hookimpl
        def agl_register_instrumentors(self, register: Callable[[str, Any], None]) -> None:
            raise RuntimeError("cannot build instrumentor")

    plugins.get_plugin_manager().register(Faulty(), name="faulty")
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    found = {p["name"]: p for p in data["plugins"]}
    assert found["faulty"]["error"] == "agl_register_instrumentors raised RuntimeError: cannot build instrumentor"
    assert set(found) == {"agentlightning.builtin_plugins", "faulty"}


# -- agl store stats ----------------------------------------------------------------------------


async def make_sqlite_store(path: Path) -> None:
    from agentlightning.store import open_store

    store = open_store(f"sqlite:///{path}")
    try:
        await store.enqueue_rollout(input={"task": 1})
        await store.enqueue_rollout(input={"task": 2})
        await store.dequeue_rollout()
    finally:
        await store.close()


async def test_store_stats_on_a_real_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "run" / "store.db"
    await make_sqlite_store(db)
    before = db.read_bytes()

    result = agl("store", "stats", f"sqlite:///{db}", console_script=True)
    assert result.returncode == 0, result.stderr
    assert "total_rollouts" in result.stdout and "sqlite" in result.stdout
    assert "preparing=1" in result.stdout and "queuing=1" in result.stdout

    result = agl("store", "stats", "--json", f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["name"] == "sqlite"
    assert stats["total_rollouts"] == 2
    assert stats["total_attempts"] == 1
    assert stats["rollouts_by_status"] == {"preparing": 1, "queuing": 1}
    assert db.read_bytes() == before  # opened read-only


def test_store_stats_relative_sqlite_path(tmp_path: Path) -> None:
    import asyncio

    asyncio.run(make_sqlite_store(tmp_path / "rel.db"))
    result = agl("store", "stats", "--json", "sqlite:///rel.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_rollouts"] == 2


def test_store_stats_memory() -> None:
    result = agl("store", "stats", "--json", "memory://")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_rollouts"] == 0


def test_store_stats_unknown_scheme() -> None:
    result = agl("store", "stats", "nosuchscheme://somewhere")
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith("agl: error: no store backend for 'nosuchscheme://somewhere'; registered schemes: ")
    assert "sqlite" in line and "memory" in line
    assert result.stdout == ""


def test_store_stats_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = agl("store", "stats", f"sqlite:///{missing}")
    assert result.returncode == 2
    line = error_line(result)
    assert "does not exist" in line and str(missing) in line
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_store_stats_malformed_uri() -> None:
    result = agl("store", "stats", "sqlite://somehost/x.db")
    assert result.returncode == 2
    assert "sqlite URIs name a local file" in error_line(result)


def test_store_without_subcommand_prints_help() -> None:
    result = agl("store")
    assert result.returncode == 2
    assert "stats" in result.stdout


def test_unexpected_error_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentlightning.cli import store as store_cli

    async def explode(uri: str) -> dict[str, Any]:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(store_cli, "read_statistics", explode)
    assert main(["store", "stats", "memory://"]) == 1
    err = capsys.readouterr().err
    assert err == "agl: error: RuntimeError: disk on fire second line (run with --debug for the traceback)\n"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", "store", "stats", "memory://"])
