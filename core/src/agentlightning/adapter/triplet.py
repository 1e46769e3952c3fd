"""Spans -> training data: triplets per LLM call, merged token sequences per trajectory, chat messages."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from agentlightning.adapter.base import TraceAdapter, TraceToTripletBase
from agentlightning.adapter.llm_calls import LLMCall, RewardMatchPolicy, assign_rewards, find_llm_calls
from agentlightning.adapter.sequence import TokenSequence
from agentlightning.types import Span, Triplet

__all__ = [
    "LlmProxyTraceToTriplet",
    "PrefixBreak",
    "TraceToMessages",
    "TraceToTokenSequences",
    "TracerTraceToTriplet",
]

logger = logging.getLogger(__name__)


class TracerTraceToTriplet(TraceToTripletBase):
    """One :class:`Triplet` per LLM call: prompt and response token ids, logprobs and a reward.

    Rewards follow ``reward_match`` (:class:`RewardMatchPolicy`); ``agent_match`` keeps calls of matching
    agents, ``llm_call_match`` overrides which spans are calls; calls without token ids are skipped
    unless ``require_token_ids=False``.
    """

    def __init__(
        self,
        *,
        llm_call_match: Optional[str] = None,
        agent_match: Optional[str] = None,
        reward_match: str = RewardMatchPolicy.FIRST_OCCURRENCE,
        final_reward: bool = False,
        require_token_ids: bool = True,
        repair_hierarchy: bool = True,  # accepted for 0.3 compatibility; order comes from sequence ids
        exclude_llm_call_in_reward: bool = True,  # accepted for 0.3 compatibility
        _skip_empty_token_spans: Optional[bool] = None,  # 0.3 spelling of require_token_ids
    ) -> None:
        if _skip_empty_token_spans is not None:
            require_token_ids = _skip_empty_token_spans
        self.llm_call_match = llm_call_match
        self.agent_match = agent_match
        self.reward_match = reward_match
        self.final_reward = final_reward
        self.require_token_ids = require_token_ids
        assign_rewards([], [], reward_match)  # validates the policy now, not at the first adapt()

    def calls(self, spans: Sequence[Span]) -> List[LLMCall]:
        """The selected calls with rewards assigned."""
        calls = find_llm_calls(
            spans,
            llm_call_match=self.llm_call_match,
            agent_match=self.agent_match,
            require_token_ids=self.require_token_ids,
        )
        final = assign_rewards(calls, spans, self.reward_match)
        if self.final_reward and calls and final is not None:
            calls[-1].reward = final
        return calls

    def adapt(self, source: Sequence[Span], /) -> List[Triplet]:
        return [_triplet(call) for call in self.calls(source)]


class LlmProxyTraceToTriplet(TracerTraceToTriplet):
    """0.3 name: triplets from the LLM proxy's spans (the same rules as :class:`TracerTraceToTriplet`)."""


def _triplet(call: LLMCall) -> Triplet:
    return Triplet(
        prompt={"token_ids": call.prompt_token_ids or [], "request": call.request},
        response={
            "token_ids": call.response_token_ids or [],
            "logprobs": call.logprobs,
            "message": call.response_message,
        },
        reward=call.reward,
        metadata={
            "response_id": call.response_id,
            "agent_name": call.agent_name,
            "span_id": call.span.span_id,
            "sequence_id": call.span.sequence_id,
            "token_ids_source": call.token_ids_source,
        },
    )


@dataclass
class PrefixBreak:
    """Where a trajectory had to be split: call ``span_id``'s prompt does not extend the sequence so far."""

    rollout_id: str
    span_id: str
    position: int
    """First token position where the new prompt differs from the sequence so far."""
    sequence_length: int
    prompt_length: int


class TraceToTokenSequences(TraceAdapter[List[TokenSequence]]):
    """Merges a rollout's LLM calls into as few token sequences as the prompts allow.

    When a call's prompt extends everything so far, the new context tokens are appended with
    ``loss_mask`` 0 and its response with 1; otherwise a new sequence starts (logged, kept in
    :attr:`breaks`). Each sequence gets the rollout's final reward (GRPO's outcome reward).
    """

    def __init__(self, *, agent_match: Optional[str] = None, llm_call_match: Optional[str] = None) -> None:
        self.agent_match = agent_match
        self.llm_call_match = llm_call_match
        self.breaks: List[PrefixBreak] = []

    def adapt(self, source: Sequence[Span], /) -> List[TokenSequence]:
        calls = find_llm_calls(
            source, llm_call_match=self.llm_call_match, agent_match=self.agent_match, require_token_ids=True
        )
        final = assign_rewards(calls, source, RewardMatchPolicy.FINAL)
        sequences: List[TokenSequence] = []
        current: Optional[Dict[str, Any]] = None
        for call in calls:
            prompt = call.prompt_token_ids or []
            response = call.response_token_ids or []
            logprobs: List[Optional[float]] = (
                list(call.logprobs)
                if call.logprobs is not None and len(call.logprobs) == len(response)
                else [None] * len(response)
            )
            if current is not None and prompt[: len(current["token_ids"])] != current["token_ids"]:
                ids = current["token_ids"]
                position = next(
                    (i for i, (a, b) in enumerate(zip(ids, prompt, strict=False)) if a != b), min(len(ids), len(prompt))
                )
                split = PrefixBreak(call.span.rollout_id, call.span.span_id, position, len(ids), len(prompt))
                self.breaks.append(split)
                logger.info(
                    "rollout %s: the prompt of call %s does not extend the trajectory (first difference at token %d "
                    "of %d); starting a new sequence",
                    split.rollout_id,
                    split.span_id,
                    split.position,
                    split.sequence_length,
                )
                sequences.append(_close(current, final))
                current = None
            if current is None:
                current = {
                    "rollout_id": call.span.rollout_id,
                    "attempt_id": call.span.attempt_id,
                    "token_ids": [],
                    "loss_mask": [],
                    "logprobs": [],
                    "prompt_length": len(prompt),
                    "span_ids": [],
                    "agent_name": call.agent_name,
                }
            # The prompt's new tokens (all of it for a new sequence) are context, the response is the model's.
            added = prompt[len(current["token_ids"]) :]
            current["token_ids"].extend([*added, *response])
            current["loss_mask"].extend([0] * len(added) + [1] * len(response))
            current["logprobs"].extend([None] * len(added) + logprobs)
            current["span_ids"].append(call.span.span_id)
        if current is not None:
            sequences.append(_close(current, final))
        for index, sequence in enumerate(sequences):
            sequence.metadata["part"] = index
            sequence.metadata["parts"] = len(sequences)
        return sequences


def _close(current: Dict[str, Any], reward: Optional[float]) -> TokenSequence:
    agent = current.pop("agent_name")
    return TokenSequence(**current, reward=reward, metadata={"agent_name": agent})


class TraceToMessages(TraceAdapter[List[Dict[str, Any]]]):
    """One OpenAI fine-tuning record per LLM call: ``{"messages": [...prompt, response], "tools": [...]}``.

    The prompt messages are the request's as the agent sent them, the last message is the model's
    answer (with its tool calls). Used by prompt optimization and SFT.
    """

    def __init__(self, *, agent_match: Optional[str] = None, llm_call_match: Optional[str] = None) -> None:
        self.agent_match = agent_match
        self.llm_call_match = llm_call_match

    def adapt(self, source: Sequence[Span], /) -> List[Dict[str, Any]]:
        records: List[Dict[str, Any]] = []
        calls = find_llm_calls(source, llm_call_match=self.llm_call_match, agent_match=self.agent_match)
        assign_rewards(calls, source)
        for call in calls:
            messages = call.request.get("messages")
            if not isinstance(messages, list):
                prompt = call.request.get("prompt")
                messages = [{"role": "user", "content": prompt if isinstance(prompt, str) else str(prompt)}]
            message = {k: v for k, v in call.response_message.items() if v is not None or k == "content"}
            record: Dict[str, Any] = {"messages": [*messages, message]}
            if call.request.get("tools"):
                record["tools"] = call.request["tools"]
            record["metadata"] = {"agent_name": call.agent_name, "reward": call.reward, "response_id": call.response_id}
            records.append(record)
        return records
