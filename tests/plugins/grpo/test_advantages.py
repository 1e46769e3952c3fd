"""Group-relative advantages against hand-computed values."""

from __future__ import annotations

import math

import pytest

from agentlightning_grpo import FailedRolloutWarning, RolloutReward, compute_group_advantages


def _rewards(group: str, values: list[float | None]) -> list[RolloutReward]:
    return [RolloutReward(f"{group}-{i}", group, value) for i, value in enumerate(values)]


def test_known_rewards_give_hand_computed_advantages() -> None:
    # Group a: mean 0.25, sample std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5.
    # Group b: mean 3, sample std sqrt(2).
    result = compute_group_advantages(_rewards("a", [1, 0, 0, 0]) + _rewards("b", [2, 4]), eps=1e-6)
    expected = {
        "a-0": 0.75 / (0.5 + 1e-6),
        "a-1": -0.25 / (0.5 + 1e-6),
        "a-2": -0.25 / (0.5 + 1e-6),
        "a-3": -0.25 / (0.5 + 1e-6),
        "b-0": -1 / (math.sqrt(2) + 1e-6),
        "b-1": 1 / (math.sqrt(2) + 1e-6),
    }
    assert result.advantages == pytest.approx(expected, abs=1e-12)
    assert result.groups == 2 and result.informative_groups == 2 and result.excluded == []


def test_two_of_four_group_matches_the_usual_grpo_value() -> None:
    result = compute_group_advantages(_rewards("g", [1, 1, 0, 0]))
    assert [round(result.advantages[f"g-{i}"], 3) for i in range(4)] == [0.866, 0.866, -0.866, -0.866]


def test_without_std_scaling_advantages_are_centered_rewards() -> None:
    result = compute_group_advantages(_rewards("g", [1, 0, 0, 0]), scale_by_std=False)
    assert result.advantages == pytest.approx({"g-0": 0.75, "g-1": -0.25, "g-2": -0.25, "g-3": -0.25})


def test_equal_rewards_give_exactly_zero() -> None:
    # The mean of three 0.1s is not exactly 0.1 in floating point; the advantage must still be 0.
    result = compute_group_advantages(_rewards("same", [0.1, 0.1, 0.1]) + _rewards("zero", [0.0, 0.0]))
    assert set(result.advantages.values()) == {0.0}
    assert result.zero_variance_groups == 2 and result.informative_groups == 0


def test_failed_rollouts_are_excluded_with_a_warning_naming_them() -> None:
    rewards = _rewards("g", [1, None, 0, 0]) + [RolloutReward("nan-one", "g", float("nan"))]
    with pytest.warns(FailedRolloutWarning, match=r"g-1.*nan-one"):
        result = compute_group_advantages(rewards)
    assert result.excluded == ["g-1", "nan-one"]
    assert "g-1" not in result.advantages and "nan-one" not in result.advantages
    # The rest of the group is scored without them: rewards [1, 0, 0], mean 1/3, sample std sqrt(1/3).
    std = math.sqrt(1 / 3) + 1e-6
    assert result.advantages == pytest.approx({"g-0": (2 / 3) / std, "g-2": (-1 / 3) / std, "g-3": (-1 / 3) / std})


def test_group_left_with_one_member_or_none_gives_zero_and_no_crash() -> None:
    with pytest.warns(FailedRolloutWarning):
        result = compute_group_advantages(_rewards("one", [None, 0.7, None]) + _rewards("none", [None, None]))
    assert result.advantages == {"one-1": 0.0}
    assert result.single_member_groups == 1 and result.groups == 1


def test_many_failed_rollouts_are_summarized_in_one_warning() -> None:
    with pytest.warns(FailedRolloutWarning, match="and 5 more") as record:
        compute_group_advantages(_rewards("g", [None] * 15 + [1.0, 0.0]))
    assert len(record) == 1


def test_duplicate_rollout_id_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="'x' appears more than once"):
        compute_group_advantages([RolloutReward("x", "g", 1.0), RolloutReward("x", "g", 0.0)])
