"""The conformance suite every framework adapter passes.

An adapter's tests subclass :class:`AdapterConformanceSuite` once per kind of agent it supports and
fill in four things: the instrumentor's name, the adapter module, the framework's top-level modules,
and :meth:`~AdapterConformanceSuite.run_agent`, which runs a real framework agent against a local
OpenAI-compatible server. For example::

    class TestLangGraphConformance(AdapterConformanceSuite):
        instrumentor_name = "langchain"
        adapter_module = "agentlightning_langchain"
        framework_modules = ("langchain_core", "langchain", "langgraph")

        def get_instrumentor(self) -> Instrumentor:
            return agentlightning_langchain.INSTRUMENTOR

        def framework_state(self) -> Any:
            return [id(hook[0]) for hook in langchain_core.tracers.context._configure_hooks]

        def run_agent(self, run: AgentRun) -> Any:
            ...  # build the agent with run.base_url / run.model and a calculator tool; ask run.question

The agent is run by a real :class:`~agentlightning.runner.LitAgentRunner` with the OpenTelemetry
tracer and an in-memory store, and is never instrumented by the test: the runner turns the adapter on
through the ``agl_register_instrumentors`` hook, as it does for users.

The agent the harness builds has one tool, named :data:`TOOL_NAME`, that calls :func:`calculator`
(it raises :class:`ToolFailure` for :data:`FAILING_EXPRESSION`). Scenarios (:class:`Scenario`) say what
the server will answer and whether the agent must stream.

Dropping a conformance test is not allowed: a subclass that overrides one (or sets it to None) without
marking the override ``@pytest.mark.xfail(reason="...")`` fails at import, so the run fails.

This module imports pytest; :mod:`agentlightning_testing.fake_openai` does not.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import logging
import operator
import os
import subprocess
import sys
import textwrap
import uuid
from abc import abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, Coroutine, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import pytest

from agentlightning.instrumentation import DISABLE_INSTRUMENTORS_ENV, FrameworkNotAvailableError, Instrumentor
from agentlightning.litagent import rollout as rollout_decorator
from agentlightning.plugins import LazyObject, registered, reset_plugin_manager
from agentlightning.runner import LitAgentRunner
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes, GenAIOperationNames, LLMCallAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer
from agentlightning.types import Rollout, Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

__all__ = [
    "FAILING_EXPRESSION",
    "MODEL",
    "TOOL_NAME",
    "AdapterConformanceSuite",
    "AgentRun",
    "ConformanceSuiteError",
    "Scenario",
    "ToolFailure",
    "calculator",
]

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")

MODEL = "fake-model"
"""The model name the harness must ask for."""
TOOL_NAME = "calculator"
"""The name of the one tool the harness gives its agent."""
TOOL_DESCRIPTION = "Evaluate an arithmetic expression such as 2+2 and return the result."
FAILING_EXPRESSION = "boom"
"""The expression for which :func:`calculator` raises."""

_LLM_OPERATIONS = (GenAIOperationNames.CHAT, GenAIOperationNames.TEXT_COMPLETION)
_BINARY_OPERATORS: Dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class ToolFailure(RuntimeError):
    """Raised by :func:`calculator` for :data:`FAILING_EXPRESSION`."""


class ConformanceSuiteError(TypeError):
    """A subclass of the suite drops or overrides a conformance test without an expected-failure mark."""


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as ``2+2`` (the tool every harness agent has)."""
    if expression.strip() == FAILING_EXPRESSION:
        raise ToolFailure(f"calculator cannot evaluate {expression!r}")

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
            return _BINARY_OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        raise ToolFailure(f"calculator cannot evaluate {expression!r}")

    try:
        value = evaluate(ast.parse(expression, mode="eval"))
    except SyntaxError:
        raise ToolFailure(f"calculator cannot evaluate {expression!r}") from None
    return str(int(value) if isinstance(value, float) and value.is_integer() else value)


class Scenario(str, Enum):
    """What the fake server answers during one agent run."""

    TOOL = "tool"
    """A call of the calculator tool with ``2+2``, then a final text answer."""
    TOOL_ERROR = "tool_error"
    """A call of the calculator with :data:`FAILING_EXPRESSION` (the tool raises), then a final answer if asked."""
    LLM_ERROR = "llm_error"
    """An HTTP 400 error for the first LLM call."""
    STREAM = "stream"
    """Like TOOL, but the agent must stream the model's answers (with usage: ``stream_options.include_usage``)."""


@dataclass
class AgentRun:
    """One agent run the suite asks the harness for."""

    scenario: Scenario
    question: str
    """The user message; it holds a marker unique to this run, which routes the server's scripted answers."""
    base_url: str
    """The OpenAI ``base_url`` of the server to use (the fake server, or the LLM proxy in front of it)."""
    model: str = MODEL
    api_key: str = "unused"

    @property
    def stream(self) -> bool:
        return self.scenario is Scenario.STREAM


@dataclass
class _Outcome:
    rollout_id: str
    attempt_id: str
    marker: str
    error: Optional[BaseException] = None
    spans: List[Span] = field(default_factory=list)


# -- span helpers ----------------------------------------------------------------------------------


def _attr(span: Span, key: str) -> Any:
    return span.attributes.get(key)


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _error_text(span: Span) -> str:
    """Everything a span says about its error: status, attributes and exception events."""
    pieces = [span.status.description or ""]
    pieces.extend(str(value) for key, value in span.attributes.items() if "error" in key or "exception" in key)
    for event in span.events:
        pieces.extend(str(value) for value in event.attributes.values())
    return " ".join(pieces)


class _SuiteMeta(type):
    """Refuses subclasses that drop conformance tests, at definition and when marked or patched afterwards."""

    def __init__(cls, name: str, bases: Tuple[type, ...], namespace: Dict[str, Any], **kwargs: Any) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        if any(isinstance(base, _SuiteMeta) for base in bases):
            _refuse_dropped_tests(cls, _dropped_conformance_tests(cls))

    def __setattr__(cls, name: str, value: Any) -> None:
        # Class decorators (@pytest.mark.skip) and later patches arrive here, after __init__.
        super().__setattr__(name, value)
        if name == "pytestmark" or name.startswith("test_") or name == "__test__":
            _refuse_dropped_tests(cls, _dropped_conformance_tests(cls))


class AdapterConformanceSuite(metaclass=_SuiteMeta):
    """Test classes an adapter subclasses (see the module docstring). Not collected itself (no ``Test`` prefix)."""

    instrumentor_name: ClassVar[str] = ""
    """The name the adapter registers through ``agl_register_instrumentors``."""
    adapter_module: ClassVar[str] = ""
    """The adapter's import name; it must import without the framework."""
    framework_modules: ClassVar[Tuple[str, ...]] = ()
    """Top-level modules of the framework, hidden when checking that the adapter imports without them."""
    run_timeout: ClassVar[float] = 60.0

    # -- what each adapter provides ----------------------------------------------------------------

    @abstractmethod
    def get_instrumentor(self) -> Instrumentor:
        """The adapter's instrumentor (the same object the hook registers)."""

    @abstractmethod
    def framework_state(self) -> Any:
        """A comparable snapshot of the framework's global state that ``instrument()`` changes.

        ``uninstrument()`` must bring it back to what it was before ``instrument()``.
        """

    @abstractmethod
    def run_agent(self, run: AgentRun) -> Any:
        """Run a real framework agent once, as described by ``run``. May be a coroutine function.

        The agent uses ``run.base_url``, ``run.model`` and ``run.api_key``, has the calculator tool
        (:data:`TOOL_NAME`, calling :func:`calculator`), asks ``run.question``, streams when
        ``run.stream`` is true, and does not retry failed LLM calls. Exceptions may propagate.
        """

    # -- fixtures ----------------------------------------------------------------------------------

    _loop: ClassVar[Optional[asyncio.AbstractEventLoop]] = None

    @pytest.fixture(scope="class")
    @classmethod
    def fake_server(cls) -> Iterator[FakeOpenAIServer]:
        with FakeOpenAIServer() as server:
            yield server

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _event_loop(cls) -> Iterator[None]:
        # One loop per class, as in a long-lived runner: frameworks cache async HTTP clients bound to
        # the loop that created them, so a fresh loop per test would break them, not the adapter.
        loop = asyncio.new_event_loop()
        cls._loop = loop
        yield
        cls._loop = None
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def _complete(self, coroutine: Coroutine[Any, Any, ResultT]) -> ResultT:
        loop = type(self)._loop
        if loop is None:
            raise RuntimeError("the suite's event loop fixture is not active")
        return loop.run_until_complete(coroutine)

    @pytest.fixture(autouse=True)
    def _clean_instrumentation(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        # Each test starts and ends with the adapter off and the plugin manager freshly loaded.
        monkeypatch.delenv(DISABLE_INSTRUMENTORS_ENV, raising=False)
        monkeypatch.delenv("AGL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        reset_plugin_manager()
        self.get_instrumentor().uninstrument()
        yield
        self.get_instrumentor().uninstrument()
        reset_plugin_manager()

    # -- running agents under rollouts -------------------------------------------------------------

    def _script(self, server: FakeOpenAIServer, scenario: Scenario, marker: str, *, first_delay: float = 0.0) -> None:
        if scenario is Scenario.LLM_ERROR:
            server.enqueue_for(marker, FakeReply.error(400, f"the model refused {marker}", delay=first_delay))
            return
        expression = FAILING_EXPRESSION if scenario is Scenario.TOOL_ERROR else "2+2"
        server.enqueue_for(
            marker,
            FakeReply.tool_call(TOOL_NAME, {"expression": expression}, call_id=f"call_{marker}", delay=first_delay),
            FakeReply.text("The answer is 4." if scenario is not Scenario.TOOL_ERROR else "The tool failed."),
        )

    def _rollout_agent(self, outcomes: Dict[str, _Outcome], base_url: Callable[[Rollout], str]) -> Any:
        """A ``@rollout`` agent that runs the harness; sync harnesses stay sync (the runner gives them a thread)."""
        suite = self

        def make_run(task: Dict[str, Any], rollout: Rollout) -> AgentRun:
            return AgentRun(scenario=Scenario(task["scenario"]), question=task["question"], base_url=base_url(rollout))

        if inspect.iscoroutinefunction(self.run_agent):

            async def async_agent(task: Dict[str, Any], rollout: Rollout) -> float:
                try:
                    await suite.run_agent(make_run(task, rollout))
                except Exception as exc:  # the spans are under test, not the agent's success
                    outcomes[task["marker"]].error = exc
                return 1.0

            return rollout_decorator(async_agent)

        def sync_agent(task: Dict[str, Any], rollout: Rollout) -> float:
            try:
                result = suite.run_agent(make_run(task, rollout))
                if inspect.isawaitable(result):
                    raise TypeError("run_agent returned an awaitable; declare it `async def`")
            except Exception as exc:  # the spans are under test, not the agent's success
                outcomes[task["marker"]].error = exc
            return 1.0

        return rollout_decorator(sync_agent)

    async def _run_rollouts(
        self,
        server: FakeOpenAIServer,
        scenarios: Sequence[Scenario],
        *,
        first_delays: Optional[Sequence[float]] = None,
        base_url: Optional[Callable[[Rollout], str]] = None,
        store: Optional[InMemoryLightningStore] = None,
    ) -> List[_Outcome]:
        """Run one rollout per scenario, all at once, through a real runner; return their spans."""
        own_store = store is None
        active_store = store if store is not None else InMemoryLightningStore(watchdog=False)
        outcomes: Dict[str, _Outcome] = {}
        tasks: List[Dict[str, Any]] = []
        for index, scenario in enumerate(scenarios):
            marker = f"m{uuid.uuid4().hex[:10]}"
            delay = first_delays[index] if first_delays is not None else 0.0
            self._script(server, scenario, marker, first_delay=delay)
            question = f"Task {marker}: what is 2+2? Use the {TOOL_NAME} tool."
            tasks.append({"scenario": scenario.value, "question": question, "marker": marker})
            outcomes[marker] = _Outcome(rollout_id="", attempt_id="", marker=marker)
        runner = LitAgentRunner(
            OtelTracer(), poll_interval=0.02, heartbeat_interval=30.0, concurrency=max(1, len(tasks))
        )
        url_for = base_url if base_url is not None else (lambda rollout: server.base_url)
        runner.init(self._rollout_agent(outcomes, url_for))
        runner.init_worker(0, active_store)
        try:
            finished = await asyncio.wait_for(
                asyncio.gather(*(runner.step(task) for task in tasks)), timeout=self.run_timeout
            )
        finally:
            runner.teardown_worker(0)
            runner.teardown()
        for task, rollout in zip(tasks, finished, strict=True):
            outcome = outcomes[task["marker"]]
            attempt = await active_store.get_latest_attempt(rollout.rollout_id)
            assert attempt is not None
            outcome.rollout_id, outcome.attempt_id = rollout.rollout_id, attempt.attempt_id
            outcome.spans = list(await active_store.query_spans(rollout.rollout_id))
        if own_store:
            await active_store.close()
        return [outcomes[task["marker"]] for task in tasks]

    def _run(self, server: FakeOpenAIServer, *scenarios: Scenario, **options: Any) -> List[_Outcome]:
        return self._complete(self._run_rollouts(server, scenarios, **options))

    # -- reading spans -----------------------------------------------------------------------------

    def framework_spans(self, spans: Sequence[Span]) -> List[Span]:
        """Spans written by this adapter."""
        return [span for span in spans if _attr(span, FrameworkAttributes.FRAMEWORK) == self.instrumentor_name]

    def llm_spans(self, spans: Sequence[Span]) -> List[Span]:
        return [
            span
            for span in self.framework_spans(spans)
            if _attr(span, GenAIAttributes.OPERATION_NAME) in _LLM_OPERATIONS
        ]

    def tool_spans(self, spans: Sequence[Span]) -> List[Span]:
        return [
            span
            for span in self.framework_spans(spans)
            if _attr(span, GenAIAttributes.OPERATION_NAME) == GenAIOperationNames.EXECUTE_TOOL
        ]

    @staticmethod
    def agent_name(span: Span, spans: Sequence[Span]) -> Optional[str]:
        """``gen_ai.agent.name`` of the span or of its nearest ancestor that has one."""
        by_id = {candidate.span_id: candidate for candidate in spans}
        current: Optional[Span] = span
        seen = set()
        while current is not None and current.span_id not in seen:
            seen.add(current.span_id)
            name = _attr(current, GenAIAttributes.AGENT_NAME)
            if name:
                return str(name)
            current = by_id.get(current.parent_id) if current.parent_id else None
        return None

    def _assert_llm_span_complete(self, span: Span, marker: str) -> None:
        assert _attr(span, GenAIAttributes.REQUEST_MODEL) == MODEL, span.attributes
        request = _attr(span, LLMCallAttributes.REQUEST)
        assert request, f"LLM span {span.name!r} has no {LLMCallAttributes.REQUEST}"
        assert marker in _text(request), "the recorded request does not hold the user's question"
        assert _attr(span, LLMCallAttributes.RESPONSE), f"LLM span {span.name!r} has no {LLMCallAttributes.RESPONSE}"
        assert (_attr(span, GenAIAttributes.USAGE_INPUT_TOKENS) or 0) > 0, "no input token usage"
        assert (_attr(span, GenAIAttributes.USAGE_OUTPUT_TOKENS) or 0) > 0, "no output token usage"

    # -- the conformance tests ---------------------------------------------------------------------

    def test_registered_through_the_hook(self) -> None:
        """The adapter's distribution registers its instrumentor through ``agl_register_instrumentors``."""
        instrumentors = registered("instrumentors")
        assert self.instrumentor_name in instrumentors, (
            f"no instrumentor {self.instrumentor_name!r} registered; registered: {sorted(instrumentors)} "
            "(is the adapter installed with its `agentlightning` entry point?)"
        )
        entry = instrumentors[self.instrumentor_name]
        loaded = entry.load() if isinstance(entry, LazyObject) else entry
        assert loaded is self.get_instrumentor()
        assert self.get_instrumentor().name == self.instrumentor_name

    def test_spans_land_under_the_rollout(self, fake_server: FakeOpenAIServer) -> None:
        """A runner, with no explicit instrumentation, records the agent's LLM and tool calls under its rollout."""
        (outcome,) = self._run(fake_server, Scenario.TOOL)
        assert outcome.error is None, f"the agent failed: {outcome.error!r}"
        spans = self.framework_spans(outcome.spans)
        assert spans, "the adapter recorded no span (was it auto-instrumented when the runner started?)"
        assert {(span.rollout_id, span.attempt_id) for span in spans} == {(outcome.rollout_id, outcome.attempt_id)}
        span_ids = {span.span_id for span in outcome.spans}
        for span in spans:
            assert span.parent_id is None or span.parent_id in span_ids, f"{span.name!r} has a parent elsewhere"
        llm = self.llm_spans(outcome.spans)
        expected_ids = fake_server.response_ids(outcome.marker)
        assert len(llm) == len(expected_ids) == 2, (len(llm), expected_ids)
        assert sorted(str(_attr(span, GenAIAttributes.RESPONSE_ID)) for span in llm) == sorted(expected_ids)
        for span in llm:
            self._assert_llm_span_complete(span, outcome.marker)
            assert self.agent_name(span, outcome.spans), f"no {GenAIAttributes.AGENT_NAME} on {span.name!r} or above"
            assert span.status.status_code != "ERROR"

    def test_concurrent_rollouts_never_mix(self, fake_server: FakeOpenAIServer) -> None:
        """Two rollouts running at once in one process each get exactly their own spans."""
        # The first rollout's first answer is late, so the two interleave.
        outcomes = self._run(fake_server, Scenario.TOOL, Scenario.TOOL, first_delays=[0.4, 0.0])
        first, second = outcomes
        for outcome, other in ((first, second), (second, first)):
            assert outcome.error is None, f"the agent failed: {outcome.error!r}"
            llm = self.llm_spans(outcome.spans)
            assert sorted(str(_attr(span, GenAIAttributes.RESPONSE_ID)) for span in llm) == sorted(
                fake_server.response_ids(outcome.marker)
            )
            for span in self.framework_spans(outcome.spans):
                assert other.marker not in json.dumps(span.attributes, default=str), f"{span.name!r} leaked"
            tools = self.tool_spans(outcome.spans)
            assert [_attr(span, GenAIAttributes.TOOL_CALL_ID) for span in tools] == [f"call_{outcome.marker}"]

    def test_tool_calls_are_recorded(self, fake_server: FakeOpenAIServer) -> None:
        """A tool call has its name, call id, arguments and result."""
        (outcome,) = self._run(fake_server, Scenario.TOOL)
        tools = self.tool_spans(outcome.spans)
        assert len(tools) == 1, [span.name for span in self.framework_spans(outcome.spans)]
        tool = tools[0]
        assert _attr(tool, GenAIAttributes.TOOL_NAME) == TOOL_NAME
        assert _attr(tool, GenAIAttributes.TOOL_CALL_ID) == f"call_{outcome.marker}"
        arguments = _json(_attr(tool, GenAIAttributes.TOOL_CALL_ARGUMENTS))
        assert "2+2" in _text(arguments), arguments
        assert "4" in _text(_attr(tool, GenAIAttributes.TOOL_CALL_RESULT))
        assert tool.status.status_code != "ERROR"
        assert self.agent_name(tool, outcome.spans)

    def test_tool_errors_are_recorded(self, fake_server: FakeOpenAIServer) -> None:
        """A tool that raises gives an ERROR tool span with the error type and message."""
        (outcome,) = self._run(fake_server, Scenario.TOOL_ERROR)
        tools = self.tool_spans(outcome.spans)
        assert len(tools) == 1, [span.name for span in self.framework_spans(outcome.spans)]
        tool = tools[0]
        assert tool.status.status_code == "ERROR", tool.status
        assert _attr(tool, GenAIAttributes.ERROR_TYPE), "no error.type on the failed tool span"
        assert FAILING_EXPRESSION in _error_text(tool)

    def test_llm_errors_are_recorded(self, fake_server: FakeOpenAIServer) -> None:
        """An LLM call answered with an HTTP error gives an ERROR LLM span."""
        (outcome,) = self._run(fake_server, Scenario.LLM_ERROR)
        llm = self.llm_spans(outcome.spans)
        assert llm, "no LLM span for the failed call"
        failed = [span for span in llm if span.status.status_code == "ERROR"]
        assert len(failed) == 1, [(span.name, span.status) for span in llm]
        assert _attr(failed[0], GenAIAttributes.ERROR_TYPE)
        assert "refused" in _error_text(failed[0])
        assert _attr(failed[0], GenAIAttributes.REQUEST_MODEL) == MODEL

    def test_streaming_is_recorded(self, fake_server: FakeOpenAIServer) -> None:
        """Streamed LLM calls are recorded whole: response text, usage and the provider's response id."""
        (outcome,) = self._run(fake_server, Scenario.STREAM)
        assert outcome.error is None, f"the agent failed: {outcome.error!r}"
        assert all(body.get("stream") for body in fake_server.requests if outcome.marker in json.dumps(body))
        llm = self.llm_spans(outcome.spans)
        assert len(llm) == 2
        for span in llm:
            self._assert_llm_span_complete(span, outcome.marker)
            assert _attr(span, LLMCallAttributes.STREAM) is True
        assert sorted(str(_attr(span, GenAIAttributes.RESPONSE_ID)) for span in llm) == sorted(
            fake_server.response_ids(outcome.marker)
        )
        assert any("The answer is 4." in _text(_attr(span, LLMCallAttributes.RESPONSE)) for span in llm)
        assert len(self.tool_spans(outcome.spans)) == 1

    def test_instrument_twice_is_harmless(self, fake_server: FakeOpenAIServer) -> None:
        """instrument() twice (and the runner's own) records each call once; an explicit enablement outlives runners."""
        instrumentor = self.get_instrumentor()
        instrumentor.instrument()
        instrumentor.instrument()
        assert instrumentor.is_instrumented
        (outcome,) = self._run(fake_server, Scenario.TOOL)
        assert len(self.llm_spans(outcome.spans)) == len(fake_server.response_ids(outcome.marker)) == 2
        assert len(self.tool_spans(outcome.spans)) == 1
        assert instrumentor.is_instrumented, "the runner turned off an instrumentor the user had turned on"
        instrumentor.uninstrument()
        instrumentor.uninstrument()
        assert not instrumentor.is_instrumented

    def test_uninstrument_restores_the_framework(self, fake_server: FakeOpenAIServer) -> None:
        """uninstrument() leaves the framework as it found it, and nothing is recorded afterwards."""
        instrumentor = self.get_instrumentor()
        before = self.framework_state()
        instrumentor.instrument()
        instrumentor.uninstrument()
        assert self.framework_state() == before

        async def traced_without_runner() -> Tuple[List[Span], str]:
            # A trace context without a runner: nothing turns the adapter back on.
            store = InMemoryLightningStore(watchdog=False)
            marker = f"m{uuid.uuid4().hex[:10]}"
            self._script(fake_server, Scenario.TOOL, marker)
            run = AgentRun(Scenario.TOOL, f"Task {marker}: what is 2+2?", fake_server.base_url)
            tracer = OtelTracer()
            attempted = await store.start_rollout({"marker": marker})
            async with tracer.trace_context(
                rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
            ):
                if inspect.iscoroutinefunction(self.run_agent):
                    await self.run_agent(run)
                else:
                    await asyncio.to_thread(self.run_agent, run)
            spans = list(await store.query_spans(attempted.rollout_id))
            await store.close()
            return spans, marker

        spans, marker = self._complete(traced_without_runner())
        assert fake_server.response_ids(marker), "the agent did not call the server"
        assert self.framework_spans(spans) == [], "the adapter still records after uninstrument()"

    def test_disabled_by_environment(self, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """AGL_DISABLE_INSTRUMENTORS=<name> keeps the runner from turning the adapter on."""
        monkeypatch.setenv(DISABLE_INSTRUMENTORS_ENV, f"some-other,{self.instrumentor_name}")
        (outcome,) = self._run(fake_server, Scenario.TOOL)
        assert fake_server.response_ids(outcome.marker)
        assert self.framework_spans(outcome.spans) == []
        assert not self.get_instrumentor().is_instrumented

    def test_imports_without_the_framework(self) -> None:
        """The adapter module imports with its framework hidden; the runner then skips it with a log line."""
        script = textwrap.dedent(
            f"""
            import importlib.abc, logging, sys

            BLOCKED = {tuple(self.framework_modules)!r}

            class HideFramework(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in BLOCKED:
                        raise ModuleNotFoundError(f"No module named {{name!r}} (hidden)", name=name)
                    return None

            sys.meta_path.insert(0, HideFramework())
            records = []
            handler = logging.Handler()
            handler.emit = records.append
            logging.getLogger("agentlightning").addHandler(handler)
            logging.getLogger("agentlightning").setLevel(logging.INFO)

            import {self.adapter_module}
            from agentlightning.instrumentation import FrameworkNotAvailableError, auto_instrument
            from agentlightning.plugins import registered, LazyObject

            entry = registered("instrumentors")[{self.instrumentor_name!r}]
            instrumentor = entry.load() if isinstance(entry, LazyObject) else entry
            assert instrumentor.missing_requirements(), "the framework is hidden but the requirement is met"
            try:
                instrumentor.instrument()
            except FrameworkNotAvailableError as exc:
                print("instrument() raised:", exc)
            else:
                raise AssertionError("instrument() did not raise FrameworkNotAvailableError")
            session = auto_instrument()
            assert {self.instrumentor_name!r} not in session.names, session.names
            skipped = [r.getMessage() for r in records if {self.instrumentor_name!r} in r.getMessage()]
            assert skipped, "no log line says the instrumentor was skipped"
            print("log:", skipped[0])
            leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
            assert not leaked, leaked
            print("OK")
            """
        )
        env = {key: value for key, value in os.environ.items() if key != "AGL_DISABLE_PLUGIN_AUTOLOAD"}
        env.pop(DISABLE_INSTRUMENTORS_ENV, None)
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, check=False
        )
        assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
        assert FrameworkNotAvailableError.__name__  # the class the script checks is part of the contract

    def test_response_id_joins_the_proxy_span(self, fake_server: FakeOpenAIServer) -> None:
        """Through the LLM proxy, each adapter LLM span's response id equals the proxy span's of the same call."""
        try:
            from agentlightning.proxy import LLMProxy, ProxyBackend
        except ImportError:
            pytest.skip("proxy not available")

        async def through_proxy() -> _Outcome:
            store = InMemoryLightningStore(watchdog=False)
            proxy = LLMProxy(store=store, backends=[ProxyBackend(base_url=fake_server.base_url)])
            await proxy.start()
            try:
                (outcome,) = await self._run_rollouts(
                    fake_server,
                    [Scenario.TOOL],
                    base_url=lambda rollout: proxy.base_url_for(rollout.rollout_id, _attempt_id(rollout)),
                    store=store,
                )
            finally:
                await proxy.stop()
            outcome.spans = list(await store.query_spans(outcome.rollout_id))
            await store.close()
            return outcome

        outcome = self._complete(through_proxy())
        assert outcome.error is None, f"the agent failed: {outcome.error!r}"
        adapter_ids = sorted(str(_attr(span, GenAIAttributes.RESPONSE_ID)) for span in self.llm_spans(outcome.spans))
        proxy_ids = sorted(
            str(_attr(span, GenAIAttributes.RESPONSE_ID))
            for span in outcome.spans
            if _attr(span, FrameworkAttributes.FRAMEWORK) is None and _attr(span, GenAIAttributes.RESPONSE_ID)
        )
        assert len(adapter_ids) == 2, adapter_ids
        assert adapter_ids == proxy_ids == sorted(fake_server.response_ids(outcome.marker))


def _attempt_id(rollout: Rollout) -> str:
    attempt = getattr(rollout, "attempt", None)
    if attempt is None:
        raise AssertionError("the runner passed a rollout without its attempt")
    return str(attempt.attempt_id)


CONFORMANCE_TESTS: Tuple[str, ...] = tuple(
    sorted(name for name in vars(AdapterConformanceSuite) if name.startswith("test_"))
)
"""The names of the conformance tests every adapter runs."""


def _xfail_reason(test: Any) -> Optional[str]:
    for mark in getattr(test, "pytestmark", []):
        if getattr(mark, "name", None) != "xfail":
            continue
        reason = mark.kwargs.get("reason")
        if not reason and len(mark.args) > 1:
            reason = mark.args[1]
        if isinstance(reason, str) and reason.strip():
            return reason
    return None


def _refuse_dropped_tests(cls: type, problems: List[str]) -> None:
    if problems:
        raise ConformanceSuiteError(
            f"{cls.__module__}.{cls.__qualname__} drops conformance tests: {'; '.join(problems)}. "
            "Mark an override @pytest.mark.xfail(reason='why the adapter cannot pass it') instead."
        )


def _dropped_conformance_tests(cls: type) -> List[str]:
    """Conformance tests ``cls`` overrides or removes without an xfail mark with a reason."""
    problems: List[str] = []
    for name in CONFORMANCE_TESTS:
        original = vars(AdapterConformanceSuite)[name]
        current = getattr(cls, name, None)
        if current is original:
            continue
        if current is None or not callable(current):
            problems.append(f"{name} is removed")
        elif _xfail_reason(current) is None:
            problems.append(f"{name} is overridden without @pytest.mark.xfail(reason=...)")
    for mark in getattr(cls, "pytestmark", []):
        if getattr(mark, "name", None) in ("skip", "skipif", "xfail"):
            problems.append(f"the class is marked {mark.name}; mark single tests xfail with a reason")
    if cls.__name__.startswith("Test") and vars(cls).get("__test__") is False:
        problems.append("__test__ = False hides the whole suite")
    return problems
