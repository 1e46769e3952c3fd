"""Spans: sequence ids, duplicates, rejected batches, queries, payloads that agents really send."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from store_helpers import add_spans, make_span

from agentlightning.errors import AttemptNotFoundError, RolloutNotFoundError
from agentlightning.store.base import LightningStore
from agentlightning.types import AttemptedRollout, Span


async def _running(store: LightningStore) -> AttemptedRollout:
    return await store.start_rollout(input="task")


async def test_sequence_ids_count_per_rollout_across_attempts(store: LightningStore) -> None:
    a = await _running(store)
    b = await _running(store)
    ids_a1 = [await store.get_next_span_sequence_id(a.rollout_id, a.attempt.attempt_id) for _ in range(3)]
    assert ids_a1 == [1, 2, 3]
    assert await store.get_next_span_sequence_id(b.rollout_id, b.attempt.attempt_id) == 1  # independent rollout
    second = await store.start_attempt(a.rollout_id)
    ids_a2 = [await store.get_next_span_sequence_id(a.rollout_id, second.attempt.attempt_id) for _ in range(2)]
    assert ids_a2 == [4, 5]  # shared by the rollout's attempts
    many = await store.get_many_span_sequence_ids(
        [(a.rollout_id, a.attempt.attempt_id), (b.rollout_id, b.attempt.attempt_id), (a.rollout_id, "latest")]
    )
    assert many == [6, 2, 7]


async def test_explicit_higher_sequence_id_bumps_the_counter(store: LightningStore) -> None:
    r = await _running(store)
    rid, aid = r.rollout_id, r.attempt.attempt_id
    assert await store.get_next_span_sequence_id(rid, aid) == 1
    await store.add_span(make_span(rid, aid, 100))
    assert await store.get_next_span_sequence_id(rid, aid) == 101
    await store.add_many_spans([make_span(rid, aid, 150), make_span(rid, aid, 120)])
    assert await store.get_next_span_sequence_id(rid, aid) == 151
    await store.add_span(make_span(rid, aid, 5))  # a lower explicit id never lowers the counter
    assert await store.get_next_span_sequence_id(rid, aid) == 152


async def test_added_span_is_returned_and_stored_intact(store: LightningStore) -> None:
    r = await _running(store)
    span = make_span(r.rollout_id, r.attempt.attempt_id, 1, name="llm", attributes={"k": "v", "n": 3})
    added = await store.add_span(span)
    assert added is not None and added.model_dump() == span.model_dump()
    stored = await store.query_spans(r.rollout_id)
    assert len(stored) == 1 and stored[0].model_dump() == span.model_dump()
    assert (await store.statistics())["total_spans"] == 1


async def test_duplicate_span_id_is_skipped_and_nothing_else_is_lost(store: LightningStore) -> None:
    r = await _running(store)
    rid, aid = r.rollout_id, r.attempt.attempt_id
    original = make_span(rid, aid, 1, span_id="aaaa000000000001", name="original")
    assert await store.add_span(original) is not None
    assert await store.add_span(make_span(rid, aid, 2, span_id="aaaa000000000001", name="copy")) is None

    batch = [
        make_span(rid, aid, 3, span_id="bbbb000000000001"),
        make_span(rid, aid, 4, span_id="aaaa000000000001", name="copy again"),
        make_span(rid, aid, 5, span_id="bbbb000000000002"),
        make_span(rid, aid, 6, span_id="bbbb000000000001", name="duplicate inside the batch"),
    ]
    added = await store.add_many_spans(batch)
    assert [s.span_id for s in added] == ["bbbb000000000001", "bbbb000000000002"]
    assert [s.sequence_id for s in added] == [3, 5]

    stored = await store.query_spans(rid)
    assert [(s.span_id, s.name) for s in stored] == [
        ("aaaa000000000001", "original"),
        ("bbbb000000000001", "step"),
        ("bbbb000000000002", "step"),
    ]
    assert (await store.statistics())["total_spans"] == 3


async def test_same_span_id_in_another_attempt_is_not_a_duplicate(store: LightningStore) -> None:
    r = await _running(store)
    second = await store.start_attempt(r.rollout_id)
    assert await store.add_span(make_span(r.rollout_id, r.attempt.attempt_id, 1, span_id="cccc000000000001"))
    assert await store.add_span(make_span(r.rollout_id, second.attempt.attempt_id, 2, span_id="cccc000000000001"))
    assert (await store.query_spans(r.rollout_id)).total == 2


@pytest.mark.parametrize("bad", ["rollout", "attempt"])
async def test_span_for_unknown_ids_rejects_the_whole_batch(store: LightningStore, bad: str) -> None:
    r = await _running(store)
    rid, aid = r.rollout_id, r.attempt.attempt_id
    await add_spans(store, rid, aid, 1)
    before = await store.get_latest_attempt(rid)
    if bad == "rollout":
        stray = make_span("ro-doesnotexist", aid, 50)
        error: type = RolloutNotFoundError
        missing = "ro-doesnotexist"
    else:
        stray = make_span(rid, "at-doesnotexist", 50)
        error = AttemptNotFoundError
        missing = "at-doesnotexist"
    good = [make_span(rid, aid, 40), make_span(rid, aid, 41)]

    with pytest.raises(error) as info:
        await store.add_many_spans([good[0], stray, good[1]])
    assert missing in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(error):
        await store.add_span(stray)

    stored = await store.query_spans(rid)
    assert stored.total == 1  # nothing from the rejected batch
    assert (await store.statistics())["total_spans"] == 1
    assert await store.get_next_span_sequence_id(rid, aid) == 2  # the counter did not see 40/41/50
    after = await store.get_latest_attempt(rid)
    assert after is not None and before is not None
    assert after.last_heartbeat_time == before.last_heartbeat_time  # not even a heartbeat
    # the good spans can be sent again
    assert len(await store.add_many_spans(good)) == 2


async def test_add_otel_span(store: LightningStore) -> None:
    r = await _running(store)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child") as child:
        child.set_attribute("gen_ai.request.model", "tiny")
    finished: List[ReadableSpan] = list(exporter.get_finished_spans())
    child_span = await store.add_otel_span(r.rollout_id, r.attempt.attempt_id, finished[0])
    parent_span = await store.add_otel_span(r.rollout_id, r.attempt.attempt_id, finished[1], sequence_id=10)
    assert child_span is not None and parent_span is not None
    assert child_span.sequence_id == 1 and parent_span.sequence_id == 10
    stored = await store.query_spans(r.rollout_id)
    assert [s.name for s in stored] == ["child", "parent"]
    assert stored[0].parent_id == stored[1].span_id
    assert stored[0].attributes == {"gen_ai.request.model": "tiny"}
    rollout = await store.get_rollout_by_id(r.rollout_id)
    assert rollout is not None and rollout.status == "running"
    provider.shutdown()


async def _three_attempts_with_spans(store: LightningStore) -> Dict[str, Any]:
    """Rollout with two attempts (3 + 2 spans), plus another rollout with spans of its own."""
    r = await _running(store)
    rid, a1 = r.rollout_id, r.attempt.attempt_id
    trace = "t" * 32
    spans1 = [
        make_span(rid, a1, 1, name="agent.run", span_id="s1", trace_id=trace),
        make_span(rid, a1, 2, name="openai.chat.completion", span_id="s2", trace_id=trace, parent_id="s1"),
        make_span(rid, a1, 3, name="tool.search", span_id="s3", trace_id=trace, parent_id="s1"),
    ]
    await store.add_many_spans(spans1)
    a2 = (await store.start_attempt(rid)).attempt.attempt_id
    spans2 = [
        make_span(rid, a2, 4, name="agent.run", span_id="s4", trace_id="u" * 32),
        make_span(rid, a2, 5, name="openai.chat.completion", span_id="s5", trace_id="u" * 32, parent_id="s4"),
    ]
    await store.add_many_spans(spans2)
    other = await _running(store)
    await store.add_span(make_span(other.rollout_id, other.attempt.attempt_id, 1, name="agent.run", trace_id=trace))
    return {"rid": rid, "a1": a1, "a2": a2, "trace": trace, "other": other.rollout_id}


async def test_query_spans_by_attempt(store: LightningStore) -> None:
    ctx = await _three_attempts_with_spans(store)
    rid = ctx["rid"]
    everything = await store.query_spans(rid)
    assert [s.span_id for s in everything] == ["s1", "s2", "s3", "s4", "s5"]
    assert everything.total == 5
    explicit_none = await store.query_spans(rid, None)
    assert [s.span_id for s in explicit_none] == ["s1", "s2", "s3", "s4", "s5"]
    latest = await store.query_spans(rid, "latest")
    assert [s.span_id for s in latest] == ["s4", "s5"]
    first = await store.query_spans(rid, ctx["a1"])
    assert [s.span_id for s in first] == ["s1", "s2", "s3"]
    assert all(s.attempt_id == ctx["a1"] for s in first)
    with pytest.raises(AttemptNotFoundError):
        await store.query_spans(rid, "at-unknown")
    # a rollout without attempts: "latest" is empty, not an error
    queued = await store.enqueue_rollout(input=1)
    empty = await store.query_spans(queued.rollout_id, "latest")
    assert len(empty) == 0 and empty.total == 0
    assert (await store.query_spans(queued.rollout_id)).total == 0


async def test_query_spans_filters(store: LightningStore) -> None:
    ctx = await _three_attempts_with_spans(store)
    rid = ctx["rid"]

    async def ids(**kwargs: Any) -> List[str]:
        return [s.span_id for s in await store.query_spans(rid, **kwargs)]

    assert await ids(name="agent.run") == ["s1", "s4"]
    assert await ids(name_contains="openai") == ["s2", "s5"]
    assert await ids(trace_id=ctx["trace"]) == ["s1", "s2", "s3"]  # other rollout's span with that trace excluded
    assert await ids(trace_id_contains="uuu") == ["s4", "s5"]
    assert await ids(span_id="s3") == ["s3"]
    assert await ids(span_id_contains="s") == ["s1", "s2", "s3", "s4", "s5"]
    assert await ids(parent_id="s1") == ["s2", "s3"]
    assert await ids(parent_id_contains="4") == ["s5"]
    assert await ids(name="agent.run", trace_id=ctx["trace"]) == ["s1"]  # and
    assert await ids(name="nothing") == []
    # or: either condition, still only this rollout's spans
    assert await ids(name="tool.search", parent_id="s4", filter_logic="or") == ["s3", "s5"]
    assert await ids(name="agent.run", trace_id=ctx["trace"], filter_logic="or") == ["s1", "s2", "s3", "s4"]
    assert await ids(attempt_id="latest", name="agent.run", span_id="s2", filter_logic="or") == ["s4"]


async def test_query_spans_sort_and_pagination(store: LightningStore) -> None:
    ctx = await _three_attempts_with_spans(store)
    rid = ctx["rid"]
    desc = await store.query_spans(rid, sort_order="desc")
    assert [s.sequence_id for s in desc] == [5, 4, 3, 2, 1]
    by_name = await store.query_spans(rid, sort_by="name", sort_order="asc", attempt_id=ctx["a1"])
    assert [s.name for s in by_name] == ["agent.run", "openai.chat.completion", "tool.search"]
    page = await store.query_spans(rid, limit=2, offset=1)
    assert [s.span_id for s in page] == ["s2", "s3"]
    assert (page.limit, page.offset, page.total) == (2, 1, 5)
    tail = await store.query_spans(rid, limit=10, offset=4)
    assert [s.span_id for s in tail] == ["s5"] and tail.total == 5
    assert len(await store.query_spans(rid, offset=9)) == 0
    none = await store.query_spans(rid, limit=0)
    assert len(none) == 0 and none.total == 5
    filtered_page = await store.query_spans(rid, name="agent.run", limit=1, offset=1)
    assert [s.span_id for s in filtered_page] == ["s4"] and filtered_page.total == 2


async def test_query_spans_sort_by_start_time(store: LightningStore) -> None:
    r = await _running(store)
    rid, aid = r.rollout_id, r.attempt.attempt_id
    await store.add_many_spans(
        [
            make_span(rid, aid, 1, span_id="late", start_time=300.0),
            make_span(rid, aid, 2, span_id="early", start_time=100.0),
            make_span(rid, aid, 3, span_id="middle", start_time=200.0),
        ]
    )
    asc = await store.query_spans(rid, sort_by="start_time")
    assert [s.span_id for s in asc] == ["early", "middle", "late"]
    desc = await store.query_spans(rid, sort_by="start_time", sort_order="desc")
    assert [s.span_id for s in desc] == ["late", "middle", "early"]


async def test_spans_with_none_values_and_nested_payloads_round_trip(store: LightningStore) -> None:
    r = await _running(store)
    attributes = {
        "gen_ai.prompt.0.content": None,  # tool-call messages with null content
        "agentlightning.reward.0.value": 0.5,
        "flag": True,
        "count": 0,
        "list": [1, None, "two", 3.5],
        "nested": {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}]},
        "unicode": "h\u00e9llo \u4e16\u754c \U0001f680",
        "empty": "",
    }
    span = make_span(r.rollout_id, r.attempt.attempt_id, 1, attributes=attributes)
    assert await store.add_span(span) is not None
    stored = (await store.query_spans(r.rollout_id))[0]
    assert stored.attributes == attributes
    assert stored.model_dump() == span.model_dump()


async def test_one_megabyte_attribute_round_trips(store: LightningStore) -> None:
    r = await _running(store)
    big = "x" * (1 << 20)
    payload = [{"token_ids": list(range(2000))}]
    span = make_span(r.rollout_id, r.attempt.attempt_id, 1, attributes={"big": big, "payload": payload})
    assert await store.add_span(span) is not None
    stored = (await store.query_spans(r.rollout_id))[0]
    assert stored.attributes["big"] == big
    assert stored.attributes["payload"] == payload


async def test_returned_spans_are_snapshots(store: LightningStore) -> None:
    r = await _running(store)
    span = make_span(r.rollout_id, r.attempt.attempt_id, 1, attributes={"a": 1})
    await store.add_span(span)
    span.attributes["a"] = "changed by the caller after add_span"
    span.name = "renamed"
    got = (await store.query_spans(r.rollout_id))[0]
    got.attributes["b"] = 2
    got.name = "renamed again"
    again = (await store.query_spans(r.rollout_id))[0]
    assert again.attributes == {"a": 1} and again.name == "step"


async def test_spans_of_several_rollouts_stay_apart(store: LightningStore) -> None:
    rollouts = [await _running(store) for _ in range(3)]
    for index, r in enumerate(rollouts):
        await add_spans(store, r.rollout_id, r.attempt.attempt_id, index + 1)
    for index, r in enumerate(rollouts):
        spans = await store.query_spans(r.rollout_id)
        assert [s.sequence_id for s in spans] == list(range(1, index + 2))
        assert all(isinstance(s, Span) and s.rollout_id == r.rollout_id for s in spans)
    assert (await store.statistics())["total_spans"] == 6
