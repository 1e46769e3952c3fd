"""From :class:`~agentlightning.adapter.sequence.TokenSequence` objects to padded training tensors.

Layout of one :class:`MicroBatch` with ``B`` rows padded (on the right) to ``T`` tokens:

- ``input_ids``, ``attention_mask``: ``[B, T]``, what the model reads;
- every other tensor is ``[B, T - 1]`` and **shifted for next-token prediction**: column ``t`` is
  about token ``t + 1``, the token the model predicts from position ``t``. ``loss_mask[:, t]`` is 1
  when token ``t + 1`` was sampled by the model (context tokens such as prompts and tool results,
  and padding, are 0); ``old_logprobs[:, t]`` is the serving engine's logprob of token ``t + 1``
  (0 where unknown, with ``old_logprobs_known`` False); ``advantages[:, t]`` is the sequence's
  advantage on masked-in columns and 0 elsewhere.

Truncation policy: a sequence longer than ``max_length`` keeps its **first** ``max_length`` tokens.
The head holds the task prompt and the earliest turns, which every later token depends on; dropping
the tail loses only the last model tokens (the rollout's reward still applies to the ones kept).
A sequence left with no model token after truncation (its first prompt alone fills ``max_length``)
is dropped. Both are reported in :class:`PreparedBatch`, never silently.

Micro-batching: sequences are sorted by length (longest first, so rows of similar length share a
micro-batch and little padding is wasted) and packed greedily while ``rows x longest row`` stays
within ``micro_batch_tokens``; a single sequence longer than the budget gets a micro-batch of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

from agentlightning.adapter.sequence import TokenSequence

__all__ = ["MicroBatch", "PreparedBatch", "build_micro_batches"]


@dataclass
class MicroBatch:
    """One forward/backward worth of padded rows (see the module docstring for the layout)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    old_logprobs: torch.Tensor
    old_logprobs_known: torch.Tensor
    advantages: torch.Tensor
    rollout_ids: List[str]

    @property
    def loss_tokens(self) -> int:
        """Model-sampled tokens that enter the loss."""
        return int(self.loss_mask.sum().item())

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens the model reads."""
        return int(self.attention_mask.sum().item())

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device: torch.device) -> "MicroBatch":
        moved = {
            item.name: getattr(self, item.name).to(device, non_blocking=True)
            for item in fields(self)
            if isinstance(getattr(self, item.name), torch.Tensor)
        }
        return MicroBatch(**moved, rollout_ids=self.rollout_ids)


@dataclass
class PreparedBatch:
    """The micro-batches of one update step, with what was truncated or dropped on the way."""

    micro_batches: List[MicroBatch] = field(default_factory=list)
    # Rollout ids of sequences cut to max_length (a rollout with several sequences may appear twice).
    truncated: List[str] = field(default_factory=list)
    # Rollout ids of sequences left out: no advantage for their rollout, or no model token left.
    dropped: List[str] = field(default_factory=list)

    @property
    def sequences(self) -> int:
        return sum(len(batch.rollout_ids) for batch in self.micro_batches)

    @property
    def loss_tokens(self) -> int:
        return sum(batch.loss_tokens for batch in self.micro_batches)

    @property
    def tokens(self) -> int:
        return sum(batch.tokens for batch in self.micro_batches)

    @property
    def padded_tokens(self) -> int:
        return sum(batch.padded_tokens for batch in self.micro_batches)


# A sequence after truncation: (rollout id, token ids, loss mask, logprobs, advantage).
_Row = Tuple[str, List[int], List[int], List[Optional[float]], float]


def build_micro_batches(
    sequences: Sequence[TokenSequence],
    advantages: Mapping[str, float],
    *,
    max_length: int,
    micro_batch_tokens: int,
    pad_token_id: int = 0,
) -> PreparedBatch:
    """Truncate, sort, pack and pad ``sequences``; ``advantages`` maps a rollout id to its advantage.

    A sequence whose rollout has no entry in ``advantages`` (a failed rollout, already reported by
    :func:`~agentlightning_grpo.advantages.compute_group_advantages`) is dropped.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if micro_batch_tokens < 2:
        raise ValueError(f"micro_batch_tokens must be at least 2, got {micro_batch_tokens}")
    prepared = PreparedBatch()
    rows: List[_Row] = []
    for sequence in sequences:
        advantage = advantages.get(sequence.rollout_id)
        if advantage is None:
            prepared.dropped.append(sequence.rollout_id)
            continue
        token_ids, loss_mask, logprobs = sequence.token_ids, sequence.loss_mask, sequence.logprobs
        if len(token_ids) > max_length:
            prepared.truncated.append(sequence.rollout_id)
            token_ids, loss_mask, logprobs = token_ids[:max_length], loss_mask[:max_length], logprobs[:max_length]
        # Token 0 has no context to be predicted from, so only tokens 1.. can be trained.
        if not any(loss_mask[1:]):
            prepared.dropped.append(sequence.rollout_id)
            continue
        rows.append((sequence.rollout_id, token_ids, loss_mask, logprobs, float(advantage)))

    rows.sort(key=lambda row: len(row[1]), reverse=True)
    group: List[_Row] = []
    for row in rows:
        # Rows are sorted longest first, so the group's first row sets its padded width.
        width = len(group[0][1]) if group else len(row[1])
        if group and (len(group) + 1) * width > micro_batch_tokens:
            prepared.micro_batches.append(_pad(group, pad_token_id))
            group = []
        group.append(row)
    if group:
        prepared.micro_batches.append(_pad(group, pad_token_id))
    return prepared


def _pad(rows: List[_Row], pad_token_id: int) -> MicroBatch:
    width = max(len(row[1]) for row in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width - 1), dtype=torch.float32)
    old_logprobs = torch.zeros((n, width - 1), dtype=torch.float32)
    old_known = torch.zeros((n, width - 1), dtype=torch.bool)
    advantages = torch.zeros((n, width - 1), dtype=torch.float32)
    for i, (_, token_ids, mask, logprobs, advantage) in enumerate(rows):
        length = len(token_ids)
        input_ids[i, :length] = torch.tensor(token_ids, dtype=torch.long)
        attention_mask[i, :length] = 1
        # Shift by one: column t scores token t + 1.
        shifted_mask = (torch.tensor(mask[1:]) != 0).float()
        loss_mask[i, : length - 1] = shifted_mask
        # A NaN or infinite logprob from the engine is as good as none.
        usable = [value if value is not None and math.isfinite(value) else None for value in logprobs[1:]]
        known = torch.tensor([value is not None for value in usable], dtype=torch.bool)
        old_known[i, : length - 1] = known & (shifted_mask > 0)
        old_logprobs[i, : length - 1] = torch.tensor(
            [value if value is not None else 0.0 for value in usable], dtype=torch.float32
        )
        advantages[i, : length - 1] = shifted_mask * advantage
    # Unknown and masked-out logprobs are 0 by contract, whatever the sequence carried there.
    old_logprobs = torch.where(old_known, old_logprobs, torch.zeros_like(old_logprobs))
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        loss_mask=loss_mask,
        old_logprobs=old_logprobs,
        old_logprobs_known=old_known,
        advantages=advantages,
        rollout_ids=[row[0] for row in rows],
    )
