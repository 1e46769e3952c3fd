"""agentlightning.utils.otel: flattening, sanitizing, tags, links."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from pydantic import BaseModel

from agentlightning.semconv import LinkPydanticModel
from agentlightning.types import Span
from agentlightning.utils import (
    extract_links_from_attributes,
    extract_tags_from_attributes,
    filter_and_unflatten_attributes,
    filter_attributes,
    flatten_attributes,
    make_link_attributes,
    make_tag_attributes,
    query_linked_spans,
    sanitize_attribute_value,
    sanitize_attributes,
    unflatten_attributes,
)
from agentlightning.utils.otel import payload_json

# -- flatten / unflatten ---------------------------------------------------------------------------


def test_flatten_nested_dicts_and_lists_of_dicts() -> None:
    nested = {"a": {"b": 1, "c": {"d": "x"}}, "msgs": [{"role": "user"}, {"role": "assistant"}], "top": True}
    assert flatten_attributes(nested) == {
        "a.b": 1,
        "a.c.d": "x",
        "msgs.0.role": "user",
        "msgs.1.role": "assistant",
        "top": True,
    }


def test_flatten_keeps_primitive_lists_unless_asked() -> None:
    assert flatten_attributes({"ids": [1, 2, 3], "t": (1, 2)}) == {"ids": [1, 2, 3], "t": [1, 2]}
    assert flatten_attributes({"ids": [1, 2]}, expand_leaf_lists=True) == {"ids.0": 1, "ids.1": 2}


def test_flatten_mixed_list_indexes_every_item() -> None:
    assert flatten_attributes({"x": [1, {"y": 2}]}) == {"x.0": 1, "x.1.y": 2}


def test_flatten_rejects_collisions_and_bad_keys() -> None:
    with pytest.raises(ValueError, match="a.b"):
        flatten_attributes({"a": {"b": 1}, "a.b": 2})
    with pytest.raises(ValueError):
        flatten_attributes({"": 1})
    with pytest.raises(ValueError):
        flatten_attributes({3: 1})  # type: ignore[dict-item]


def test_unflatten_builds_lists_for_dense_indices() -> None:
    flat = {"r.0.name": "acc", "r.0.value": 1.0, "r.1.name": "eff", "r.1.value": 0.5, "k": "v"}
    assert unflatten_attributes(flat) == {
        "r": [{"name": "acc", "value": 1.0}, {"name": "eff", "value": 0.5}],
        "k": "v",
    }


def test_unflatten_sparse_indices_stay_a_dict() -> None:
    assert unflatten_attributes({"x.0": "a", "x.2": "c"}) == {"x": {"0": "a", "2": "c"}}


def test_unflatten_does_not_touch_dict_values() -> None:
    # A value that is itself a dict with digit keys is data, not structure.
    assert unflatten_attributes({"a.b": {"0": "zero"}}) == {"a": {"b": {"0": "zero"}}}


def test_unflatten_top_level_list() -> None:
    assert unflatten_attributes({"0": "a", "1": "b"}) == ["a", "b"]


def test_unflatten_conflict_is_an_error() -> None:
    with pytest.raises(ValueError, match="both a value and a prefix"):
        unflatten_attributes({"a": 1, "a.b": 2})
    with pytest.raises(ValueError):
        unflatten_attributes({"a.b.c": 2, "a": None})


@pytest.mark.parametrize(
    "nested",
    [
        {"a": {"b": [{"c": 1}, {"d": [1, 2]}]}},
        {"x": "y"},
        {"deep": {"er": {"est": {"v": 0.25}}}},
    ],
)
def test_flatten_unflatten_round_trip(nested: dict[str, Any]) -> None:
    assert unflatten_attributes(flatten_attributes(nested)) == nested


def test_filter_and_unflatten() -> None:
    attrs = {
        "agentlightning.reward.0.name": "primary",
        "agentlightning.reward.0.value": 0.9,
        "agentlightning.rewardish": "not under the prefix",
        "other": 1,
    }
    assert filter_and_unflatten_attributes(attrs, "agentlightning.reward") == [{"name": "primary", "value": 0.9}]
    assert filter_and_unflatten_attributes(attrs, "missing") == {}
    assert filter_and_unflatten_attributes({"p": 3}, "p") == 3
    with pytest.raises(ValueError):
        filter_and_unflatten_attributes({"p": 3, "p.q": 4}, "p")
    assert filter_attributes(attrs, "agentlightning.reward") == {
        "agentlightning.reward.0.name": "primary",
        "agentlightning.reward.0.value": 0.9,
    }


# -- sanitize --------------------------------------------------------------------------------------


class _Model(BaseModel):
    x: int
    y: str


@dataclass
class _DC:
    a: int


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_sanitize_passes_legal_values_through() -> None:
    attrs = {"s": "x", "i": 3, "f": 1.5, "b": False, "ls": ["a", "b"], "li": [1, 2], "lb": [True, False]}
    assert sanitize_attributes(attrs) == attrs


def test_sanitize_drops_none_and_keeps_the_rest() -> None:
    assert sanitize_attributes({"content": None, "role": "assistant"}) == {"role": "assistant"}
    assert sanitize_attributes(None) == {}


def test_sanitize_dicts_and_mixed_lists_become_json() -> None:
    clean = sanitize_attributes({"d": {"k": [1, None]}, "mixed": [1, "a"], "lod": [{"a": 1}]})
    assert json.loads(clean["d"]) == {"k": [1, None]}
    assert json.loads(clean["mixed"]) == [1, "a"]
    assert json.loads(clean["lod"]) == [{"a": 1}]


def test_sanitize_numbers() -> None:
    assert sanitize_attribute_value([1, 2.5, None]) == [1.0, 2.5, None]
    assert sanitize_attribute_value(2**70) == str(2**70)
    assert sanitize_attribute_value([2**70, 1]) == json.dumps([2**70, 1])
    assert math.isnan(sanitize_attribute_value(float("nan")))  # type: ignore[arg-type]
    # NaN inside a JSON payload stays readable text rather than invalid JSON.
    assert json.loads(sanitize_attribute_value({"v": float("inf")})) == {"v": "inf"}  # type: ignore[arg-type]


def test_sanitize_objects_bytes_and_keys() -> None:
    assert json.loads(sanitize_attribute_value(_Model(x=1, y="z"))) == {"x": 1, "y": "z"}  # type: ignore[arg-type]
    assert json.loads(sanitize_attribute_value(_DC(a=2))) == {"a": 2}  # type: ignore[arg-type]
    assert json.loads(sanitize_attribute_value(_Opaque())) == "<opaque>"  # type: ignore[arg-type]
    assert sanitize_attribute_value(b"hi") == "hi"
    assert sanitize_attribute_value(b"\xff\x00") == "base64:/wA="
    assert sanitize_attributes({1: "a"}) == {"1": "a"}
    assert sanitize_attribute_value((1, 2)) == [1, 2]


def test_sanitize_keeps_huge_payloads_unless_limited() -> None:
    big = "x" * 2_000_000
    assert sanitize_attributes({"big": big})["big"] == big
    short = sanitize_attributes({"big": big}, max_length=10)["big"]
    assert short.startswith("x" * 10) and "truncated 1999990 chars" in short


def test_sanitized_values_are_accepted_by_opentelemetry() -> None:
    weird = {"none": None, "d": {"a": {"b": None}}, "mixed": [1, "x", None], "obj": _Opaque(), "big": 2**80}
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("s", attributes=sanitize_attributes(weird))
    span.end()
    assert isinstance(span, ReadableSpan)
    assert set(span.attributes or {}) == {"d", "mixed", "obj", "big"}


# -- tags and links --------------------------------------------------------------------------------


def test_payload_json_is_plain_json_with_objects_converted() -> None:
    class Message(BaseModel):
        role: str
        content: str

    @dataclass
    class Call:
        name: str

    payload = {"messages": [Message(role="user", content="héllo")], "call": Call("calc"), "raw": b"\x00ok", "n": 1.5}
    text = payload_json(payload)
    assert "héllo" in text  # not escaped: payloads stay readable and short
    assert json.loads(text) == {
        "messages": [{"role": "user", "content": "héllo"}],
        "call": {"name": "calc"},
        "raw": "\x00ok",
        "n": 1.5,
    }


def test_payload_json_never_raises_on_what_json_refuses() -> None:
    assert json.loads(payload_json({1: "one", (2, 3): "pair"})) == {"1": "one", "(2, 3)": "pair"}
    assert payload_json(None) == "null"
    assert json.loads(payload_json({"big": 2**70})) == {"big": 2**70}  # beyond 64 bits
    deep: object = "leaf"
    for _ in range(300):  # deeper than the fast encoder nests
        deep = [deep]
    assert payload_json(deep).count("[") == 300


def test_tags_round_trip() -> None:
    attrs = make_tag_attributes(["fast", "good"])
    assert attrs == {"agentlightning.tag.0": "fast", "agentlightning.tag.1": "good"}
    assert extract_tags_from_attributes({**attrs, "x": 1}) == ["fast", "good"]
    assert extract_tags_from_attributes({}) == []


def test_links_round_trip() -> None:
    attrs = make_link_attributes({"gen_ai.response.id": "r1", "span_id": "abc"})
    assert attrs == {
        "agentlightning.link.0.key_match": "gen_ai.response.id",
        "agentlightning.link.0.value_match": "r1",
        "agentlightning.link.1.key_match": "span_id",
        "agentlightning.link.1.value_match": "abc",
    }
    links = extract_links_from_attributes(attrs)
    assert links == [
        LinkPydanticModel(key_match="gen_ai.response.id", value_match="r1"),
        LinkPydanticModel(key_match="span_id", value_match="abc"),
    ]


def _span(span_id: str, trace_id: str = "t" * 32, attributes: dict[str, Any] | None = None) -> Span:
    return Span.from_attributes(attributes=attributes or {}, span_id=span_id, trace_id=trace_id)


def test_query_linked_spans_by_attribute_and_ids() -> None:
    a = _span("a" * 16, attributes={"gen_ai.response.id": "r1", "n": 7})
    b = _span("b" * 16, attributes={"gen_ai.response.id": "r2"})
    c = _span("c" * 16, trace_id="c" * 32)
    spans = [a, b, c]
    assert query_linked_spans(spans, [LinkPydanticModel(key_match="gen_ai.response.id", value_match="r2")]) == [b]
    assert query_linked_spans(spans, [{"key_match": "span_id", "value_match": "c" * 16}]) == [c]
    assert query_linked_spans(spans, [{"key_match": "trace_id", "value_match": "t" * 32}]) == [a, b]
    # Non-string attributes compare as text; all links must hold.
    both = [{"key_match": "gen_ai.response.id", "value_match": "r1"}, {"key_match": "n", "value_match": "7"}]
    assert query_linked_spans(spans, both) == [a]
    assert query_linked_spans(spans, [both[0], {"key_match": "n", "value_match": "8"}]) == []
    assert query_linked_spans(spans, []) == []


def test_query_linked_spans_accepts_opentelemetry_spans() -> None:
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("s", attributes={"k": "v"})
    span.end()
    assert isinstance(span, ReadableSpan)
    span_id = format(span.get_span_context().span_id, "016x")
    assert query_linked_spans([span], [{"key_match": "span_id", "value_match": span_id}]) == [span]
    assert query_linked_spans([span], [{"key_match": "k", "value_match": "v"}]) == [span]
    assert query_linked_spans([span], [{"key_match": "k", "value_match": "w"}]) == []
