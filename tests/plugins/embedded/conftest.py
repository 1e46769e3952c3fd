"""Fixtures for the model server tests: a tiny Qwen2 built locally and real servers on ephemeral ports.

Nothing is downloaded: :func:`agentlightning_testing.tiny_model.create_tiny_model` trains a small
tokenizer and builds random weights. The default model (Qwen2.5-Coder) is never used here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Dict, List

import pytest

# Keep torch to one thread: the machine's cores are shared with other test sessions.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from agentlightning_embedded.engine import GenerationEngine  # noqa: E402
from agentlightning_embedded.server import ModelServer  # noqa: E402
from agentlightning_testing.tiny_model import create_tiny_model  # noqa: E402

torch.set_num_threads(1)

MODEL_NAME = "tiny-qwen2"


def pytest_configure(config: pytest.Config) -> None:
    # peft still calls a transformers method deprecated in 5.x; nothing these tests can act on.
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


CALCULATOR_TOOL: Dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
TOOL_PROMPT: List[Dict[str, Any]] = [{"role": "user", "content": "What is 12+7?"}]
TOOL_CALL_TEXT = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12+7"}}\n</tool_call>'
BARE_CALL_TEXT = '```json\n{"name": "calculator", "arguments": {"expression": "12+7"}}\n```'


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.getbasetemp() / "tiny-qwen2")


def assert_same_greedy_tokens(
    engine: GenerationEngine, prompt: List[int], expected: List[int], got: List[int], *, logit_tolerance: float = 1e-3
) -> None:
    """``got`` decodes ``prompt`` greedily to the same tokens as ``expected``, computed another way.

    Batched and single-row forward passes sum floats in another order, which may break a near-tie
    between two tokens differently on another CPU. So the decodings may part only at a token where
    the two candidates' logits are within ``logit_tolerance`` of each other (the rest then differs
    by construction); anywhere else, and in length, they must be identical.
    """
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            with torch.inference_mode():
                logits = engine.model(torch.tensor([prompt + expected[:index]])).logits[0, -1].float()
            gap = abs(float(logits[want] - logits[have]))
            assert gap <= logit_tolerance, f"decodings part at token {index} ({want} vs {have}), logit gap {gap:.2e}"
            return
    assert len(got) == len(expected), (expected, got)


def make_server(path: Path, **engine_options: Any) -> ModelServer:
    engine_options.setdefault("max_batch_size", 8)
    engine = GenerationEngine.from_pretrained(str(path), model_name=MODEL_NAME, **engine_options)
    return ModelServer(engine, port=0)


@pytest.fixture(scope="session")
def server(tiny_model_path: Path) -> Iterator[ModelServer]:
    """A shared server for tests that only read; tests that swap weights use ``fresh_server``."""
    with make_server(tiny_model_path) as running:
        yield running


@pytest.fixture
def fresh_server(tiny_model_path: Path) -> Iterator[ModelServer]:
    with make_server(tiny_model_path) as running:
        yield running


def fine_tune(base: Path, target: Path, answer_text: str) -> Path:
    """Save to ``target`` the tiny model fine-tuned to answer ``TOOL_PROMPT`` (calculator offered) with ``answer_text``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    prompt = tokenizer.apply_chat_template(
        TOOL_PROMPT, tools=[CALCULATOR_TOOL], add_generation_prompt=True, return_dict=False
    )
    answer = tokenizer.encode(answer_text, add_special_tokens=False) + [tokenizer.eos_token_id]
    input_ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):  # about 20 steps are enough
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.005:
            break
    model.eval()
    model.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tool_call_weights(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights that answer ``TOOL_PROMPT`` with ``TOOL_CALL_TEXT`` (Qwen's tagged tool call)."""
    return fine_tune(tiny_model_path, tmp_path_factory.mktemp("tool-call-model"), TOOL_CALL_TEXT)


@pytest.fixture(scope="session")
def bare_call_weights(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights that answer ``TOOL_PROMPT`` with the call's JSON in a code fence, without the tags."""
    return fine_tune(tiny_model_path, tmp_path_factory.mktemp("bare-call-model"), BARE_CALL_TEXT)
