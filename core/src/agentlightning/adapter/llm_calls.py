"""Finding the LLM calls of a rollout in its spans, with their token ids, agent and reward.

A call recorded by both the proxy (exact token ids) and a framework adapter (which agent) is joined
by the provider's response id (``gen_ai.response.id``): the proxy's span is the call, the adapter's
lends it the agent name. Order is the store's ``sequence_id``, never timestamps (the proxy reserves
a call's id before forwarding it, so a reward emitted after the answer sorts after the call).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

from agentlightning.emitter.reward import get_reward_value
from agentlightning.semconv import GenAIAttributes, LLMCallAttributes
from agentlightning.types import Span

__all__ = ["LLMCall", "RewardMatchPolicy", "assign_rewards", "find_llm_calls", "agent_name_of"]

LLM_OPERATIONS = ("chat", "text_completion")
# Keys of the 0.3 line, read so that traces recorded by older tracers still adapt.
_LEGACY_PROMPT_IDS = ("prompt_token_ids", "llm.hosted_vllm.prompt_token_ids")
_LEGACY_RESPONSE_IDS = ("response_token_ids", "llm.hosted_vllm.response_token_ids")


class RewardMatchPolicy:
    """How reward spans are assigned to LLM calls."""

    FIRST_OCCURRENCE = "first_occurrence"
    """Each reward goes to the latest call before it (by sequence id) that has no reward yet."""
    FINAL = "final"
    """Every call gets the rollout's last reward (the usual choice for outcome-reward RL)."""


@dataclass
class LLMCall:
    """One LLM call found in the spans."""

    span: Span
    prompt_token_ids: Optional[List[int]]
    response_token_ids: Optional[List[int]]
    logprobs: Optional[List[float]]
    request: Dict[str, Any]
    response: Dict[str, Any]
    agent_name: Optional[str] = None
    reward: Optional[float] = None
    token_ids_source: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def response_id(self) -> Optional[str]:
        value = self.span.attributes.get(GenAIAttributes.RESPONSE_ID)
        return value if isinstance(value, str) else None

    @property
    def has_token_ids(self) -> bool:
        return bool(self.prompt_token_ids) and self.response_token_ids is not None

    @property
    def response_message(self) -> Dict[str, Any]:
        """The first choice as a chat message (text completions become an assistant message)."""
        choices = self.response.get("choices") or []
        first = choices[0] if choices and isinstance(choices[0], dict) else {}
        if isinstance(first.get("message"), dict):
            return dict(first["message"])
        return {"role": "assistant", "content": first.get("text")}


def _json_attr(span: Span, key: str) -> Dict[str, Any]:
    raw = span.attributes.get(key)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _int_list(value: Any) -> Optional[List[int]]:
    if isinstance(value, str):  # some exporters stringify lists
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def _first(attributes: Dict[str, Any], keys: Iterable[str]) -> Optional[List[int]]:
    for key in keys:
        ids = _int_list(attributes.get(key))
        if ids is not None:
            return ids
    return None


def _is_llm_span(span: Span, name_pattern: Optional[re.Pattern[str]]) -> bool:
    if name_pattern is not None:
        return name_pattern.search(span.name) is not None
    return span.attributes.get(GenAIAttributes.OPERATION_NAME) in LLM_OPERATIONS


def _to_call(span: Span) -> LLMCall:
    attributes = span.attributes
    logprobs = attributes.get(LLMCallAttributes.RESPONSE_LOGPROBS)
    return LLMCall(
        span=span,
        prompt_token_ids=_first(attributes, (LLMCallAttributes.PROMPT_TOKEN_IDS, *_LEGACY_PROMPT_IDS)),
        response_token_ids=_first(attributes, (LLMCallAttributes.RESPONSE_TOKEN_IDS, *_LEGACY_RESPONSE_IDS)),
        logprobs=[float(v) for v in logprobs] if isinstance(logprobs, (list, tuple)) else None,
        request=_json_attr(span, LLMCallAttributes.REQUEST),
        response=_json_attr(span, LLMCallAttributes.RESPONSE),
        token_ids_source=attributes.get(LLMCallAttributes.TOKEN_IDS_SOURCE),
    )


def _ordered(spans: Sequence[Span]) -> List[Span]:
    return sorted(spans, key=lambda s: (s.sequence_id, s.start_time or 0.0))


def agent_name_of(span: Span, by_id: Dict[str, Span]) -> Optional[str]:
    """The nearest agent name on ``span`` or its ancestors."""
    seen: set[str] = set()
    current: Optional[Span] = span
    while current is not None and current.span_id not in seen:
        seen.add(current.span_id)
        name = current.attributes.get(GenAIAttributes.AGENT_NAME)
        if isinstance(name, str) and name:
            return name
        current = by_id.get(current.parent_id) if current.parent_id else None
    return None


def find_llm_calls(
    spans: Sequence[Span],
    *,
    llm_call_match: Optional[str] = None,
    agent_match: Optional[str] = None,
    require_token_ids: bool = False,
) -> List[LLMCall]:
    """The LLM calls among ``spans`` in sequence order, one per provider response id.

    ``llm_call_match`` is a regex on span names (default: spans with a ``gen_ai.operation.name``
    of chat or text_completion); ``agent_match`` a regex the call's agent name must match
    (``None``: every call, named or not).
    """
    name_pattern = re.compile(llm_call_match) if llm_call_match else None
    agent_pattern = re.compile(agent_match) if agent_match else None
    ordered = _ordered(spans)
    by_id = {s.span_id: s for s in ordered}
    by_response_id: Dict[str, List[Span]] = {}
    for span in ordered:
        response_id = span.attributes.get(GenAIAttributes.RESPONSE_ID)
        if isinstance(response_id, str):
            by_response_id.setdefault(response_id, []).append(span)

    calls: List[LLMCall] = []
    chosen: Dict[str, int] = {}  # response id -> index in calls
    for span in ordered:
        if not _is_llm_span(span, name_pattern):
            continue
        call = _to_call(span)
        call.agent_name = agent_name_of(span, by_id)
        if call.agent_name is None and call.response_id:
            for twin in by_response_id.get(call.response_id, []):
                if twin is not span:
                    call.agent_name = agent_name_of(twin, by_id)
                    if call.agent_name:
                        break
        response_id = call.response_id
        if response_id is not None and response_id in chosen:
            # The same call recorded twice: keep the record with token ids.
            index = chosen[response_id]
            if call.has_token_ids and not calls[index].has_token_ids:
                call.agent_name = call.agent_name or calls[index].agent_name
                calls[index] = call
            continue
        if response_id is not None:
            chosen[response_id] = len(calls)
        calls.append(call)

    if agent_pattern is not None:
        calls = [c for c in calls if c.agent_name is not None and agent_pattern.search(c.agent_name)]
    if require_token_ids:
        calls = [c for c in calls if c.has_token_ids]
    return calls


def assign_rewards(
    calls: List[LLMCall], spans: Sequence[Span], policy: str = RewardMatchPolicy.FIRST_OCCURRENCE
) -> Optional[float]:
    """Set ``call.reward`` per ``policy``; returns the rollout's final (last) reward.

    Reward spans are read with :func:`~agentlightning.emitter.reward.get_reward_value`; a reward
    recorded before any call is kept as the final reward but given to no call under
    ``first_occurrence``.
    """
    if policy not in (RewardMatchPolicy.FIRST_OCCURRENCE, RewardMatchPolicy.FINAL):
        raise ValueError(f"unknown reward match policy {policy!r}; use 'first_occurrence' or 'final'")
    call_ids = {id(c.span) for c in calls}
    rewards = [
        (span.sequence_id, value)
        for span in _ordered(spans)
        if id(span) not in call_ids and (value := get_reward_value(span)) is not None
    ]
    final = rewards[-1][1] if rewards else None
    if policy == RewardMatchPolicy.FINAL:
        for call in calls:
            call.reward = final
        return final
    for sequence_id, value in rewards:
        for call in reversed(calls):
            if call.span.sequence_id < sequence_id and call.reward is None:
                call.reward = value
                break
    return final
