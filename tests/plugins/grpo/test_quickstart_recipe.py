"""The quickstart's recipe: held-out problems unseen in training, reproducible draws, the paired test."""

from __future__ import annotations

import pytest

from agentlightning_grpo.quickstart import (
    PROBLEM_KINDS,
    calculator,
    make_problems,
    paired_changes,
    sign_test_p_value,
    split_problems,
)


def test_held_out_problems_never_appear_in_training_and_seeds_reproduce() -> None:
    for seed in range(5):
        train, val = split_problems(200, 30, seed=seed)
        assert len(val) == 30 and len(train) == 200
        assert not {p["question"] for p in val} & {p["question"] for p in train}
        assert not {p["answer"] for p in val} & {p["answer"] for p in train}
        assert {p["kind"] for p in val} == set(PROBLEM_KINDS)
        assert split_problems(200, 30, seed=seed) == (train, val)
    assert split_problems(200, 30, seed=0)[1] != split_problems(200, 30, seed=1)[1]


def test_problems_cycle_through_the_kinds_and_their_answers_are_right() -> None:
    problems = make_problems(30, seed=4)
    assert [p["kind"] for p in problems[:3]] == list(PROBLEM_KINDS)
    assert {p["kind"] for p in problems} == set(PROBLEM_KINDS)
    for problem in problems:
        numbers = [int(word) for word in problem["question"].replace("?", " ").split() if word.isdigit()]
        expression = f"{numbers[0]} + {numbers[1]}" if problem["kind"] == "sum" else f"{numbers[0]} * {numbers[1]}"
        assert float(calculator(expression)) == problem["answer"]


def test_paired_changes_and_the_exact_sign_test() -> None:
    before = [0.0, 0.0, 1.0, 1.0, 0.0]
    after = [1.0, 0.0, 1.0, 0.0, 1.0]
    assert paired_changes(before, after) == (2, 1)
    assert sign_test_p_value(2, 1) == pytest.approx(0.5)  # P(X >= 2), X ~ Binomial(3, 1/2)
    assert sign_test_p_value(16, 0) == pytest.approx(0.5**16)
    assert sign_test_p_value(0, 0) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_changes([1.0], [1.0, 0.0])


def test_training_can_keep_to_some_kinds_while_held_out_problems_keep_every_kind() -> None:
    train, val = split_problems(200, 30, seed=3, train_kinds=("product_2x1", "product_3x2"))
    assert {p["kind"] for p in train} == {"product_2x1", "product_3x2"}
    assert {p["kind"] for p in val} == set(PROBLEM_KINDS)
    assert not {p["answer"] for p in val} & {p["answer"] for p in train}
    with pytest.raises(ValueError, match=r"problem kinds must be among .*'division'"):
        make_problems(3, seed=0, kinds=("sum", "division"))
    with pytest.raises(ValueError, match="problem kinds must be among"):
        make_problems(3, seed=0, kinds=())


def test_the_quickstart_cli_takes_the_recipe_options() -> None:
    from agentlightning_grpo.quickstart import RECIPE, build_parser

    args = build_parser().parse_args(["--train-kinds", "sum", "--serving", "vllm", "--dtype", "float32"])
    assert args.train_kinds == ["sum"] and args.serving == "vllm" and args.dtype == "float32"
    assert args.group_size == RECIPE.group_size and args.tasks_per_step == RECIPE.tasks_per_step
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--train-kinds", "division"])
