"""Finding LLM calls in spans: joining framework spans to proxy spans, and the reward rules."""

from __future__ import annotations

from typing import Any, Dict, Optional

from agentlightning.adapter import RewardMatchPolicy, TracerTraceToTriplet, find_llm_calls
from agentlightning.adapter.llm_calls import assign_rewards
from agentlightning.semconv import AGL_REWARD, GenAIAttributes, LLMCallAttributes
from agentlightning.types import Span


def _span(seq: int, span_id: str, attributes: Dict[str, Any], name: str = "x", parent: Optional[str] = None) -> Span:
    return Span(
        rollout_id="ro",
        attempt_id="at",
        sequence_id=seq,
        trace_id="t" * 32,
        span_id=span_id,
        parent_id=parent,
        name=name,
        attributes=attributes,
    )


def _proxy_call(seq: int, span_id: str, response_id: str, **extra: Any) -> Span:
    return _span(
        seq,
        span_id,
        {
            GenAIAttributes.OPERATION_NAME: "chat",
            GenAIAttributes.RESPONSE_ID: response_id,
            LLMCallAttributes.PROMPT_TOKEN_IDS: [1, 2, 3],
            LLMCallAttributes.RESPONSE_TOKEN_IDS: [4, 5],
            **extra,
        },
        name="chat m",
    )


def _reward(seq: int, value: float) -> Span:
    return _span(
        seq, f"r{seq}", {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": value}, AGL_REWARD
    )


def test_a_framework_span_lends_its_agent_to_the_proxy_span_with_the_same_response_id() -> None:
    graph_node = _span(1, "node", {GenAIAttributes.AGENT_NAME: "planner"})
    framework_llm = _span(
        2, "fw", {GenAIAttributes.OPERATION_NAME: "chat", GenAIAttributes.RESPONSE_ID: "resp-1"}, parent="node"
    )
    spans = [graph_node, framework_llm, _proxy_call(3, "px", "resp-1")]
    (call,) = find_llm_calls(spans)
    assert call.span.span_id == "px"  # the record with token ids wins
    assert call.agent_name == "planner"
    assert call.prompt_token_ids == [1, 2, 3]
    assert find_llm_calls(spans, agent_match="executor") == []


def test_first_occurrence_gives_each_reward_to_the_latest_unrewarded_call_before_it() -> None:
    spans = [
        _proxy_call(1, "a", "r-a"),
        _proxy_call(2, "b", "r-b"),
        _reward(3, 0.25),
        _reward(4, 0.75),
        _proxy_call(5, "c", "r-c"),
    ]
    calls = find_llm_calls(spans)
    final = assign_rewards(calls, spans, RewardMatchPolicy.FIRST_OCCURRENCE)
    assert [c.reward for c in calls] == [0.75, 0.25, None]
    assert final == 0.75
    triplets = TracerTraceToTriplet(final_reward=True).adapt(spans)
    assert [t.reward for t in triplets] == [0.75, 0.25, 0.75]


def test_calls_without_token_ids_are_skipped_unless_asked_for() -> None:
    spans = [_span(1, "fw", {GenAIAttributes.OPERATION_NAME: "chat", GenAIAttributes.RESPONSE_ID: "x"})]
    assert TracerTraceToTriplet().adapt(spans) == []
    (triplet,) = TracerTraceToTriplet(require_token_ids=False).adapt(spans)
    assert triplet.prompt["token_ids"] == []


def test_0_3_token_id_attributes_are_read() -> None:
    span = _span(1, "old", {"prompt_token_ids": [7, 8], "response_token_ids": [9]}, name="openai.chat.completion")
    (triplet,) = TracerTraceToTriplet(llm_call_match=r"openai\.chat\.completion").adapt([span])
    assert triplet.prompt["token_ids"] == [7, 8] and triplet.response["token_ids"] == [9]
