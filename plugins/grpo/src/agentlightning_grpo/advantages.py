"""Group-relative advantages: each rollout's reward against the other rollouts of the same task.

For a group (the ``group_size`` rollouts of one task) with rewards ``r_1..r_n``::

    A_i = (r_i - mean(r)) / (std(r) + eps)      # scale_by_std=True (GRPO)
    A_i =  r_i - mean(r)                         # scale_by_std=False (Dr. GRPO style)

``std`` is the sample standard deviation (n - 1 in the denominator), as in TRL and verl, so a group
with rewards ``[1, 1, 0, 0]`` gets ``±0.866``. A rollout whose reward is missing (it failed, or the
agent never emitted one) or not finite is left out of its group with a :class:`FailedRolloutWarning`
naming it; the rest of the group is scored without it. A group whose rewards are all equal, or that
has a single usable member left, carries no learning signal and gets advantage 0 for every member.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = ["RolloutReward", "GroupAdvantages", "FailedRolloutWarning", "compute_group_advantages"]

# How many excluded rollout ids one warning lists before summarizing the rest.
_NAMED_IN_WARNING = 10


class FailedRolloutWarning(UserWarning):
    """A rollout without a usable reward was left out of its group's advantage computation."""


@dataclass(frozen=True)
class RolloutReward:
    """The outcome of one rollout: which group (task) it belongs to and its reward (None when it failed)."""

    rollout_id: str
    group_id: str
    reward: Optional[float]


@dataclass
class GroupAdvantages:
    """Advantages per rollout id, and what was left out."""

    advantages: Dict[str, float] = field(default_factory=dict)
    # Rollouts without a usable reward (None or not finite), in input order.
    excluded: List[str] = field(default_factory=list)
    # Groups with at least one usable member.
    groups: int = 0
    # Groups with at least two usable members whose rewards are all equal (advantage 0).
    zero_variance_groups: int = 0
    # Groups left with a single usable member (advantage 0).
    single_member_groups: int = 0

    @property
    def informative_groups(self) -> int:
        """Groups that produce a nonzero learning signal."""
        return self.groups - self.zero_variance_groups - self.single_member_groups


def compute_group_advantages(
    rewards: Iterable[RolloutReward], *, scale_by_std: bool = True, eps: float = 1e-6
) -> GroupAdvantages:
    """Group-relative advantage of every rollout that has a usable reward (see the module docstring).

    Raises ``ValueError`` when a rollout id appears twice: two rewards for one rollout is a caller bug,
    unlike a failed rollout, which is expected and only warned about.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    result = GroupAdvantages()
    # group id -> (rollout id, reward) of its members with a usable reward, in input order.
    members: Dict[str, List[Tuple[str, float]]] = {}
    seen: set[str] = set()
    for item in rewards:
        if item.rollout_id in seen:
            raise ValueError(f"rollout {item.rollout_id!r} appears more than once")
        seen.add(item.rollout_id)
        group = members.setdefault(item.group_id, [])
        if item.reward is None or not math.isfinite(item.reward):
            result.excluded.append(item.rollout_id)
            continue
        group.append((item.rollout_id, float(item.reward)))

    if result.excluded:
        _warn_excluded(result.excluded)

    for group in members.values():
        if not group:
            continue  # every member failed: nothing to train on, nothing to score
        result.groups += 1
        values = [reward for _, reward in group]
        if len(values) == 1:
            result.single_member_groups += 1
            result.advantages[group[0][0]] = 0.0
            continue
        # Exact equality, not a tolerance: the mean of equal floats can differ from them in the last bit.
        if max(values) == min(values):
            result.zero_variance_groups += 1
            for rollout_id, _ in group:
                result.advantages[rollout_id] = 0.0
            continue
        mean = math.fsum(values) / len(values)
        denominator = 1.0
        if scale_by_std:
            variance = math.fsum((value - mean) ** 2 for value in values) / (len(values) - 1)
            denominator = math.sqrt(variance) + eps
        for rollout_id, reward in group:
            result.advantages[rollout_id] = (reward - mean) / denominator
    return result


def _warn_excluded(rollout_ids: List[str]) -> None:
    named = ", ".join(rollout_ids[:_NAMED_IN_WARNING])
    more = len(rollout_ids) - _NAMED_IN_WARNING
    suffix = f" and {more} more" if more > 0 else ""
    warnings.warn(
        f"{len(rollout_ids)} rollout(s) without a usable reward (failed, or reward missing or not finite) were "
        f"left out of their groups: {named}{suffix}",
        FailedRolloutWarning,
        stacklevel=3,
    )
