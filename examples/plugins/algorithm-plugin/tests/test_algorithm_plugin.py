"""The installed example algorithm plugin: found by name through its entry point, trained with a real Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

import agentlightning as agl
from agentlightning import plugins
from agl_example_algorithm.algorithm import PromptSearch

CANDIDATES = ["Answer: {question}", "Think step by step, then answer: {question}"]


@agl.rollout
def picky_agent(task: Dict[str, Any], prompt_template: agl.PromptTemplate) -> float:
    """Stands in for a model that only gets it right when told to think step by step."""
    prompt = prompt_template.format(question=task["question"])
    agl.emit_message(prompt)
    return 1.0 if "step by step" in prompt else 0.0


def test_the_algorithm_is_found_by_name_and_listed_with_its_distribution() -> None:
    assert plugins.resolve("algorithms", "prompt-search") is PromptSearch
    (info,) = [c for c in plugins.list_components("algorithms") if c.name == "prompt-search"]
    assert (info.distribution, info.source) == ("agl-example-algorithm", "entry point")


def test_a_trainer_fits_it_by_name(tmp_path: Path) -> None:
    trainer = agl.Trainer(
        algorithm={"type": "prompt-search", "candidates": CANDIDATES},
        n_runners=2,
        store=f"sqlite:///{tmp_path / 'store.db'}",
    )
    algorithm = trainer.algorithm
    assert isinstance(algorithm, PromptSearch)
    tasks = [{"question": f"{a} + {a}"} for a in range(4)]
    trainer.fit(picky_agent, tasks, val_dataset=tasks[:2])
    assert algorithm.best == CANDIDATES[1]
    assert algorithm.scores == {CANDIDATES[0]: 0.0, CANDIDATES[1]: 1.0, f"val:{CANDIDATES[1]}": 1.0}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one candidate"):
        PromptSearch([])
