"""Spans -> verl's batch format (``DataProto``), through the core's trace-to-token-sequence adapter.

Each row of the batch is one token sequence of a rollout (:class:`~agentlightning.adapter.TraceToTokenSequences`:
a trajectory's LLM calls merged while each prompt extends the previous call's prompt and response).
The row is laid out the way verl's own rollouts are:

- ``prompts`` ``[B, P]``: the first call's prompt, **left**-padded with the pad token;
- ``responses`` ``[B, R]``: everything after it (each response, and the tool results and other
  context between calls), **right**-padded;
- ``input_ids`` = ``prompts`` + ``responses``; ``attention_mask`` 1 on real tokens; ``position_ids``
  count real tokens from 0 (0 on left padding);
- ``response_mask`` ``[B, R]``: 1 on tokens the model sampled, 0 on tool/env tokens and padding;
- ``token_level_scores`` ``[B, R]``: the reward on the last response token (``reward_policy="final"``),
  or each call's reward on the last token of that call's response (``"first_occurrence"``);
- ``rollout_log_probs`` ``[B, R]``: the serving engine's logprobs, when every model token has one;
- non-tensors ``uid`` (the GRPO group: the task a rollout played), ``rollout_id`` and ``span_ids``.

Only ``torch``, ``numpy`` and ``verl.protocol`` are imported, on first use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

from agentlightning.adapter import TokenSequence, TracerTraceToTriplet, TraceToTokenSequences
from agentlightning.adapter.llm_calls import RewardMatchPolicy
from agentlightning.emitter.reward import find_final_reward
from agentlightning.types import Span

if TYPE_CHECKING:
    from verl import DataProto

__all__ = ["BatchRow", "TruncationCounts", "rows_from_spans", "rows_to_dataproto"]

logger = logging.getLogger(__name__)


@dataclass
class BatchRow:
    """One row of a verl batch before padding: the prompt, the response part and its rewards."""

    uid: str
    rollout_id: str
    prompt_ids: List[int]
    response_ids: List[int]
    response_mask: List[int]
    response_logprobs: List[Optional[float]]
    # Response position -> reward placed there (token-level scores are 0 elsewhere).
    rewards: Dict[int, float] = field(default_factory=dict)
    span_ids: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        if len(self.response_mask) != n or len(self.response_logprobs) != n:
            raise ValueError(
                f"rollout {self.rollout_id}: response_ids ({n}), response_mask ({len(self.response_mask)}) and "
                f"response_logprobs ({len(self.response_logprobs)}) must have the same length"
            )
        if n == 0:
            raise ValueError(f"rollout {self.rollout_id}: a row needs at least one response token")
        outside = [p for p in self.rewards if not 0 <= p < n]
        if outside:
            raise ValueError(f"rollout {self.rollout_id}: rewards at positions {outside} outside 0..{n - 1}")


@dataclass
class TruncationCounts:
    """Rows cut to the configured lengths (prompts keep their last tokens, responses their first)."""

    prompts: int = 0
    responses: int = 0


def rows_from_spans(
    spans: Sequence[Span],
    *,
    uid: str,
    agent_match: Optional[str] = None,
    llm_call_match: Optional[str] = None,
    reward_policy: str = RewardMatchPolicy.FINAL,
    missing_reward: Optional[float] = None,
) -> List[BatchRow]:
    """The batch rows of one rollout's spans (``[]`` when it has no reward and ``missing_reward`` is None).

    ``reward_policy="final"``: the rollout's last reward goes on the last response token of each of
    its sequences. ``"first_occurrence"``: each reward span goes to the latest LLM call before it
    (the core's :class:`~agentlightning.adapter.TracerTraceToTriplet` matching), and lands on the last
    token of that call's response; calls without a reward add nothing. ``missing_reward`` is what a
    rollout without any reward gets (on its last token); ``None`` leaves it out.
    """
    sequences = TraceToTokenSequences(agent_match=agent_match, llm_call_match=llm_call_match).adapt(spans)
    if not sequences:
        return []
    call_rewards: Dict[str, tuple[int, float]] = {}
    if reward_policy == RewardMatchPolicy.FIRST_OCCURRENCE:
        triplets = TracerTraceToTriplet(
            agent_match=agent_match, llm_call_match=llm_call_match, reward_match=RewardMatchPolicy.FIRST_OCCURRENCE
        )
        for call in triplets.calls(spans):
            if call.reward is not None:
                # A call's response ends at len(prompt) + len(response) in the merged sequence: each
                # merged call's prompt is the whole sequence up to it.
                end = len(call.prompt_token_ids or []) + len(call.response_token_ids or [])
                call_rewards[call.span.span_id] = (end, float(call.reward))
    elif reward_policy != RewardMatchPolicy.FINAL:
        raise ValueError(
            f"reward_policy must be {RewardMatchPolicy.FINAL!r} or {RewardMatchPolicy.FIRST_OCCURRENCE!r}, "
            f"got {reward_policy!r}"
        )
    has_reward = find_final_reward(spans) is not None
    if not has_reward and missing_reward is None:
        return []
    rows = []
    for sequence in sequences:
        if len(sequence.token_ids) == sequence.prompt_length:
            continue  # no response token: nothing to train on
        row = _row(sequence, uid)
        last = len(row.response_ids) - 1
        if not has_reward:
            row.rewards[last] = float(missing_reward)  # type: ignore[arg-type]
        elif reward_policy == RewardMatchPolicy.FINAL:
            row.rewards[last] = float(sequence.reward if sequence.reward is not None else 0.0)
        else:
            for span_id in sequence.span_ids:
                if span_id in call_rewards:
                    end, reward = call_rewards[span_id]
                    position = end - sequence.prompt_length - 1
                    row.rewards[position] = row.rewards.get(position, 0.0) + reward
        rows.append(row)
    return rows


def _row(sequence: TokenSequence, uid: str) -> BatchRow:
    cut = sequence.prompt_length
    return BatchRow(
        uid=uid,
        rollout_id=sequence.rollout_id,
        prompt_ids=list(sequence.token_ids[:cut]),
        response_ids=list(sequence.token_ids[cut:]),
        response_mask=list(sequence.loss_mask[cut:]),
        response_logprobs=list(sequence.logprobs[cut:]),
        span_ids=list(sequence.span_ids),
    )


def rows_to_dataproto(
    rows: Sequence[BatchRow],
    *,
    pad_token_id: int,
    max_prompt_length: Optional[int] = None,
    max_response_length: Optional[int] = None,
    meta_info: Optional[Mapping[str, Any]] = None,
    truncated: Optional[TruncationCounts] = None,
) -> "DataProto":
    """Pads ``rows`` into a :class:`verl.DataProto` (layout in the module docstring).

    Prompts longer than ``max_prompt_length`` keep their last tokens, responses longer than
    ``max_response_length`` their first (a reward beyond the cut moves to the last kept token); each
    cut is counted in ``truncated``. Widths are the longest prompt and response of the batch.
    """
    import numpy as np
    import torch
    from verl import DataProto

    if not rows:
        raise ValueError("rows_to_dataproto needs at least one row")
    counts = truncated if truncated is not None else TruncationCounts()
    prepared = [_truncate(row, max_prompt_length, max_response_length, counts) for row in rows]
    width_p = max(len(r.prompt_ids) for r in prepared)
    width_r = max(len(r.response_ids) for r in prepared)
    size = len(prepared)
    prompts = torch.full((size, width_p), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((size, width_p), dtype=torch.long)
    responses = torch.full((size, width_r), pad_token_id, dtype=torch.long)
    response_attention = torch.zeros((size, width_r), dtype=torch.long)
    response_mask = torch.zeros((size, width_r), dtype=torch.long)
    scores = torch.zeros((size, width_r), dtype=torch.float32)
    logprobs = torch.zeros((size, width_r), dtype=torch.float32)
    all_logprobs = True
    for i, row in enumerate(prepared):
        n_p, n_r = len(row.prompt_ids), len(row.response_ids)
        if n_p:
            prompts[i, width_p - n_p :] = torch.tensor(row.prompt_ids, dtype=torch.long)
            prompt_mask[i, width_p - n_p :] = 1
        responses[i, :n_r] = torch.tensor(row.response_ids, dtype=torch.long)
        response_attention[i, :n_r] = 1
        response_mask[i, :n_r] = torch.tensor(row.response_mask, dtype=torch.long)
        for position, reward in row.rewards.items():
            scores[i, position] += reward
        for j, (masked_in, logprob) in enumerate(zip(row.response_mask, row.response_logprobs, strict=True)):
            if logprob is not None:
                logprobs[i, j] = logprob
            elif masked_in:
                all_logprobs = False
    attention_mask = torch.cat([prompt_mask, response_attention], dim=1)
    tensors: Dict[str, Any] = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        # verl's convention (compute_position_id_with_mask): real tokens count from 0, left padding is 0.
        "position_ids": torch.clip(torch.cumsum(attention_mask, dim=-1) - 1, min=0),
        "response_mask": response_mask,
        "token_level_scores": scores,
    }
    if all_logprobs:
        tensors["rollout_log_probs"] = logprobs
    non_tensors = {
        "uid": np.array([r.uid for r in prepared], dtype=object),
        "rollout_id": np.array([r.rollout_id for r in prepared], dtype=object),
        "span_ids": np.array([",".join(r.span_ids) for r in prepared], dtype=object),
    }
    batch: "DataProto" = DataProto.from_dict(tensors=tensors, non_tensors=non_tensors, meta_info=dict(meta_info or {}))
    return batch


def _truncate(
    row: BatchRow, max_prompt: Optional[int], max_response: Optional[int], counts: TruncationCounts
) -> BatchRow:
    prompt, response = row.prompt_ids, row.response_ids
    mask, logprobs, rewards = row.response_mask, row.response_logprobs, dict(row.rewards)
    if max_prompt is not None and len(prompt) > max_prompt:
        counts.prompts += 1
        prompt = prompt[len(prompt) - max_prompt :] if max_prompt else []
    if max_response is not None and len(response) > max_response:
        counts.responses += 1
        response, mask, logprobs = response[:max_response], mask[:max_response], logprobs[:max_response]
        moved = sum(v for p, v in rewards.items() if p >= max_response)
        rewards = {p: v for p, v in rewards.items() if p < max_response}
        if moved:
            rewards[max_response - 1] = rewards.get(max_response - 1, 0.0) + moved
    if prompt is row.prompt_ids and response is row.response_ids:
        return row
    logger.info("rollout %s: cut to %d prompt and %d response tokens", row.rollout_id, len(prompt), len(response))
    return BatchRow(
        row.uid, row.rollout_id, list(prompt), list(response), list(mask), list(logprobs), rewards, row.span_ids
    )
