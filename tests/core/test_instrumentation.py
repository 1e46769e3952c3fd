"""The framework adapter contract: Instrumentor, FrameworkRequirement, auto_instrument and the runner."""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any, Callable, Dict, Iterator, List

import pytest

from agentlightning import plugins
from agentlightning.hookspecs import hookimpl
from agentlightning.instrumentation import (
    DISABLE_INSTRUMENTORS_ENV,
    FrameworkNotAvailableError,
    FrameworkRequirement,
    Instrumentor,
    auto_instrument,
    disabled_instrumentors,
)
from agentlightning.litagent import rollout
from agentlightning.plugins import LazyObject, get_plugin_manager
from agentlightning.runner import LitAgentRunner
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning_testing.conformance import (
    CONFORMANCE_TESTS,
    AdapterConformanceSuite,
    ConformanceSuiteError,
    ToolFailure,
    calculator,
)

# -- test doubles --------------------------------------------------------------------------------


class Framework:
    """Stands in for a framework's global state that an instrumentor patches."""

    hooks: List[str] = []

    @staticmethod
    def call_model() -> str:
        return "model"

    def run(self) -> str:
        return "run"


class Subclassed(Framework):
    """Inherits ``run``: patching it on the subclass must be undone by deleting, not by copying the parent's."""


class FakeInstrumentor(Instrumentor):
    requirements = (FrameworkRequirement("pluggy", minimum="1.0"),)

    def __init__(self, name: str = "fake") -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]  # per-instance names keep tests independent
        self.instrument_calls = 0
        self.uninstrument_calls = 0

    def _instrument(self) -> None:
        self.instrument_calls += 1
        Framework.hooks.append(self.name)
        self.patch(Framework, "call_model", staticmethod(lambda: "patched"))
        self.patch(Subclassed, "run", lambda instance: "patched run")

    def _uninstrument(self) -> None:
        self.uninstrument_calls += 1
        Framework.hooks.remove(self.name)


class MissingFramework(FakeInstrumentor):
    requirements = (FrameworkRequirement("agl-framework-that-does-not-exist", minimum="1.0"),)


class BrokenInstrumentor(FakeInstrumentor):
    def _instrument(self) -> None:
        self.patch(Framework, "call_model", staticmethod(lambda: "half patched"))
        raise RuntimeError("the framework changed its API")


@pytest.fixture(autouse=True)
def clean_framework() -> Iterator[None]:
    Framework.hooks = []
    yield
    Framework.hooks = []


# -- FrameworkRequirement ------------------------------------------------------------------------


def test_requirement_checks_presence_and_version_without_importing() -> None:
    assert FrameworkRequirement("pluggy", minimum="1.0").problem() is None
    assert FrameworkRequirement("typing-extensions", module="typing_extensions").problem() is None
    too_old = FrameworkRequirement("pluggy", minimum="999.1").problem()
    assert too_old is not None and "999.1" in too_old
    missing = FrameworkRequirement("agl-not-installed").problem()
    assert missing is not None and "agl_not_installed" in missing
    assert FrameworkRequirement("agl-not-installed").import_name == "agl_not_installed"
    assert str(FrameworkRequirement("langchain-core", minimum="1.7.2")) == "langchain-core>=1.7.2"


@pytest.mark.parametrize(
    ("installed", "minimum", "ok"),
    [
        ("1.7.2", "1.7.2", True),
        ("1.7.10", "1.7.2", True),
        ("1.7", "1.7.0", True),
        ("1.7.1", "1.7.2", False),
        ("2.0.0rc1", "2.0", True),
        ("0.9.post1", "1.0", False),
    ],
)
def test_version_lower_bounds(installed: str, minimum: str, ok: bool) -> None:
    from agentlightning.instrumentation import _at_least

    assert _at_least(installed, minimum) is ok


# -- Instrumentor --------------------------------------------------------------------------------


def test_instrument_and_uninstrument_are_idempotent_and_restore_patches() -> None:
    instrumentor = FakeInstrumentor()
    original_call_model = Framework.__dict__["call_model"]
    instrumentor.instrument()
    instrumentor.instrument()
    assert instrumentor.is_instrumented and instrumentor.instrument_calls == 1
    assert Framework.call_model() == "patched" and Subclassed().run() == "patched run"
    assert Framework.hooks == ["fake"]
    instrumentor.uninstrument()
    instrumentor.uninstrument()
    assert not instrumentor.is_instrumented and instrumentor.uninstrument_calls == 1
    assert Framework.__dict__["call_model"] is original_call_model  # the staticmethod wrapper itself
    assert "run" not in Subclassed.__dict__ and Subclassed().run() == "run"
    assert Framework.hooks == []
    instrumentor.instrument()  # and it can be turned on again
    assert Framework.call_model() == "patched"
    instrumentor.uninstrument()


def test_missing_framework_raises_before_touching_anything() -> None:
    instrumentor = MissingFramework()
    assert not instrumentor.is_available()
    with pytest.raises(FrameworkNotAvailableError, match="agl-framework-that-does-not-exist") as raised:
        instrumentor.instrument()
    assert isinstance(raised.value, ImportError)
    assert instrumentor.instrument_calls == 0 and not instrumentor.is_instrumented


def test_failed_instrument_leaves_the_framework_unchanged() -> None:
    instrumentor = BrokenInstrumentor()
    with pytest.raises(RuntimeError, match="changed its API"):
        instrumentor.instrument()
    assert Framework.call_model() == "model"
    assert not instrumentor.is_instrumented


# -- auto_instrument -----------------------------------------------------------------------------


def test_disabled_instrumentors_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_INSTRUMENTORS_ENV, " langchain , crewai,,")
    assert disabled_instrumentors() == {"langchain", "crewai"}
    monkeypatch.setenv(DISABLE_INSTRUMENTORS_ENV, "langchain,all")
    assert disabled_instrumentors() == {"all"}
    monkeypatch.delenv(DISABLE_INSTRUMENTORS_ENV)
    assert disabled_instrumentors() == set()


def test_auto_instrument_skips_disabled_and_missing_frameworks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wanted, disabled, missing = FakeInstrumentor("wanted"), FakeInstrumentor("disabled"), MissingFramework("missing")
    monkeypatch.setenv(DISABLE_INSTRUMENTORS_ENV, "disabled")
    with caplog.at_level(logging.INFO, logger="agentlightning.instrumentation"):
        session = auto_instrument({"wanted": wanted, "disabled": disabled, "missing": missing})
    assert session.names == ["wanted"]
    assert wanted.is_instrumented and not disabled.is_instrumented and not missing.is_instrumented
    skipped = [record for record in caplog.records if "'missing' skipped" in record.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelno == logging.INFO
    assert "agl-framework-that-does-not-exist is not installed" in skipped[0].getMessage()
    session.release()
    session.release()  # idempotent
    assert not wanted.is_instrumented


def test_auto_instrument_all_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_INSTRUMENTORS_ENV, "all")
    instrumentor = FakeInstrumentor()
    assert auto_instrument({"fake": instrumentor}).names == []
    assert not instrumentor.is_instrumented


def test_a_broken_instrumentor_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    broken, fine = BrokenInstrumentor("broken"), FakeInstrumentor("fine")
    with caplog.at_level(logging.WARNING, logger="agentlightning.instrumentation"):
        session = auto_instrument({"broken": broken, "fine": fine})
    assert session.names == ["fine"]
    assert any("'broken' could not instrument" in record.getMessage() for record in caplog.records)
    session.release()


def test_auto_instrument_is_shared_by_runners_and_keeps_explicit_enablement() -> None:
    instrumentor = FakeInstrumentor()
    first, second = auto_instrument({"fake": instrumentor}), auto_instrument({"fake": instrumentor})
    assert instrumentor.instrument_calls == 1
    first.release()
    assert instrumentor.is_instrumented, "a runner still running needs it"
    second.release()
    assert not instrumentor.is_instrumented

    instrumentor.instrument()  # the user's explicit one-liner
    auto_instrument({"fake": instrumentor}).release()
    assert instrumentor.is_instrumented, "the runner turned off what the user turned on"
    instrumentor.uninstrument()


def test_auto_instrument_accepts_duck_typed_lazy_and_class_registrations() -> None:
    class DuckTyped:
        def __init__(self) -> None:
            self.on = False

        def instrument(self) -> None:
            self.on = True

        def uninstrument(self) -> None:
            self.on = False

    duck = DuckTyped()
    module = types.ModuleType("agl_test_lazy_instrumentor")
    module.INSTANCE = FakeInstrumentor("lazy")  # type: ignore[attr-defined]
    import sys

    sys.modules[module.__name__] = module
    try:
        session = auto_instrument(
            {
                "duck": duck,
                "lazy": LazyObject(f"{module.__name__}:INSTANCE"),
                "class": FakeInstrumentor,
                "unloadable": LazyObject("agl_no_such_module:THING"),
            }
        )
        assert session.names == ["duck", "lazy", "class"]
        assert duck.on and module.INSTANCE.is_instrumented
        session.release()
        assert not duck.on and not module.INSTANCE.is_instrumented
    finally:
        del sys.modules[module.__name__]


# -- the runner ----------------------------------------------------------------------------------


@pytest.fixture
def registered_instrumentors(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, Instrumentor]]:
    """A plugin registering instrumentors through the real hook (entry points are not loaded)."""
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.delenv(DISABLE_INSTRUMENTORS_ENV, raising=False)
    plugins.reset_plugin_manager()
    instrumentors: Dict[str, Instrumentor] = {"fake": FakeInstrumentor("fake"), "absent": MissingFramework("absent")}

    class Plugin:
        @hookimpl
        def agl_register_instrumentors(self, register: Callable[[str, Any], None]) -> None:
            for name, instrumentor in instrumentors.items():
                register(name, instrumentor)

    get_plugin_manager().register(Plugin(), name="test-instrumentors")
    yield instrumentors
    for instrumentor in instrumentors.values():
        instrumentor.uninstrument()
    plugins.reset_plugin_manager()


def _run_one_rollout(observed: List[bool], fake: Instrumentor) -> None:
    @rollout
    def agent(task: Any) -> float:
        observed.append(fake.is_instrumented)
        return 1.0

    async def main() -> None:
        store = InMemoryLightningStore(watchdog=False)
        runner = LitAgentRunner(OtelTracer(), poll_interval=0.02)
        runner.init(agent)
        runner.init_worker(0, store)
        try:
            await runner.step({"q": 1})
        finally:
            runner.teardown_worker(0)
            runner.teardown()
        await store.close()

    asyncio.run(main())


def test_runner_instruments_on_start_and_uninstruments_on_teardown(
    registered_instrumentors: Dict[str, Instrumentor], caplog: pytest.LogCaptureFixture
) -> None:
    fake = registered_instrumentors["fake"]
    observed: List[bool] = []
    with caplog.at_level(logging.INFO, logger="agentlightning.instrumentation"):
        _run_one_rollout(observed, fake)
    assert observed == [True], "the agent ran without the adapter"
    assert not fake.is_instrumented, "the runner left the adapter on after teardown"
    assert any("'absent' skipped" in record.getMessage() for record in caplog.records)


def test_runner_respects_agl_disable_instrumentors(
    registered_instrumentors: Dict[str, Instrumentor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_INSTRUMENTORS_ENV, "fake")
    fake = registered_instrumentors["fake"]
    observed: List[bool] = []
    _run_one_rollout(observed, fake)
    assert observed == [False]
    assert isinstance(fake, FakeInstrumentor) and fake.instrument_calls == 0


# -- the conformance suite's own rules -----------------------------------------------------------


def test_conformance_suite_refuses_dropped_tests() -> None:
    assert "test_tool_errors_are_recorded" in CONFORMANCE_TESTS and len(CONFORMANCE_TESTS) >= 10

    with pytest.raises(ConformanceSuiteError, match="test_streaming_is_recorded is overridden"):

        class TestOverrides(AdapterConformanceSuite):
            def test_streaming_is_recorded(self) -> None:  # type: ignore[override]
                pass

    with pytest.raises(ConformanceSuiteError, match="test_llm_errors_are_recorded is removed"):

        class TestRemoves(AdapterConformanceSuite):
            test_llm_errors_are_recorded = None  # type: ignore[assignment]

    with pytest.raises(ConformanceSuiteError, match="marked skip"):

        @pytest.mark.skip(reason="not now")
        class TestSkipsAll(AdapterConformanceSuite):
            pass

    with pytest.raises(ConformanceSuiteError, match="without @pytest.mark.xfail"):

        class TestXfailWithoutReason(AdapterConformanceSuite):
            @pytest.mark.xfail
            def test_streaming_is_recorded(self) -> None:  # type: ignore[override]
                pass

    class AllowedOverride(AdapterConformanceSuite):
        @pytest.mark.xfail(reason="the framework has no streaming API")
        def test_streaming_is_recorded(self) -> None:  # type: ignore[override]
            raise AssertionError("no streaming")

    assert "test_streaming_is_recorded" in vars(AllowedOverride)


def test_conformance_calculator_tool() -> None:
    assert calculator("2+2") == "4"
    assert calculator("7 * 6") == "42"
    assert calculator("1/4") == "0.25"
    for bad in ("boom", "__import__('os')", "2+"):
        with pytest.raises(ToolFailure):
            calculator(bad)
