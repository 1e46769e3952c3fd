"""The math of one GRPO update: per-token logprobs from the model, and the clipped objective.

Per model token ``t`` of a sequence with advantage ``A``::

    ratio_t = exp(logp_t - old_logp_t)          # old_logp_t: recorded by the serving engine at sampling time
    pg_t    = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1     # k3 estimator of KL(policy || reference)
    loss_t  = pg_t + beta * kl_t

Aggregation is a **token mean over the whole step**: ``sum_t loss_t / N`` where ``N`` counts the model
tokens of every sequence in the step (all micro-batches together). Every sampled token weighs the
same, so a long multi-turn trajectory is not down-weighted against a short one (the per-sequence mean
of the original GRPO paper biases toward short answers; DAPO and Dr. GRPO use the token mean). The
functions here return **sums** so that micro-batches can be accumulated and divided by ``N`` once.

When the engine did not report a token's logprob, ``old_logp_t`` falls back to the current policy's
detached logprob: the ratio is 1 and the token gets the plain policy-gradient ``-A * logp_t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Tuple

import torch

from .batch import MicroBatch

__all__ = [
    "LogitSelection",
    "PolicyLossTerms",
    "clipped_policy_loss",
    "detect_logit_selection",
    "shared_prefix_length",
    "token_logprobs",
]

# How the forward pass is told which positions need logits (see `detect_logit_selection`).
LogitSelection = Literal["mask", "positions", "all"]

# exp() of a log-ratio beyond this is inf (or 0) and turns the loss into NaN; clipping makes it irrelevant.
_MAX_LOG_RATIO = 20.0


def detect_logit_selection(model: torch.nn.Module) -> LogitSelection:
    """Find the cheapest way this model computes logits only where the loss needs them.

    Projecting hidden states onto the vocabulary is a large share of a small model's compute, and
    only model tokens need it (not prompts or tool results). Recent transformers accept
    ``logits_to_keep`` as a boolean ``[B, T]`` mask ("mask": exactly the model tokens), older ones a
    1D tensor of positions shared by the rows ("positions": their union); anything else computes all
    logits ("all"). Probed with a 2-token forward, since a model's own forward may slice differently.
    """
    device = next(model.parameters()).device
    input_ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    probes: Tuple[Tuple[LogitSelection, Any, Tuple[int, ...]], ...] = (
        ("mask", torch.tensor([[True, False]], device=device), (1,)),
        ("positions", torch.tensor([0], device=device), (1, 1)),
    )
    with torch.no_grad():
        for name, keep, leading_shape in probes:
            try:
                logits = model(input_ids=input_ids, logits_to_keep=keep, use_cache=False).logits
            except (TypeError, ValueError, IndexError, RuntimeError):
                continue
            if tuple(logits.shape[:-1]) == leading_shape:
                return name
    return "all"


def token_logprobs(
    model: torch.nn.Module,
    batch: MicroBatch,
    *,
    selection: LogitSelection = "mask",
    temperature: float = 1.0,
    with_entropy: bool = False,
    share_prefix: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logprobs of each next token under ``model``, ``[B, T - 1]`` like ``batch.loss_mask``.

    Only masked-in columns are computed (0 elsewhere). The vocabulary-sized logits exist for those
    tokens only, in float32, and for one micro-batch at a time. With ``with_entropy`` also returns the
    per-token entropy of the predicted distribution (no gradient; a collapse indicator).

    With ``share_prefix`` (and ``selection == "mask"``), a prefix that every row shares before its
    first model token (an agent's system and tool prompt) is run once for the micro-batch rather
    than once per row; its keys and values are broadcast to the rows and the gradient flows back
    through them, so the result equals the per-row computation up to float rounding.
    """
    input_ids, attention_mask = batch.input_ids, batch.attention_mask
    mask = batch.loss_mask > 0
    targets = input_ids[:, 1:]
    if selection == "mask":
        keep = torch.zeros_like(input_ids, dtype=torch.bool)
        keep[:, :-1] = mask
        shared = shared_prefix_length(batch) if share_prefix else 0
        if shared:
            logits = _forward_with_shared_prefix(model, input_ids, attention_mask, keep, shared)
        else:
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False
            ).logits
        selected_targets = targets[mask]
    elif selection == "positions":
        positions = mask.any(dim=0).nonzero().squeeze(1)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=positions, use_cache=False
        ).logits
        kept_mask = mask[:, positions]
        logits = logits[kept_mask]
        selected_targets = targets[:, positions][kept_mask]
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1][mask]
        selected_targets = targets[mask]

    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    log_normalizer = logits.logsumexp(dim=-1)
    selected = logits.gather(-1, selected_targets.unsqueeze(-1)).squeeze(-1) - log_normalizer
    logprobs = torch.zeros(mask.shape, dtype=selected.dtype, device=selected.device).masked_scatter(mask, selected)

    entropy: Optional[torch.Tensor] = None
    if with_entropy:
        with torch.no_grad():
            # In chunks of rows: each temporary is rows x vocabulary floats (152k for Qwen2.5).
            detached, normalizer = logits.detach(), log_normalizer.detach()
            per_token = (
                torch.cat(
                    [
                        normalizer[start : start + _ENTROPY_CHUNK] - (torch.softmax(chunk, dim=-1) * chunk).sum(dim=-1)
                        for start, chunk in zip(
                            range(0, len(detached), _ENTROPY_CHUNK), detached.split(_ENTROPY_CHUNK), strict=True
                        )
                    ]
                )
                if len(detached)
                else normalizer
            )
            entropy = torch.zeros(mask.shape, dtype=per_token.dtype, device=per_token.device).masked_scatter(
                mask, per_token
            )
    return logprobs, entropy


# Rows of logits per entropy computation (the entropy is a metric; this bounds its temporaries).
_ENTROPY_CHUNK = 128

# Below this many shared tokens a separate prefix pass is not worth its overhead.
MIN_SHARED_PREFIX = 32


def shared_prefix_length(batch: MicroBatch) -> int:
    """Leading columns that all rows hold identically, up to the first column whose logits the loss needs;
    0 when that is under ``MIN_SHARED_PREFIX`` or the micro-batch has one row."""
    input_ids, attention_mask = batch.input_ids, batch.attention_mask
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0) & (attention_mask > 0).all(dim=0)
    differing = torch.nonzero(~same)
    length = int(differing[0, 0]) if len(differing) else input_ids.shape[1]
    needed = torch.nonzero((batch.loss_mask > 0).any(dim=0))
    if len(needed):
        length = min(length, int(needed[0, 0]))
    return length if length >= MIN_SHARED_PREFIX else 0


def _cache_argument(model: torch.nn.Module) -> str:
    """transformers 5.23 renamed the forward's ``past_key_values`` to ``cache``."""
    import inspect

    base: Any = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _forward_with_shared_prefix(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor, shared: int
) -> torch.Tensor:
    """Logits at ``keep`` of every row, the first ``shared`` columns (the same in every row) run once."""
    from transformers import DynamicCache

    rows, width = input_ids.shape
    cache: Any = DynamicCache()
    # Only the cache is wanted. An index, not `logits_to_keep=1`: without autograd, torch's CPU linear copies
    # the bfloat16 vocabulary weight for the strided slice `hidden[:, -1:]`.
    last = torch.tensor([shared - 1], device=input_ids.device)
    model(input_ids=input_ids[:1, :shared], use_cache=True, logits_to_keep=last, **{_cache_argument(model): cache})
    for layer in cache.layers:
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    positions = torch.arange(shared, width, device=input_ids.device).expand(rows, -1)
    logits: torch.Tensor = model(
        input_ids=input_ids[:, shared:],
        attention_mask=attention_mask,
        position_ids=positions,
        logits_to_keep=keep[:, shared:],
        use_cache=True,
        **{_cache_argument(model): cache},
    ).logits
    return logits


@dataclass
class PolicyLossTerms:
    """Sums over the masked-in tokens of one micro-batch; divide by the step's token count."""

    # Differentiable: sum of pg_t + beta * kl_t.
    loss_sum: torch.Tensor
    # The rest are detached, for metrics.
    pg_loss_sum: torch.Tensor
    kl_sum: torch.Tensor
    ratio_sum: torch.Tensor
    # Tokens whose clipped term was the one taken (their gradient is zero).
    clipped_tokens: torch.Tensor
    # Model tokens without a sampling-time logprob (ratio forced to 1).
    missing_logprob_tokens: torch.Tensor
    # |old - new| logprob over tokens that have a sampling logprob: sampler/trainer mismatch, plus drift.
    abs_logprob_diff_sum: torch.Tensor
    known_logprob_tokens: torch.Tensor


def clipped_policy_loss(
    logprobs: torch.Tensor,
    batch: MicroBatch,
    *,
    clip_eps_low: float,
    clip_eps_high: float,
    ref_logprobs: Optional[torch.Tensor] = None,
    beta: float = 0.0,
) -> PolicyLossTerms:
    """The clipped surrogate (plus the k3 KL penalty when ``beta > 0``) of one micro-batch."""
    mask = batch.loss_mask > 0
    known = batch.old_logprobs_known & mask
    old_logprobs = torch.where(known, batch.old_logprobs.to(logprobs.dtype), logprobs.detach())
    log_ratio = (logprobs - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    advantages = batch.advantages.to(logprobs.dtype)
    clipped_ratio = ratio.clamp(1.0 - clip_eps_low, 1.0 + clip_eps_high)
    unclipped_objective = ratio * advantages
    clipped_objective = clipped_ratio * advantages
    pg_per_token = -torch.minimum(unclipped_objective, clipped_objective)
    per_token = pg_per_token

    kl_per_token: Optional[torch.Tensor] = None
    if ref_logprobs is not None:
        ref_minus_policy = (ref_logprobs.to(logprobs.dtype) - logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        kl_per_token = torch.exp(ref_minus_policy) - ref_minus_policy - 1.0
        if beta > 0:
            per_token = per_token + beta * kl_per_token

    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    # `where`, not a product: an inf on a masked-out column would turn 0 * inf into NaN.
    loss_sum = torch.where(mask, per_token, zero).sum()
    with torch.no_grad():
        clipped = mask & (clipped_objective < unclipped_objective)
        diff = torch.where(known, (batch.old_logprobs.to(logprobs.dtype) - logprobs).abs(), zero)
        return PolicyLossTerms(
            loss_sum=loss_sum,
            pg_loss_sum=torch.where(mask, pg_per_token, zero).sum(),
            kl_sum=torch.where(mask, kl_per_token, zero).sum() if kl_per_token is not None else zero,
            ratio_sum=torch.where(mask, ratio, zero).sum(),
            clipped_tokens=clipped.sum(),
            missing_logprob_tokens=(mask & ~known).sum(),
            abs_logprob_diff_sum=diff.sum(),
            known_logprob_tokens=known.sum(),
        )
