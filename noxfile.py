"""Sessions for every package of the repository, each in its own virtual environment.

``nox`` with no arguments runs the whole test suite (the default sessions: ``core``, every plugin
marked ``default=True``, ``lint`` and ``typecheck``); ``.ci/run`` runs exactly that. Other sessions:
``nox -s bench`` (store benchmark against the peer ``agentlightning==0.3.0``), ``nox -s bench_http``
(the same over HTTP, plus span ingest through the server), ``nox -s demo``
(the quickstart on the embedded default), ``nox -s plugins/<name>`` (one plugin's tests).

Packages are installed from their folders as regular (non-editable) wheels, so a session also
proves that the distribution builds and ships everything it needs.

To add a plugin package: append a ``Plugin`` to ``PLUGINS`` below; it gets a ``plugins/<name>``
session that installs ``core`` and ``plugins/<name>`` (with its ``test`` extra if it says so)
and runs ``pytest tests/plugins/<name>``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

# uv creates environments and installs in seconds; plain virtualenv + pip when uv is missing.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
# Nothing but the package registries can be reached: never let uv try to download a Python build.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

PYTHON = "3.11"

TEST_DEPS = ["pytest>=8.3", "pytest-asyncio>=0.24", "pytest-timeout>=2.3", "httpx>=0.27"]
# The core's tests also run the store server (the `server` extra) and talk to it like the outside
# world does: the OpenTelemetry SDK's OTLP/HTTP exporter, and schemathesis against its OpenAPI document.
CORE_TEST_DEPS = ["opentelemetry-exporter-otlp-proto-http>=1.30", "schemathesis>=4,<5", "openai>=1.60"]
# Small plugin distributions that the core's plugin-loading tests install and load for real.
TEST_PLUGIN_DISTS = ["tests/plugin_dists/agl-sample-plugin", "tests/plugin_dists/agl-broken-plugin"]
LINT_DEPS = ["ruff==0.17.6"]
TYPECHECK_DEPS = ["mypy==2.4.1"]
# Everything that ruff checks; folders that do not exist (yet) are left out.
LINT_PATHS = ["core/src", "plugins", "tests", "bench", "examples", "noxfile.py"]

# The peer measured by the benchmark, in its own virtual environment, reused across runs.
PEER_VENV = ROOT / ".nox" / "_peer-agentlightning-0.3.0"
PEER_REQUIREMENTS = ["agentlightning==0.3.0", "agentops==0.4.18", "openai<2", "litellm<1.80"]


@dataclass(frozen=True)
class Plugin:
    """A plugin distribution under ``plugins/<name>`` with tests under ``tests/plugins/<name>``."""

    name: str
    # Extra requirements for its tests (pins of the framework it adapts, test servers, ...).
    test_deps: list[str] = field(default_factory=list)
    # Install it with its `test` extra (`plugins/<name>[test]`).
    test_extra: bool = False
    # Other plugin folders (names) it needs installed beside it.
    needs: list[str] = field(default_factory=list)
    # Part of `nox` with no arguments (the README's test command).
    default: bool = True
    python: str = PYTHON

    @property
    def session_name(self) -> str:
        return f"plugins/{self.name}"


PLUGINS: list[Plugin] = [
    # Plugin("langchain", test_deps=["langchain-core>=0.3"]),
]


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if (ROOT / p).exists()]


def _install_core(session: nox.Session, *extra: str) -> None:
    session.install("./core", *extra)


def _test_plugin_dists(session: nox.Session) -> list[str]:
    present = _existing(TEST_PLUGIN_DISTS)
    for missing in sorted(set(TEST_PLUGIN_DISTS) - set(present)):
        session.warn(f"test plugin distribution {missing} is missing; tests that load it will fail")
    return [f"./{p}" for p in present]


def _show_installed(session: nox.Session, module: str) -> None:
    """Print where ``module`` was imported from: a wheel in the session's venv, not the source tree."""
    session.run("python", "-c", f"import {module}; print('{module} imported from', {module}.__file__)", silent=False)


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("pytest", *paths, *session.posargs, env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """The core distribution `agentlightning`: install it as a wheel and run tests/core."""
    session.install("./core[server]", *TEST_DEPS, *CORE_TEST_DEPS, *_test_plugin_dists(session))
    _show_installed(session, "agentlightning")
    _pytest(session, "tests/core")


def _make_plugin_session(plugin: Plugin) -> None:
    def run_plugin(session: nox.Session) -> None:
        folder = ROOT / "plugins" / plugin.name
        tests = ROOT / "tests" / "plugins" / plugin.name
        if not folder.is_dir():
            session.error(f"plugins/{plugin.name} does not exist")
        if not tests.is_dir():
            session.error(f"tests/plugins/{plugin.name} does not exist: every plugin ships tests")
        packages = [f"./plugins/{name}" for name in plugin.needs]
        packages.append(f"./plugins/{plugin.name}[test]" if plugin.test_extra else f"./plugins/{plugin.name}")
        _install_core(session, *packages, *TEST_DEPS, *plugin.test_deps)
        _show_installed(session, f"agentlightning_{plugin.name}")
        _pytest(session, f"tests/plugins/{plugin.name}")

    run_plugin.__doc__ = f"The plugin distribution in plugins/{plugin.name}: install it and run its tests."
    nox.session(python=plugin.python, name=plugin.session_name)(run_plugin)


for _plugin in PLUGINS:
    _make_plugin_session(_plugin)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over all Python sources."""
    session.install(*LINT_DEPS)
    paths = _existing(LINT_PATHS)
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over the core's sources (and plugins' sources when there are plugins)."""
    session.install("./core[server]", *TYPECHECK_DEPS)
    session.run("mypy", "core/src/agentlightning")
    plugin_sources = _existing([f"plugins/{p.name}/src" for p in PLUGINS])
    for src in plugin_sources:
        session.run("mypy", src)


def _ensure_peer_venv(session: nox.Session) -> Path:
    """Create (once) the peer's own virtual environment and return its interpreter."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".agl-bench-requirements"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    session.log(f"creating the peer's environment in {PEER_VENV}")
    if PEER_VENV.exists():
        shutil.rmtree(PEER_VENV)
    uv = shutil.which("uv")
    if uv is not None:
        session.run(uv, "venv", "--quiet", "--python", PYTHON, str(PEER_VENV), external=True)
        session.run(uv, "pip", "install", "--quiet", "--python", str(python), *PEER_REQUIREMENTS, external=True)
    else:
        base = shutil.which(f"python{PYTHON}") or sys.executable
        session.run(base, "-m", "venv", str(PEER_VENV), external=True)
        session.run(str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS, external=True)
    marker.write_text(wanted)
    return python


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Store benchmark: the peer agentlightning==0.3.0 and this project, side by side in one run."""
    _install_core(session)
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    session.run("python", "bench/store_bench.py", "--peer-python", str(peer_python), *args)


@nox.session(python=PYTHON)
def bench_http(session: nox.Session) -> None:
    """HTTP benchmarks: the store cycle over HTTP against the peer agentlightning==0.3.0, and span ingest."""
    session.install("./core[server]")  # the store server runs in the benchmark's venv
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    session.run("python", "bench/http_bench.py", "--peer-python", str(peer_python), *args)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The README's main command: the quickstart on the embedded default."""
    script = ROOT / "examples" / "quickstart_dev.py"
    if not script.exists():
        session.error("examples/quickstart_dev.py does not exist yet")
    _install_core(session)
    session.run("python", "examples/quickstart_dev.py", *session.posargs)


nox.options.sessions = ["core", *(p.session_name for p in PLUGINS if p.default), "lint", "typecheck"]
