"""Fixtures of the GRPO plugin's tests (helpers live in grpo_test_support.py)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from grpo_test_support import make_sequence, make_tiny_model

from agentlightning.adapter.sequence import TokenSequence

# Two shared cores: one thread per test process keeps torch from fighting other work for them.
torch.set_num_threads(1)


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return make_tiny_model()


@pytest.fixture
def sequence_factory() -> Callable[..., TokenSequence]:
    return make_sequence
