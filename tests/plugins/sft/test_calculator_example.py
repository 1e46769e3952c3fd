"""The SFT example's recipe (examples/sft_calculator.py): its problems, its leak-free split and its sign test."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
import sft_calculator  # noqa: E402


def test_problems_cycle_through_the_kinds_with_the_right_answers() -> None:
    problems = sft_calculator.make_problems(30, seed=4)
    assert problems == sft_calculator.make_problems(30, seed=4)
    assert [p["kind"] for p in problems[:3]] == list(sft_calculator.KINDS)
    for problem in problems:
        a, b = (int(n) for n in [w.rstrip(".,?") for w in problem["question"].split() if w.rstrip(".,?").isdigit()])
        expected = a + b if problem["kind"] == "sum" else a * b
        assert problem["answer"] == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_held_out_answer_is_a_training_answer(seed: int) -> None:
    train, val = sft_calculator.split_problems(200, 24, seed=seed)
    assert len(train) == 200 and len(val) == 24
    assert not {p["answer"] for p in val} & {p["answer"] for p in train}


def test_paired_changes_and_the_exact_sign_test() -> None:
    assert sft_calculator.paired_changes([0, 0, 1, 1, 0], [1, 0, 1, 0, 1]) == (2, 1)
    with pytest.raises(ValueError, match="differ in length"):
        sft_calculator.paired_changes([0.0], [])
    assert sft_calculator.sign_test_p_value(0, 0) == 1.0
    assert sft_calculator.sign_test_p_value(6, 0) == pytest.approx(1 / 64)
    # 8 gains and 2 losses: P(X >= 8) for X ~ Binomial(10, 1/2).
    assert sft_calculator.sign_test_p_value(8, 2) == pytest.approx((math.comb(10, 8) + 10 + 1) / 1024)
