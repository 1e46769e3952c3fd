"""Emitters: span layouts, propagate semantics, and a round trip through OtelTracer into a real store."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, List, Tuple

import pytest
import pytest_asyncio
from opentelemetry import trace as trace_api
from pydantic import BaseModel

from agentlightning.emitter import (
    emit_annotation,
    emit_exception,
    emit_message,
    emit_object,
    emit_reward,
    find_final_reward,
    find_reward_spans,
    get_message_value,
    get_object_value,
    get_reward_value,
    get_rewards_from_span,
    is_reward_span,
    operation,
    reward,
)
from agentlightning.semconv import RewardPydanticModel
from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.tracer import DummyTracer, OtelTracer, clear_active_tracer
from agentlightning.types import Span, SpanCoreFields
from agentlightning.utils.otel import extract_links_from_attributes, make_link_attributes, make_tag_attributes


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LightningStore]:
    backend: LightningStore
    if request.param == "memory":
        backend = InMemoryLightningStore()
    else:
        backend = SqliteLightningStore(tmp_path / "store.db")
    yield backend
    await backend.close()


@pytest.fixture(autouse=True)
def _no_process_tracer() -> Iterator[None]:
    clear_active_tracer()
    yield
    clear_active_tracer()


async def new_attempt(store: LightningStore) -> Tuple[str, str]:
    rollout = await store.start_rollout(input={"task": "t"})
    return rollout.rollout_id, rollout.attempt.attempt_id


async def stored(store: LightningStore, rollout_id: str) -> List[Span]:
    return sorted(await store.query_spans(rollout_id), key=lambda s: s.sequence_id)


def as_span(core: SpanCoreFields) -> Span:
    return Span.from_core_fields(core, rollout_id="r", attempt_id="a", sequence_id=1)


# -- layouts with propagate=False ------------------------------------------------------------------


def test_scalar_reward_layout() -> None:
    core = emit_reward(0.95, propagate=False)
    assert core.name == "agentlightning.annotation"
    assert core.status.status_code == "OK"
    assert core.start_time == core.end_time
    assert core.attributes == {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.95}
    assert emit_reward(1, propagate=False).attributes["agentlightning.reward.0.value"] == 1.0
    value = emit_reward(True, propagate=False).attributes["agentlightning.reward.0.value"]
    assert value == 1.0 and type(value) is float


def test_multi_dimensional_reward_layout() -> None:
    core = emit_reward(
        {"eff": 0.5, "acc": 1},
        primary_key="acc",
        attributes=make_link_attributes({"gen_ai.response.id": "r1"}),
        propagate=False,
    )
    assert core.attributes == {
        "agentlightning.reward.0.name": "acc",
        "agentlightning.reward.0.value": 1.0,
        "agentlightning.reward.1.name": "eff",
        "agentlightning.reward.1.value": 0.5,
        "agentlightning.link.0.key_match": "gen_ai.response.id",
        "agentlightning.link.0.value_match": "r1",
    }
    span = as_span(core)
    assert get_rewards_from_span(span) == [
        RewardPydanticModel(name="acc", value=1.0),
        RewardPydanticModel(name="eff", value=0.5),
    ]
    assert get_reward_value(span) == 1.0


@pytest.mark.parametrize(
    ("reward_value", "kwargs", "error"),
    [
        ({"a": 1.0}, {}, ValueError),
        ({"a": 1.0}, {"primary_key": "b"}, ValueError),
        ({}, {"primary_key": "a"}, ValueError),
        ("0.5", {}, TypeError),
        ({"a": "high"}, {"primary_key": "a"}, TypeError),
        (None, {}, TypeError),
        (0.5, {"attributes": {"agentlightning.reward.0.value": 9}}, ValueError),
    ],
)
def test_invalid_rewards_are_rejected(reward_value: Any, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        emit_reward(reward_value, propagate=False, **kwargs)


def test_annotation_flattens_and_sanitizes() -> None:
    big = "y" * 500_000
    core = emit_annotation(
        {"meta": {"tags": ["a", "b"], "steps": [{"tool": "search"}], "missing": None}, "blob": big, "obj": object()},
        propagate=False,
    )
    assert core.name == "agentlightning.annotation" and core.status.status_code == "OK"
    assert core.attributes["meta.tags"] == ["a", "b"]
    assert core.attributes["meta.steps.0.tool"] == "search"
    assert "meta.missing" not in core.attributes
    assert core.attributes["blob"] == big
    assert json.loads(core.attributes["obj"]).startswith("<object object")
    with pytest.raises(TypeError):
        emit_annotation(["not", "a", "dict"], propagate=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        emit_annotation({"a": {"b": 1}, "a.b": 2}, propagate=False)


def test_tags_in_annotation() -> None:
    core = emit_annotation(make_tag_attributes(["fast", "good"]), propagate=False)
    assert core.attributes == {"agentlightning.tag.0": "fast", "agentlightning.tag.1": "good"}


def test_message_layout() -> None:
    core = emit_message("hello", attributes={"lvl": "info"}, propagate=False)
    assert core.name == "agentlightning.message"
    assert core.attributes == {"lvl": "info", "agentlightning.message.body": "hello"}
    assert get_message_value(as_span(core)) == "hello"
    assert get_message_value(as_span(emit_reward(1.0, propagate=False))) is None


class _Point(BaseModel):
    x: int
    y: int


@pytest.mark.parametrize(
    ("obj", "type_name", "key", "expected"),
    [
        ("text", "str", "literal", "text"),
        (7, "int", "literal", 7),
        (2.5, "float", "literal", 2.5),
        (False, "bool", "literal", False),
        (b"\x00\xff", "bytes", "literal", b"\x00\xff"),
        ({"a": [1, 2]}, "builtins.dict", "json", {"a": [1, 2]}),
        ([1, "two"], "builtins.list", "json", [1, "two"]),
        (None, "builtins.NoneType", "json", None),
        (_Point(x=1, y=2), f"{__name__}._Point", "json", {"x": 1, "y": 2}),
    ],
)
def test_object_layout_and_decoding(obj: Any, type_name: str, key: str, expected: Any) -> None:
    core = emit_object(obj, propagate=False)
    assert core.name == "agentlightning.object"
    assert core.attributes["agentlightning.object.type"] == type_name
    assert f"agentlightning.object.{key}" in core.attributes
    decoded = get_object_value(as_span(core))
    assert decoded == expected and type(decoded) is type(expected)


def test_object_that_is_not_json_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="JSON"):
        emit_object({"handle": object()}, propagate=False)


def test_exception_layout_has_error_status() -> None:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        core = emit_exception(exc, attributes={"where": "tool"}, propagate=False)
    assert core.name == "agentlightning.exception"
    assert core.status.status_code == "ERROR"
    assert core.status.description == "bad input"
    assert core.attributes["exception.type"] == "ValueError"
    assert core.attributes["exception.message"] == "bad input"
    assert core.attributes["exception.escaped"] is True
    assert "raise ValueError" in core.attributes["exception.stacktrace"]
    assert core.attributes["where"] == "tool"
    with pytest.raises(TypeError):
        emit_exception("not an exception", propagate=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "emit",
    [
        lambda: emit_reward(1.0),
        lambda: emit_annotation({"a": 1}),
        lambda: emit_message("m"),
        lambda: emit_object(1),
        lambda: emit_exception(ValueError("x")),
    ],
)
def test_propagate_without_a_tracer_is_a_clear_error(emit: Any) -> None:
    with pytest.raises(RuntimeError, match="no active tracer|there is none") as info:
        emit()
    assert "propagate=False" in str(info.value)


def test_operation_without_a_tracer_is_a_clear_error() -> None:
    @operation
    def f() -> int:
        return 1

    with pytest.raises(RuntimeError, match="propagate=False"):
        f()
    with pytest.raises(RuntimeError, match="propagate=False"), operation(name="x"):
        pass
    # propagate=False works without any tracer.
    with operation(name="x", propagate=False) as op:
        op.set_output(5)
    assert op.get_recorded_span().attributes["agentlightning.operation.output"] == 5


# -- reward readers --------------------------------------------------------------------------------


def _plain_span(name: str, **attributes: Any) -> Span:
    return Span.from_attributes(attributes=attributes, name=name)


def test_reward_readers_understand_legacy_layouts() -> None:
    agentops_dict = _plain_span("reward_fn", **{"agentops.task.output": {"type": "reward", "value": 0.4}})
    agentops_json = _plain_span("reward_fn", **{"agentops.entity.output": json.dumps({"type": "reward", "value": 0.6})})
    v02 = _plain_span("agentlightning.annotation", reward=0.8)
    not_reward = _plain_span("other", **{"agentops.task.output": json.dumps({"type": "text", "value": 1})})
    with pytest.warns(DeprecationWarning):
        assert get_reward_value(agentops_dict) == 0.4
    with pytest.warns(DeprecationWarning):
        assert get_reward_value(agentops_json) == 0.6
    assert get_reward_value(v02) == 0.8
    assert get_reward_value(not_reward) is None
    assert get_reward_value(_plain_span("llm", reward=0.8)) is None  # bare `reward` only on annotation spans


def test_find_rewards() -> None:
    spans = [
        as_span(emit_reward(0.1, propagate=False)),
        as_span(emit_message("m", propagate=False)),
        as_span(emit_reward({"a": 0.7, "b": 0.2}, primary_key="a", propagate=False)),
        as_span(emit_object(3, propagate=False)),
    ]
    assert find_reward_spans(spans) == [spans[0], spans[2]]
    assert [is_reward_span(s) for s in spans] == [True, False, True, False]
    assert find_final_reward(spans) == 0.7
    assert find_final_reward(spans[1:2]) is None
    assert get_rewards_from_span(spans[1]) == []


def test_malformed_reward_attributes_do_not_crash() -> None:
    span = _plain_span("agentlightning.annotation", **{"agentlightning.reward": 1, "agentlightning.reward.0.value": 2})
    assert get_rewards_from_span(span) == []
    partial = _plain_span("agentlightning.annotation", **{"agentlightning.reward.0.name": "x"})
    assert get_rewards_from_span(partial) == []


def test_deprecated_reward_decorator() -> None:
    with pytest.warns(DeprecationWarning, match="emit_reward"):

        @reward
        def score(x: float) -> float:
            return x * 2

    tracer = DummyTracer()

    async def run() -> float:
        async with tracer.trace_context():
            return score(0.25)

    assert asyncio.run(run()) == 0.5
    assert [get_reward_value(s) for s in tracer.get_last_trace()] == [0.5]


def test_deprecated_reward_module_warns_on_import() -> None:
    sys.modules.pop("agentlightning.reward", None)
    with pytest.warns(DeprecationWarning, match="agentlightning.reward is deprecated"):
        module = importlib.import_module("agentlightning.reward")
    assert module.get_reward_value is get_reward_value
    assert module.find_final_reward is find_final_reward


# -- operation -------------------------------------------------------------------------------------


def _run_in_dummy(fn: Any) -> Tuple[Any, List[Span]]:
    tracer = DummyTracer()

    async def run() -> Any:
        async with tracer.trace_context():
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

    result = asyncio.run(run())
    return result, tracer.get_last_trace()


def test_operation_bare_decorator_records_inputs_and_output() -> None:
    @operation
    def add(a: int, b: int) -> int:
        return a + b

    assert add.__name__ == "add"
    result, spans = _run_in_dummy(lambda: add(1, b=2))
    assert result == 3
    (span,) = spans
    assert span.name == "agentlightning.operation"
    assert span.status.status_code == "OK"
    assert span.attributes == {
        "agentlightning.operation.name": "add",
        "agentlightning.operation.input.a": 1,
        "agentlightning.operation.input.b": 2,
        "agentlightning.operation.output": 3,
    }


def test_operation_decorator_with_arguments_and_varargs() -> None:
    @operation(name="search", tool="bing")
    def search(query: str, *pages: int, **options: Any) -> dict[str, Any]:
        return {"hits": [{"url": "u"}], "n": 1}

    _, (span,) = _run_in_dummy(lambda: search("q", 1, 2, lang="en"))
    assert span.attributes == {
        "agentlightning.operation.name": "search",
        "tool": "bing",
        "agentlightning.operation.input.query": "q",
        "agentlightning.operation.input.pages.0": 1,
        "agentlightning.operation.input.pages.1": 2,
        "agentlightning.operation.input.lang": "en",
        "agentlightning.operation.output.hits.0.url": "u",
        "agentlightning.operation.output.n": 1,
    }


def test_operation_on_a_method_skips_self() -> None:
    class Agent:
        @operation
        def act(self, x: int) -> int:
            return x

    _, (span,) = _run_in_dummy(lambda: Agent().act(4))
    assert "agentlightning.operation.input.self" not in span.attributes
    assert span.attributes["agentlightning.operation.input.x"] == 4


def test_operation_async_function_and_exception() -> None:
    @operation
    async def slow(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @operation(name="boom")
    async def boom() -> None:
        await asyncio.sleep(0)
        raise KeyError("nope")

    result, (span,) = _run_in_dummy(lambda: slow(1))
    assert result == 2 and span.attributes["agentlightning.operation.output"] == 2

    async def call_boom() -> None:
        with pytest.raises(KeyError):
            await boom()

    _, (failed,) = _run_in_dummy(call_boom)
    assert failed.status.status_code == "ERROR"
    assert failed.attributes["exception.type"] == "KeyError"
    assert "agentlightning.operation.output" not in failed.attributes


def test_operation_context_manager_forms() -> None:
    def sync_form() -> None:
        with operation(name="plan", step=1) as op:
            op.set_input("goal", detail={"k": "v"})
            op.set_output(["a", "b"])

    async def async_form() -> None:
        async with operation("reflect") as op:
            op.record_attributes({"score": 0.5})

    _, (plan,) = _run_in_dummy(sync_form)
    assert plan.attributes == {
        "agentlightning.operation.name": "plan",
        "step": 1,
        "agentlightning.operation.input.args.0": "goal",
        "agentlightning.operation.input.detail.k": "v",
        "agentlightning.operation.output": ["a", "b"],
    }
    _, (reflect,) = _run_in_dummy(async_form)
    assert reflect.attributes == {"agentlightning.operation.name": "reflect", "score": 0.5}


def test_operation_inputs_that_cannot_be_recorded_do_not_break_the_call() -> None:
    @operation
    def weird(arg: Any) -> str:
        return "ok"

    colliding = {"a": {"b": 1}, "a.b": 2}
    result, (span,) = _run_in_dummy(lambda: weird(colliding))
    assert result == "ok"
    assert json.loads(span.attributes["agentlightning.operation.input.arg"]) == {"a": {"b": 1}, "a.b": 2}


# -- round trip through OtelTracer and a real store ------------------------------------------------


@pytest.mark.asyncio
async def test_emitters_round_trip_through_the_store(store: LightningStore) -> None:
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    rollout_id, attempt_id = await new_attempt(store)

    @operation
    def add(a: int, b: int) -> int:
        with trace_api.get_tracer("llm.lib").start_as_current_span("openai.chat.completion"):
            pass
        return a + b

    async with tracer.trace_context("round-trip", rollout_id=rollout_id, attempt_id=attempt_id):
        assert add(1, 2) == 3
        emit_message("thinking")
        emit_object({"plan": ["a", "b"], "n": None})
        emit_object(b"\x01\x02")
        emit_annotation({"judge": {"verdict": "pass", "notes": None}, "tags": ["x"]})
        try:
            raise RuntimeError("tool failed")
        except RuntimeError as exc:
            emit_exception(exc)
        emit_reward(
            {"acc": 1, "eff": 0.25}, primary_key="acc", attributes=make_link_attributes({"gen_ai.response.id": "r1"})
        )
        emit_reward(0.9)

    spans = await stored(store, rollout_id)
    names = [s.name for s in spans]
    assert names == [
        "agentlightning.operation",
        "openai.chat.completion",
        "agentlightning.message",
        "agentlightning.object",
        "agentlightning.object",
        "agentlightning.annotation",
        "agentlightning.exception",
        "agentlightning.annotation",
        "agentlightning.annotation",
    ]
    op, llm, message, obj, raw, annotation, exception, multi, final = spans
    assert op.attributes == {
        "agentlightning.operation.name": "add",
        "agentlightning.operation.input.a": 1,
        "agentlightning.operation.input.b": 2,
        "agentlightning.operation.output": 3,
    }
    assert op.status.status_code == "OK"
    assert llm.parent_id == op.span_id  # instrumented calls nest under the operation
    assert get_message_value(message) == "thinking"
    assert get_object_value(obj) == {"plan": ["a", "b"], "n": None}
    assert get_object_value(raw) == b"\x01\x02"
    assert annotation.attributes == {"judge.verdict": "pass", "tags": ["x"]}
    assert exception.status.status_code == "ERROR"
    assert exception.attributes["exception.type"] == "RuntimeError"
    assert exception.attributes["exception.message"] == "tool failed"
    assert get_rewards_from_span(multi) == [
        RewardPydanticModel(name="acc", value=1.0),
        RewardPydanticModel(name="eff", value=0.25),
    ]
    assert [(link.key_match, link.value_match) for link in extract_links_from_attributes(multi.attributes)] == [
        ("gen_ai.response.id", "r1")
    ]
    assert get_reward_value(final) == 0.9
    assert find_final_reward(spans) == 0.9
    assert find_reward_spans(spans) == [multi, final]
    assert all(s.rollout_id == rollout_id and s.attempt_id == attempt_id for s in spans)


@pytest.mark.asyncio
async def test_async_operation_round_trip_and_error(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)

    @operation(name="fetch")
    async def fetch(url: str) -> str:
        await asyncio.sleep(0)
        if url == "bad":
            raise ConnectionError("unreachable")
        return "page"

    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        assert await fetch("good") == "page"
        with pytest.raises(ConnectionError):
            await fetch("bad")

    ok, failed = await stored(store, rollout_id)
    assert ok.attributes["agentlightning.operation.output"] == "page"
    assert ok.status.status_code == "OK"
    assert failed.status.status_code == "ERROR"
    assert failed.attributes["agentlightning.operation.input.url"] == "bad"
    assert failed.attributes["exception.type"] == "ConnectionError"


@pytest.mark.asyncio
async def test_odd_attribute_values_are_recorded_not_rejected(store: LightningStore) -> None:
    tracer = OtelTracer()
    rollout_id, attempt_id = await new_attempt(store)
    huge = "z" * 1_000_000
    async with tracer.trace_context(rollout_id=rollout_id, attempt_id=attempt_id, store=store):
        emit_message("m", attributes={"none": None, "nested": {"a": {"b": [1, None]}}, "huge": huge})
        tracer.create_span("raw", attributes={"content": None, "tool_calls": [{"id": "c1"}]})
    message, raw = await stored(store, rollout_id)
    assert "none" not in message.attributes
    assert json.loads(message.attributes["nested"]) == {"a": {"b": [1, None]}}
    assert message.attributes["huge"] == huge
    assert raw.attributes == {"tool_calls": json.dumps([{"id": "c1"}])}


def test_warnings_are_not_errors_here() -> None:
    # Guard: the emitters themselves must not warn on the normal path.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emit_reward(0.5, propagate=False)
        emit_message("x", propagate=False)
        emit_object({"a": 1}, propagate=False)
