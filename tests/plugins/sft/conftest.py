"""Fixtures of the SFT plugin's tests: the tiny Qwen2 of the test kit (random weights, local tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agentlightning_testing.tiny_model import create_tiny_model

# Two shared cores: one thread per test process keeps torch from fighting other work for them.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.getbasetemp() / "tiny-qwen2")
