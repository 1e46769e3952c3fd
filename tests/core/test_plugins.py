"""Plugin loading, registries, algorithm resolution and notifications (agentlightning.plugins).

Most tests use the two fixture distributions under tests/plugin_dists, which must be installed in the
test environment (nox does it):

    pip install tests/plugin_dists/agl-broken-plugin tests/plugin_dists/agl-sample-plugin

Every hook in hookspecs.py has a ``test_hook_<hook name>`` here (checked by test_hook_docs.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Dict, List

import pytest
from plugin_fixtures import TEST_DISTS, fresh_manager, test_dists  # noqa: F401 - fixtures

from agentlightning import hookimpl, plugins
from agentlightning.errors import AgentLightningError, ComponentResolutionError
from agentlightning.plugins import (
    LazyObject,
    PluginInfo,
    PluginLoadError,
    UnknownComponentError,
    get_plugin_manager,
    list_plugins,
    notify,
    registered,
    resolve,
)


def by_name(infos: list[PluginInfo]) -> dict[str, PluginInfo]:
    return {info.name: info for info in infos}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {key: value for key, value in os.environ.items() if key != plugins.DISABLE_AUTOLOAD_ENV}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=60
    )


def install_fake_entry_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, modules: dict[str, str]) -> None:
    """Make the ``agentlightning`` group list one entry point per module written from ``modules``."""
    for module_name, source in modules.items():
        (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    for module_name in modules:
        monkeypatch.delitem(sys.modules, module_name, raising=False)
    fake = [importlib.metadata.EntryPoint(name, name, plugins.ENTRY_POINT_GROUP) for name in modules]

    def fake_entry_points(**params: Any) -> list[importlib.metadata.EntryPoint]:
        assert params == {"group": plugins.ENTRY_POINT_GROUP}
        return fake

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)


# -- loading ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("test_dists")
def test_broken_plugin_is_reported_and_others_still_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agentlightning.plugins"):
        infos = by_name(list_plugins())

    broken = infos["broken"]
    assert broken.error == "RuntimeError: agl-broken-plugin fails on import on purpose"
    assert broken.distribution == "agl-broken-plugin"
    assert broken.version == "0.1.0"
    assert broken.hooks == []
    assert not broken.builtin
    assert "Skipping agentlightning plugin 'broken'" in caplog.text

    sample = infos["sample"]
    assert sample.error is None
    assert (sample.distribution, sample.version) == ("agl-sample-plugin", "0.2.0")
    assert "agl_on_rollout_end" in sample.hooks

    builtin = infos[plugins.BUILTIN_PLUGIN_NAME]
    assert builtin.builtin and builtin.error is None and builtin.distribution == "agentlightning"
    assert list_plugins()[0].builtin  # the built-in plugin is listed first


@pytest.mark.usefixtures("test_dists")
def test_process_survives_broken_plugin() -> None:
    result = run_python(
        """
        from agentlightning import plugins
        plugins.get_plugin_manager()
        print("alive", sorted(i.name for i in plugins.list_plugins() if i.error))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "alive ['broken']" in result.stdout
    assert "agl-broken-plugin fails on import on purpose" in result.stderr  # the warning


def test_plugin_failures_of_every_kind_are_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_entry_points(
        monkeypatch,
        tmp_path,
        {
            "agl_exits": "import sys\nsys.exit(3)\n",
            "agl_bad_signature": """
                from agentlightning import hookimpl

                @hookimpl
                def agl_register_tracers(register, not_a_hook_argument):
                    pass
            """,
            "agl_future_hook": """
                from agentlightning import hookimpl

                @hookimpl
                def agl_hook_from_the_future(register):
                    pass

                @hookimpl
                def agl_register_tracers(register):
                    register("future", object)
            """,
            "agl_good": """
                from agentlightning import hookimpl

                @hookimpl
                def agl_register_tracers(register):
                    register("good", object)
            """,
        },
    )
    listed = list_plugins()
    infos = by_name(listed)
    assert len(listed) == len(infos) == 5  # the built-in plugin and each module, once
    assert infos["agl_exits"].error == "SystemExit: 3"
    assert infos["agl_bad_signature"].error is not None
    assert "not_a_hook_argument" in infos["agl_bad_signature"].error
    assert not get_plugin_manager().has_plugin("agl_bad_signature")  # no half-registered leftovers
    assert infos["agl_future_hook"].error is None  # an unknown hook is only warned about
    assert infos["agl_good"].error is None
    assert {"good", "future"} <= set(registered("tracers"))


def test_plugin_calling_get_plugin_manager_while_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_fake_entry_points(
        monkeypatch,
        tmp_path,
        {
            "agl_reentrant": """
                from agentlightning.plugins import get_plugin_manager

                MANAGER = get_plugin_manager()
            """
        },
    )
    pm = get_plugin_manager()
    assert sys.modules["agl_reentrant"].MANAGER is pm
    assert by_name(list_plugins())["agl_reentrant"].error is None


def test_get_plugin_manager_is_a_thread_safe_singleton() -> None:
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        seen.append(get_plugin_manager())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(pm is seen[0] for pm in seen)
    assert get_plugin_manager() is seen[0]
    plugins.reset_plugin_manager()
    assert get_plugin_manager() is not seen[0]


@pytest.mark.usefixtures("test_dists")
@pytest.mark.parametrize("value", ["1", "true", "YES", "On", " yes "])
def test_autoload_disabled(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, value)
    assert [info.name for info in list_plugins()] == [plugins.BUILTIN_PLUGIN_NAME]
    assert "sample" not in registered("tracers")
    assert set(registered("store_backends")) == {"memory", "sqlite", "http", "https"}
    # Asking for an algorithm by name is explicit, so its entry point is still used.
    assert resolve("algorithms", "sample-algo").__name__ == "SampleAlgorithm"


@pytest.mark.usefixtures("test_dists")
@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_autoload_enabled(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, value)
    assert {"sample", "broken"} <= set(by_name(list_plugins()))


@pytest.mark.usefixtures("test_dists")
def test_autoload_disabled_in_a_fresh_process() -> None:
    result = run_python(
        """
        import sys
        from agentlightning import plugins
        print([i.name for i in plugins.list_plugins()], "agl_sample_plugin.hooks" in sys.modules)
        """,
        AGL_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['agentlightning.builtin_plugins'] False"
    assert result.stderr == ""


# -- registries ---------------------------------------------------------------------------------


class Recorder:
    """A plugin registered by hand in tests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, dict[str, Any]]] = []


def test_registered_later_registration_wins() -> None:
    class Override:
        @hookimpl
        def agl_register_store_backends(self, register: Callable[[str, Any], None]) -> None:
            register("memory", "overridden")
            register("extra", "extra")

    class Low:
        @hookimpl(trylast=True)
        def agl_register_store_backends(self, register: Callable[[str, Any], None]) -> None:
            register("extra", "low priority")
            register("low-only", 1)

    pm = get_plugin_manager()
    pm.register(Override(), name="override")
    pm.register(Low(), name="low")
    backends = registered("store_backends")
    assert backends["memory"] == "overridden"
    assert backends["extra"] == "extra"
    assert backends["low-only"] == 1
    assert isinstance(backends["sqlite"], LazyObject)

    class High:
        @hookimpl(tryfirst=True)
        def agl_register_store_backends(self, register: Callable[[str, Any], None]) -> None:
            register("memory", "high priority")

    class Later:
        @hookimpl
        def agl_register_store_backends(self, register: Callable[[str, Any], None]) -> None:
            register("memory", "later")

    pm.register(High(), name="high")
    pm.register(Later(), name="later")
    assert registered("store_backends")["memory"] == "high priority"


def test_registration_hook_that_raises_is_reported_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    class Faulty:
        @hookimpl
        def agl_register_tracers(self, register: Callable[[str, Any], None]) -> None:
            register("half-done", object)
            raise RuntimeError("tracer registration exploded")

        @hookimpl
        def agl_register_adapters(self, register: Callable[[str, Any], None]) -> None:
            register("faulty-adapter", object)

    class BadName:
        @hookimpl
        def agl_register_tracers(self, register: Callable[[Any, Any], None]) -> None:
            register(42, object)

    pm = get_plugin_manager()
    pm.register(Faulty(), name="faulty")
    pm.register(BadName(), name="bad-name")
    with caplog.at_level(logging.WARNING, logger="agentlightning.plugins"):
        tracers = registered("tracers")
    assert "half-done" not in tracers
    assert {"otel", "dummy"} <= set(tracers)
    assert registered("adapters")["faulty-adapter"] is object  # its other hook still works
    assert "tracer registration exploded" in caplog.text

    infos = by_name(list_plugins())
    assert infos["faulty"].error == "agl_register_tracers raised RuntimeError: tracer registration exploded"
    assert infos["faulty"].distribution is None
    assert infos["faulty"].hooks == ["agl_register_adapters", "agl_register_tracers"]
    assert infos["bad-name"].error is not None and "non-empty string name" in infos["bad-name"].error
    # Asking again does not pile up duplicate records.
    registered("tracers")
    assert by_name(list_plugins())["faulty"].error == infos["faulty"].error


def test_registered_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown registry kind 'widgets'"):
        registered("widgets")


def test_resolve_unwraps_lazy_objects_and_names_unknown_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert resolve("span_exporters", "console") is ConsoleSpanExporter
    with pytest.raises(UnknownComponentError, match=r"unknown tracer 'nope'; known names: dummy, otel") as info:
        resolve("tracers", "nope")
    assert isinstance(info.value, LookupError) and isinstance(info.value, AgentLightningError)
    assert info.value.known == ["dummy", "otel"]


def test_lazy_object() -> None:
    lazy = LazyObject("json:dumps")
    assert lazy([1]) == "[1]"
    assert lazy.load() is json.dumps
    assert repr(lazy) == "LazyObject('json:dumps')"
    assert LazyObject("os.path:join.__name__").load() == "join"
    with pytest.raises(ValueError, match="package.module:attribute"):
        LazyObject("json.dumps")
    with pytest.raises(PluginLoadError, match="agl_no_such_module:thing: ModuleNotFoundError") as info:
        LazyObject("agl_no_such_module:thing").load()
    assert isinstance(info.value.original, ModuleNotFoundError)
    with pytest.raises(PluginLoadError, match="AttributeError"):
        LazyObject("json:no_such_attribute").load()


def test_builtin_registrations_are_lazy() -> None:
    result = run_python(
        """
        import sys
        from agentlightning import plugins
        names = {kind: sorted(plugins.registered(kind)) for kind in plugins.REGISTRY_KINDS}
        loaded = [m for m in ("agentlightning.tracer.otel", "agentlightning.tracer.dummy",
                              "agentlightning.algorithm.baseline", "agentlightning.store.sqlite",
                              "agentlightning.store.client", "agentlightning.adapter.triplet",
                              "agentlightning.cli.store", "httpx") if m in sys.modules]
        print(names["store_backends"], names["tracers"], names["span_exporters"], names["algorithms"], loaded)
        print(names["adapters"], names["commands"], names["serving_backends"])
        """,
        AGL_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode == 0, result.stderr
    # `baseline` is registered once: as the core's `agentlightning.algorithms` entry point, not by a hook.
    assert result.stdout.splitlines() == [
        "['http', 'https', 'memory', 'sqlite'] ['dummy', 'otel'] ['console'] [] []",
        "['messages', 'proxy-triplets', 'token-sequences', 'triplets'] ['plugins', 'proxy', 'store'] []",
    ]


# -- one test per hook (test_hook_docs.py checks that each exists) ------------------------------


@pytest.mark.usefixtures("test_dists")
async def test_hook_agl_register_store_backends(tmp_path: Path) -> None:
    from agentlightning.store import InMemoryLightningStore, LightningStore, SqliteLightningStore, open_store

    backends = registered("store_backends")
    assert set(backends) >= {"memory", "sqlite", "sample"}
    assert resolve("store_backends", "memory") == InMemoryLightningStore.from_uri

    sample = open_store("sample://anything")  # the sample plugin's backend
    assert isinstance(sample, LightningStore)
    await sample.close()
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'hook.db'}")
    assert isinstance(sqlite_store, SqliteLightningStore)
    await sqlite_store.close()


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_tracers() -> None:
    from agl_sample_plugin.hooks import SampleTracer

    tracers = registered("tracers")
    assert {"otel", "dummy", "sample"} <= set(tracers)
    assert tracers["sample"] is SampleTracer
    tracer = resolve("tracers", "sample")(option=1)
    assert isinstance(tracer, SampleTracer) and tracer.kwargs == {"option": 1}
    assert tracers["otel"].target == "agentlightning.tracer.otel:OtelTracer"


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_span_exporters() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter

    exporters = registered("span_exporters")
    assert {"console", "sample"} <= set(exporters)
    for name in ("console", "sample"):
        exporter = exporters[name]()
        assert isinstance(exporter, SpanExporter), name
        exporter.shutdown()


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_algorithms() -> None:
    from agl_sample_plugin.hooks import SampleHookAlgorithm

    algorithms = registered("algorithms")
    assert "sample-hook-algo" in set(algorithms)
    assert "sample-algo" not in algorithms  # entry point algorithms are not registered through the hook
    assert "baseline" not in algorithms  # the core's own entry point
    assert resolve("algorithms", "sample-hook-algo") is SampleHookAlgorithm
    assert resolve("algorithms", "baseline").__name__ == "Baseline"


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_adapters() -> None:
    from agl_sample_plugin.hooks import SampleAdapter

    adapters = registered("adapters")
    assert adapters["sample"] is SampleAdapter
    assert resolve("adapters", "sample")().adapt([1]) == [1]

    # The built-in adapters, by the names the docs use.
    import agentlightning as agl
    from agentlightning.adapter import (
        LlmProxyTraceToTriplet,
        TracerTraceToTriplet,
        TraceToMessages,
        TraceToTokenSequences,
    )

    assert isinstance(agl.Trainer(adapter="messages", store="memory://").adapter, TraceToMessages)
    built_in = {"triplets": TracerTraceToTriplet, "proxy-triplets": LlmProxyTraceToTriplet}
    built_in.update({"token-sequences": TraceToTokenSequences, "messages": TraceToMessages})
    assert {name: resolve("adapters", name) for name in built_in} == built_in


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_instrumentors() -> None:
    from agl_sample_plugin.hooks import INSTRUMENTOR

    instrumentors = registered("instrumentors")
    assert instrumentors["sample"] is INSTRUMENTOR
    before = INSTRUMENTOR.instrument_calls
    for instrumentor in instrumentors.values():
        instrumentor.instrument()
        instrumentor.instrument()  # idempotent
        assert INSTRUMENTOR.active
        instrumentor.uninstrument()
    assert not INSTRUMENTOR.active
    assert INSTRUMENTOR.instrument_calls == before + 2


def test_hook_agl_register_execution_strategies() -> None:
    from agentlightning.execution import ExecutionStrategy, ProcessesExecutionStrategy, SharedMemoryExecutionStrategy
    from agentlightning.trainer import Trainer

    class InlineStrategy(ExecutionStrategy):
        def __init__(self, n_runners: int = 1, label: str = "") -> None:
            self.n_runners = n_runners
            self.label = label

    class StrategyPlugin:
        @hookimpl
        def agl_register_execution_strategies(self, register: Callable[[str, Any], None]) -> None:
            register("inline", InlineStrategy)

    strategies = registered("execution_strategies")
    assert {"shm", "in-process", "processes", "client-server", "cs"} <= set(strategies)
    assert resolve("execution_strategies", "processes") is ProcessesExecutionStrategy
    get_plugin_manager().register(StrategyPlugin(), name="strategy-plugin")
    trainer = Trainer(strategy={"type": "inline", "label": "x"}, n_runners=3, store="memory://")
    assert isinstance(trainer.strategy, InlineStrategy)
    assert (trainer.strategy.label, trainer.strategy.n_runners) == ("x", 3)  # the Trainer's n_runners reaches it
    assert isinstance(Trainer(strategy="in-process", store="memory://").strategy, SharedMemoryExecutionStrategy)
    with pytest.raises(ComponentResolutionError, match="unknown execution strategy 'warp'; known names: .*inline"):
        Trainer(strategy="warp")


def test_a_strategy_of_a_plugin_not_installed_names_its_distribution() -> None:
    from agentlightning.trainer import Trainer

    if "ray" in registered("execution_strategies"):
        pytest.skip("agentlightning-ray is installed here")
    with pytest.raises(
        ComponentResolutionError,
        match="the 'ray' execution strategy would come with agentlightning-ray: pip install agentlightning-ray",
    ):
        Trainer(strategy="ray")


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_serving_backends() -> None:
    import httpx

    from agentlightning.serving import ServingBackend, start_serving_backend

    assert "sample" in registered("serving_backends")
    backend = start_serving_backend("sample", "tiny", served_model_name="policy")
    try:
        assert isinstance(backend, ServingBackend)
        models = httpx.get(f"{backend.base_url}/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["policy"]
        assert backend.weights_version == 0
        assert backend.load_lora({"lora_A": 1}) == 1 and backend.load_weights("/ckpt") == 2
        assert backend.request_extras() == {"return_token_ids": True}
    finally:
        backend.close()
    with pytest.raises(UnknownComponentError, match="unknown serving backend 'nope'; known names: .*sample"):
        start_serving_backend("nope", "tiny")


def test_hook_agl_register_tokenizers() -> None:
    from agentlightning.proxy import ProxyBackend

    with pytest.raises(UnknownComponentError, match="tokenizer 'huggingface'.*which plugin adds which tokenizer"):
        ProxyBackend("http://127.0.0.1:1/v1", tokenizer="org/model")

    class Loaded:  # a CallTokenizer: used as it is when handed over again
        def __init__(self, name_or_path: str) -> None:
            self.name_or_path = name_or_path

        def prompt_ids(self, operation: str, request: Dict[str, Any]) -> List[int]:
            return [1]

        def response_ids(self, operation: str, request: Dict[str, Any], response: Dict[str, Any]) -> List[int]:
            return [2]

    class Tokenizers:
        @hookimpl
        def agl_register_tokenizers(self, register: Callable[[str, Any], None]) -> None:
            register("huggingface", Loaded)

    get_plugin_manager().register(Tokenizers(), name="tokenizers")
    backend = ProxyBackend("http://127.0.0.1:1/v1", tokenizer="org/model")
    assert isinstance(backend.tokenizer, Loaded) and backend.tokenizer.name_or_path == "org/model"
    assert ProxyBackend("http://127.0.0.1:1/v1", tokenizer=backend.tokenizer).tokenizer is backend.tokenizer  # type: ignore[arg-type]


def test_start_serving_backend_rejects_what_is_not_a_backend() -> None:
    from agentlightning.serving import start_serving_backend

    class NotABackend:
        @hookimpl
        def agl_register_serving_backends(self, register: Callable[[str, Any], None]) -> None:
            register("broken-backend", lambda model, **options: object())

    get_plugin_manager().register(NotABackend(), name="not-a-backend")
    with pytest.raises(TypeError, match="'broken-backend' returned object, not a ServingBackend"):
        start_serving_backend("broken-backend", "tiny")


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_register_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from agentlightning.cli import main

    commands = registered("commands")
    assert {"plugins", "proxy", "store", "sample-hello"} <= set(commands)
    assert main(["sample-hello", "--name", "hooks"]) == 0
    assert capsys.readouterr().out == "hello hooks from agl-sample-plugin\n"


def test_a_command_that_fails_to_add_itself_is_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from agentlightning.cli import main

    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")

    class BrokenCommand:
        @hookimpl
        def agl_register_commands(self, register: Callable[[str, Any], None]) -> None:
            def add_parser(subparsers: Any) -> None:
                raise RuntimeError("cannot build my parser")

            register("broken-command", add_parser)

    get_plugin_manager().register(BrokenCommand(), name="broken-command")
    with caplog.at_level(logging.WARNING, logger="agentlightning.cli"):
        assert main(["store", "--help"]) == 0  # the other commands still work
    assert "leaving out the command 'broken-command': RuntimeError: cannot build my parser" in caplog.text
    capsys.readouterr()
    assert main(["broken-command"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'broken-command'; installed commands: plugins, proxy, store." in error
    assert "pip install agentlightning-broken-command (`agl plugins` lists what is installed)" in error
    # No list of plugin names: the suggestion follows the naming convention, `_` becoming `-`.
    assert main(["serve_model", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert (
        "the 'serve_model' command would come with agentlightning-serve-model: pip install agentlightning-serve-model"
        in error
    )
    # Commands need not be named after their plugin: the hint points at where the README says which adds which.
    assert "the README's layout section says which plugin adds which command" in error


@pytest.mark.usefixtures("test_dists")
def test_the_install_hint_names_installed_plugins_that_did_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    # The broken plugin's entry point is named "broken": asking for "broken" names its distribution and error.
    with pytest.raises(UnknownComponentError) as info:
        resolve("tracers", "broken")
    assert "The installed plugin agl-broken-plugin may provide it, but it did not load: " in str(info.value)
    assert "agentlightning-broken" not in str(info.value)
    # With autoload off, every installed plugin is listed as not loaded, after the suggestion.
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins.reset_plugin_manager()
    with pytest.raises(UnknownComponentError) as info:
        resolve("commands", "sample-hello")
    message = str(info.value)
    assert "known names: plugins, proxy, store. " in message
    assert "pip install agentlightning-sample-hello" in message
    assert "Installed plugins that did not load: " in message
    assert f"agl-sample-plugin ({plugins.DISABLE_AUTOLOAD_ENV} is set)" in message


def test_the_install_hint_names_a_plugin_whose_registration_hook_raised() -> None:
    class Faulty:
        @hookimpl
        def agl_register_tracers(self, register: Callable[[str, Any], None]) -> None:
            raise RuntimeError("cannot build my tracer")

    get_plugin_manager().register(Faulty(), name="faulty-tracers")
    with pytest.raises(UnknownComponentError) as info:
        resolve("tracers", "fancy")
    message = str(info.value)
    assert "Installed plugins whose agl_register_tracers raised may provide it: " in message
    assert "faulty-tracers (RuntimeError: cannot build my tracer)" in message
    assert "pip install" not in message


# -- pluggy: wrappers and tracing see every call ------------------------------------------------


def test_wrappers_and_tracing_see_registration_and_notification_calls() -> None:
    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def agl_register_tracers(self, register: Callable[[str, Any], None]) -> Any:
            register("from-wrapper", object)
            seen.append("before")
            result = yield
            seen.append("after")
            return result

        @hookimpl(hookwrapper=True)
        def agl_on_rollout_start(self) -> Any:
            seen.append("old-style before")
            yield
            seen.append("old-style after")

    class Raises:
        @hookimpl
        def agl_on_rollout_start(self) -> None:
            raise RuntimeError("isolated")

    pm = get_plugin_manager()
    pm.register(Wrapper(), name="wrapper")
    pm.register(Raises(), name="raises")
    traced: list[str] = []
    undo = pm.add_hookcall_monitoring(lambda name, impls, kwargs: traced.append(name), lambda *args: None)
    try:
        tracers = registered("tracers")
        rollout, attempt = make_rollout_and_attempt()
        notify("agl_on_rollout_start", rollout=rollout, attempt=attempt, worker_id=None)
    finally:
        undo()
    assert "from-wrapper" in tracers and {"otel", "dummy"} <= set(tracers)
    assert seen == ["before", "after", "old-style before", "old-style after"]  # the isolated failure did not stop it
    assert traced == ["agl_register_tracers", "agl_on_rollout_start"]


def test_a_wrapper_that_raises_is_recorded_and_the_call_survives() -> None:
    class BadWrapper:
        @hookimpl(wrapper=True)
        def agl_register_adapters(self) -> Any:
            yield
            raise RuntimeError("wrapper exploded")

    get_plugin_manager().register(BadWrapper(), name="bad-wrapper")
    assert "messages" in registered("adapters")  # what the implementations registered is kept
    info = by_name(list_plugins())["bad-wrapper"]
    assert info.error == "agl_register_adapters raised RuntimeError: wrapper exploded"


def make_rollout_and_attempt() -> tuple[Any, Any]:
    from agentlightning.types import Attempt, Rollout

    now = time.time()
    rollout = Rollout(rollout_id="ro-1", input={"task": 1}, start_time=now)
    attempt = Attempt(rollout_id="ro-1", attempt_id="at-1", sequence_id=1, start_time=now)
    return rollout, attempt


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_on_rollout_start() -> None:
    from agl_sample_plugin.hooks import EVENTS

    rollout, attempt = make_rollout_and_attempt()
    EVENTS.clear()
    notify("agl_on_rollout_start", rollout=rollout, attempt=attempt, worker_id="worker-0")
    received = list(EVENTS)
    assert received == [("agl_on_rollout_start", {"rollout": rollout, "attempt": attempt, "worker_id": "worker-0"})]


@pytest.mark.usefixtures("test_dists")
def test_hook_agl_on_rollout_end() -> None:
    from agl_sample_plugin.hooks import EVENTS

    rollout, attempt = make_rollout_and_attempt()
    error = ValueError("agent failed")
    EVENTS.clear()
    notify("agl_on_rollout_end", rollout=rollout, attempt=attempt, worker_id=None, status="failed", error=error)
    received = list(EVENTS)
    assert received == [
        (
            "agl_on_rollout_end",
            {"rollout": rollout, "attempt": attempt, "worker_id": None, "status": "failed", "error": error},
        )
    ]


# -- notifications ------------------------------------------------------------------------------


def test_notify_isolates_each_implementation(caplog: pytest.LogCaptureFixture) -> None:
    received: list[str] = []

    class Before:
        @hookimpl(tryfirst=True)
        def agl_on_rollout_start(self, rollout: Any) -> None:
            received.append("before")

    class Raises:
        @hookimpl
        def agl_on_rollout_start(self, rollout: Any, attempt: Any, worker_id: str | None) -> None:
            raise RuntimeError("listener exploded")

    class After:
        @hookimpl(trylast=True)
        def agl_on_rollout_start(self, worker_id: str | None) -> None:
            received.append(f"after:{worker_id}")

    pm = get_plugin_manager()
    for plugin, name in ((Before(), "before"), (Raises(), "raises"), (After(), "after")):
        pm.register(plugin, name=name)
    rollout, attempt = make_rollout_and_attempt()
    with caplog.at_level(logging.WARNING, logger="agentlightning.plugins"):
        notify("agl_on_rollout_start", rollout=rollout, attempt=attempt, worker_id="w")
    assert received == ["before", "after:w"]
    assert "'raises' raised in agl_on_rollout_start (ignored): RuntimeError: listener exploded" in caplog.text


def test_notify_rejects_bad_calls() -> None:
    rollout, attempt = make_rollout_and_attempt()
    with pytest.raises(ValueError, match="'agl_on_nothing' is not an agentlightning hook"):
        notify("agl_on_nothing", rollout=rollout)
    with pytest.raises(TypeError, match=r"missing \['worker_id'\], unexpected \['extra'\]"):
        notify("agl_on_rollout_start", rollout=rollout, attempt=attempt, extra=1)


def test_notify_with_no_implementations() -> None:
    rollout, attempt = make_rollout_and_attempt()
    notify("agl_on_rollout_start", rollout=rollout, attempt=attempt, worker_id=None)


# -- algorithms ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("test_dists")
def test_resolving_an_algorithm_imports_only_the_named_entry_point(tmp_path: Path) -> None:
    log = tmp_path / "imports.log"
    code = """
        import sys
        from agentlightning import plugins
        cls = plugins.resolve("algorithms", "sample-algo")
        print(cls.__module__, cls.__name__, "agl_sample_plugin.broken_algorithm" in sys.modules)
    """
    result = run_python(code, AGL_SAMPLE_PLUGIN_IMPORT_LOG=str(log))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["agl_sample_plugin.algorithm", "SampleAlgorithm", "False"]
    imported = log.read_text().split()
    assert "agl_sample_plugin.algorithm" in imported
    assert "agl_sample_plugin.broken_algorithm" not in imported

    # Control: the log does catch an import of the broken module when it is asked for.
    log.unlink()
    result = run_python(
        """
        from agentlightning import plugins
        try:
            plugins.resolve("algorithms", "sample-broken-algo")
        except plugins.PluginLoadError as exc:
            print("refused")
        """,
        AGL_SAMPLE_PLUGIN_IMPORT_LOG=str(log),
    )
    assert result.stdout.strip() == "refused", result.stderr
    imported = log.read_text().split()
    assert "agl_sample_plugin.broken_algorithm" in imported
    assert "agl_sample_plugin.algorithm" not in imported


@pytest.mark.usefixtures("test_dists")
def test_resolving_an_algorithm_broken_entry_point() -> None:
    with pytest.raises(PluginLoadError) as info:
        resolve("algorithms", "sample-broken-algo")
    error = info.value
    assert isinstance(error, ImportError) and isinstance(error, AgentLightningError)
    assert "'sample-broken-algo'" in str(error)
    assert "agl_sample_plugin.broken_algorithm:BrokenAlgorithm" in str(error)
    assert "No module named 'agl_sample_missing_dependency'" in str(error)
    assert isinstance(error.original, ModuleNotFoundError)
    assert error.__cause__ is error.original
    # The failure does not poison other names.
    assert resolve("algorithms", "sample-algo").__name__ == "SampleAlgorithm"


@pytest.mark.usefixtures("test_dists")
def test_resolving_an_algorithm_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownComponentError) as info:
        resolve("algorithms", "no-such-algo")
    error = info.value
    assert isinstance(error, LookupError)
    assert error.name == "no-such-algo"
    assert {"baseline", "sample-algo", "sample-broken-algo", "sample-hook-algo"} <= set(error.known)
    assert str(error).startswith("unknown algorithm 'no-such-algo'; known names: ")
    assert "sample-algo" in str(error)


def test_resolving_an_algorithm_rejects_non_class() -> None:
    class NotAClass:
        @hookimpl
        def agl_register_algorithms(self, register: Callable[[str, Any], None]) -> None:
            register("instance-algo", object())

    get_plugin_manager().register(NotAClass(), name="not-a-class")
    with pytest.raises(ComponentResolutionError, match="'instance-algo'.* not a class"):
        resolve("algorithms", "instance-algo")


def test_list_plugins_includes_plugins_registered_by_hand() -> None:
    class Manual:
        @hookimpl
        def agl_on_rollout_end(self, status: str) -> None:
            pass

    get_plugin_manager().register(Manual(), name="manual")
    manual = by_name(list_plugins())["manual"]
    assert manual == PluginInfo(name="manual", distribution=None, version=None, hooks=["agl_on_rollout_end"])
    assert manual.to_dict()["hooks"] == ["agl_on_rollout_end"]
