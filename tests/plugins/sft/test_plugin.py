"""The installed distribution: `sft` is a registered algorithm, `agl export-dataset` a registered command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import agentlightning as agl
from agentlightning import plugins
from agentlightning.adapter import TraceToTokenSequences
from agentlightning_sft import SFT


def test_sft_and_its_command_are_registered_by_the_distribution() -> None:
    assert plugins.resolve("algorithms", "sft") is SFT
    (algorithm,) = [c for c in plugins.list_components("algorithms") if c.name == "sft"]
    assert algorithm.distribution == "agentlightning-sft"
    (command,) = [c for c in plugins.list_components("commands") if c.name == "export-dataset"]
    assert command.distribution == "agentlightning-sft"


def test_trainer_builds_sft_by_name(tmp_path: Path) -> None:
    trainer = agl.Trainer(
        algorithm={"type": "sft", "n_rounds": 2, "samples_per_task": 3, "config": {"lora_r": 4}},
        store="memory://",
        run_dir=tmp_path,
    )
    algorithm = trainer.algorithm
    assert isinstance(algorithm, SFT)
    assert algorithm.n_rounds == 2 and algorithm.samples_per_task == 3 and algorithm.config.lora_r == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples_per_task": 0}, "samples_per_task must be >= 1, got 0"),
        ({"tasks_per_round": 0}, "tasks_per_round must be >= 1 or None, got 0"),
        ({"config": {"epochs": 0}}, "epochs"),
        ({"config": {"record_format": "xml"}}, "record_format"),
    ],
)
def test_bad_settings_name_the_value(options: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SFT(**options)


async def test_an_adapter_that_cannot_build_the_records_is_refused(tmp_path: Path) -> None:
    trainer = agl.Trainer(
        algorithm=SFT(model="unused"), store="memory://", run_dir=tmp_path, adapter=TraceToTokenSequences()
    )
    with pytest.raises(
        TypeError,
        match="record_format='messages' builds records with TraceToMessages, but the Trainer's adapter is TraceToTokenSequences",
    ):
        await asyncio.to_thread(trainer.fit, agl.rollout(lambda task: 1.0), [{"q": 1}])
