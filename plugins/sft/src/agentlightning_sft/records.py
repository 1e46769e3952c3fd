"""Which rollouts SFT learns from, and the fine-tuning records it builds from their spans.

Pure Python (no torch): the ``agl export-dataset`` command and the tests use it without loading a model.

**Chat records** (``record_format="messages"``, the exported format) are OpenAI chat fine-tuning
records, one per LLM call::

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": null,
                   "tool_calls": [{"id": "call_1", "type": "function",
                                   "function": {"name": "calculator", "arguments": "{\\"expression\\": \\"2+2\\"}"}}]}],
     "tools": [{"type": "function", "function": {"name": "calculator", "parameters": {...}}}]}

The prompt is every message but the last, exactly as the agent sent it; the last message is the
model's answer, the only part trained on. ``tools`` is present when the call offered tools.
:func:`check_chat_record` states the rules; a record that breaks them is not built.

**Token records** (``record_format="tokens"``) are the exact token ids of a trajectory
(:class:`~agentlightning.adapter.TraceToTokenSequences`): ``{"input_ids": [...], "completion_mask": [...]}``
with ``completion_mask`` 1 on the tokens the model produced and 0 on the prompt, tool results and
other context.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from agentlightning.adapter import TokenSequence, TraceToMessages, TraceToTokenSequences
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.types import Rollout, Span

__all__ = [
    "BuiltRecords",
    "ExclusionReason",
    "FinishedRollout",
    "InvalidRecordError",
    "RolloutFilter",
    "build_chat_records",
    "build_token_records",
    "check_chat_record",
    "reward_at_least",
    "to_trl_example",
]

ROLES = ("system", "developer", "user", "assistant", "tool")


class ExclusionReason:
    """Why a record was not built (the keys of a round's ``excluded`` metrics)."""

    NO_RESPONSE = "no_response"
    """The call has no answer: it failed, or the model returned neither text nor tool calls."""
    BROKEN_TOOL_CALL = "broken_tool_call"
    """A tool call without a function name, with arguments that are not a JSON object, or naming a tool
    the call did not offer."""
    BAD_MESSAGES = "bad_messages"
    """The prompt is not a list of chat messages with known roles and text content."""
    NO_TOKEN_IDS = "no_token_ids"
    """(token records) The call was recorded without the engine's token ids."""
    NO_MODEL_TOKENS = "no_model_tokens"
    """(token records) The sequence has no token the model produced."""


class InvalidRecordError(ValueError):
    """A chat record breaks the record format; ``reason`` is an :class:`ExclusionReason` value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FinishedRollout:
    """What a filter sees: the rollout (its ``input`` is the task), its final reward, and its spans."""

    rollout: Rollout
    reward: Optional[float]
    spans: Sequence[Span]


RolloutFilter = Callable[[FinishedRollout], bool]
"""Returns True for the rollouts to learn from. Only succeeded rollouts are offered to it."""


def reward_at_least(threshold: float) -> RolloutFilter:
    """The default filter: rollouts whose final reward is at least ``threshold`` (no reward: rejected)."""

    def passes(finished: FinishedRollout) -> bool:
        return finished.reward is not None and finished.reward >= threshold

    passes.__name__ = f"reward_at_least_{threshold:g}"
    return passes


@dataclass
class BuiltRecords:
    """The records built from some rollouts, and how many could not be built, by reason."""

    records: List[Dict[str, Any]] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)

    def extend(self, other: "BuiltRecords") -> None:
        self.records.extend(other.records)
        self.excluded.update(other.excluded)


# ------------------------------------------------------------------------------------ chat records


def _text(content: Any, where: str) -> Optional[str]:
    """Message content as text: strings pass, lists of text parts are joined, anything else is refused."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise InvalidRecordError(ExclusionReason.BAD_MESSAGES, f"{where}: content must be text, got {content!r:.80}")


def _tool_names(tools: Any) -> Optional[set[str]]:
    if not isinstance(tools, list):
        return None
    names = {
        t.get("function", {}).get("name") for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }
    return {n for n in names if isinstance(n, str)}


def _tool_call(call: Any, where: str, offered: Optional[set[str]]) -> Dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidRecordError(ExclusionReason.BROKEN_TOOL_CALL, f"{where}: a tool call without a function name")
    assert isinstance(function, dict)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            parsed = None
    else:
        parsed = arguments
    if not isinstance(parsed, dict):
        raise InvalidRecordError(
            ExclusionReason.BROKEN_TOOL_CALL,
            f"{where}: the arguments of tool call {name!r} are not a JSON object: {arguments!r:.80}",
        )
    if offered is not None and name not in offered:
        raise InvalidRecordError(
            ExclusionReason.BROKEN_TOOL_CALL, f"{where}: tool call {name!r} names no offered tool {sorted(offered)}"
        )
    return {
        "id": str(call.get("id") or f"call_{name}"),
        "type": "function",
        "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
    }


def check_chat_record(record: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a chat record and return it in canonical form; raise :class:`InvalidRecordError` if broken.

    Rules: ``messages`` is a non-empty list of objects with a known ``role`` (system, developer, user,
    assistant, tool) and text content (a string, or a list of text parts, joined); the last message is
    the assistant's answer, with text or at least one tool call; every tool call (in any assistant
    message) names a function, its ``arguments`` are a JSON object (kept as JSON text), and, when the
    record lists ``tools``, names one of them. Canonical form keeps ``role``, ``content``, ``tool_calls``,
    ``tool_call_id`` and ``name`` of each message, and ``tools``; other keys (``metadata``) are dropped.
    """
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRecordError(ExclusionReason.BAD_MESSAGES, "a record needs a non-empty list of messages")
    tools = record.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise InvalidRecordError(ExclusionReason.BAD_MESSAGES, f"tools must be a list of objects, got {tools!r:.80}")
    offered = _tool_names(tools) if tools else None
    canonical: List[Dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"message {index}"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else message
            raise InvalidRecordError(ExclusionReason.BAD_MESSAGES, f"{where}: unknown role {role!r:.40}")
        clean: Dict[str, Any] = {"role": message["role"], "content": _text(message.get("content"), where)}
        if message.get("tool_calls"):
            if message["role"] != "assistant" or not isinstance(message["tool_calls"], list):
                raise InvalidRecordError(
                    ExclusionReason.BAD_MESSAGES, f"{where}: tool_calls on a {message['role']} message"
                )
            clean["tool_calls"] = [_tool_call(call, where, offered) for call in message["tool_calls"]]
        for key in ("tool_call_id", "name"):
            if isinstance(message.get(key), str):
                clean[key] = message[key]
        canonical.append(clean)
    answer = canonical[-1]
    if answer["role"] != "assistant":
        raise InvalidRecordError(
            ExclusionReason.NO_RESPONSE, f"the last message is a {answer['role']} message, not an answer"
        )
    if not answer["content"] and not answer.get("tool_calls"):
        raise InvalidRecordError(ExclusionReason.NO_RESPONSE, "the answer has neither text nor tool calls")
    result: Dict[str, Any] = {"messages": canonical}
    if tools:
        result["tools"] = list(tools)
    return result


def build_chat_records(
    spans: Sequence[Span], adapter: Optional[TraceToMessages] = None, *, metadata: Optional[Mapping[str, Any]] = None
) -> BuiltRecords:
    """One canonical chat record per LLM call of a rollout; calls that make no valid record are counted."""
    built = BuiltRecords()
    for raw in (adapter or TraceToMessages()).adapt(spans):
        try:
            record = check_chat_record(raw)
        except InvalidRecordError as exc:
            built.excluded[exc.reason] += 1
            continue
        record["metadata"] = {**(raw.get("metadata") or {}), **dict(metadata or {})}
        built.records.append(record)
    return built


def to_trl_example(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A chat record as TRL's conversational prompt-completion example (loss on the completion only).

    ``tools`` travels as JSON text, which TRL decodes: tool schemas differ between records, and a
    ``datasets`` column needs one type.
    """
    messages = record["messages"]
    tools = record.get("tools")
    return {"prompt": messages[:-1], "completion": messages[-1:], "tools": json.dumps(tools) if tools else None}


# ----------------------------------------------------------------------------------- token records


def build_token_records(
    spans: Sequence[Span],
    adapter: Optional[TraceToTokenSequences] = None,
    *,
    metadata: Optional[Mapping[str, Any]] = None,
) -> BuiltRecords:
    """The exact token sequences of a rollout with their completion masks.

    A sequence that contains a call without a valid answer (see :func:`check_chat_record`) is left
    out whole; calls recorded without token ids are counted, as they cannot be part of any sequence.
    """
    adapter = adapter or TraceToTokenSequences()
    built = BuiltRecords()
    broken: Dict[str, str] = {}
    for call in find_llm_calls(spans, llm_call_match=adapter.llm_call_match, agent_match=adapter.agent_match):
        if not call.has_token_ids:
            built.excluded[ExclusionReason.NO_TOKEN_IDS] += 1
            continue
        record = {"messages": [{"role": "user", "content": ""}, call.response_message]}
        if call.request.get("tools"):
            record["tools"] = call.request["tools"]
        try:
            check_chat_record(record)
        except InvalidRecordError as exc:
            broken[call.span.span_id] = exc.reason
    sequences: List[TokenSequence] = adapter.adapt(spans)
    for sequence in sequences:
        reasons = [broken[span_id] for span_id in sequence.span_ids if span_id in broken]
        if reasons:
            built.excluded[reasons[0]] += 1
        elif not any(sequence.loss_mask):
            built.excluded[ExclusionReason.NO_MODEL_TOKENS] += 1
        else:
            built.records.append(
                {
                    "input_ids": list(sequence.token_ids),
                    "completion_mask": [1 if bit else 0 for bit in sequence.loss_mask],
                    "metadata": {"rollout_id": sequence.rollout_id, "reward": sequence.reward, **dict(metadata or {})},
                }
            )
    return built
