"""Swapping weights and LoRA adapters without a restart, and tool calls from a model trained to make them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest
import torch
from conftest import CALCULATOR_TOOL, MODEL_NAME, TOOL_PROMPT
from openai import OpenAI

from agentlightning_embedded.server import ModelServer

PROMPT = [{"role": "user", "content": "Tell me a story."}]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def greedy_ids(server: ModelServer, messages: List[Dict[str, Any]] = PROMPT, **extra: Any) -> List[int]:
    body = {"messages": messages, "max_tokens": 16, "temperature": 0, **extra}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    ids: List[int] = response.json()["choices"][0]["token_ids"]
    return ids


def model_info(server: ModelServer) -> Dict[str, Any]:
    info: Dict[str, Any] = httpx.get(f"{server.url}/v1/agl/model", timeout=30).json()
    return info


@pytest.fixture(scope="module")
def lora_adapter(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny model with random, non-zero A and B (so it changes the outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False)
    adapter = get_peft_model(base, config)
    target = tmp_path_factory.mktemp("lora")
    adapter.save_pretrained(target)
    return target


def test_lora_over_http_changes_outputs_and_unload_restores_them(fresh_server: ModelServer, lora_adapter: Path) -> None:
    before = greedy_ids(fresh_server)
    info = model_info(fresh_server)
    assert info["weights_version"] == 0 and info["lora"]["loaded"] is False and info["model"] == MODEL_NAME

    response = httpx.post(f"{fresh_server.url}/v1/agl/model/lora", json={"path": str(lora_adapter)}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["weights_version"] == 1
    assert response.json()["lora"] == {"loaded": True, "source": str(lora_adapter)}
    with_lora = greedy_ids(fresh_server)
    assert with_lora != before
    fingerprint = httpx.post(
        f"{fresh_server.url}/v1/chat/completions", json={"messages": PROMPT, "max_tokens": 1}, timeout=60
    ).json()["system_fingerprint"]
    assert fingerprint == "agl-weights-1"

    # Loading the same adapter again (same config: only tensors are copied) keeps the outputs.
    httpx.post(f"{fresh_server.url}/v1/agl/model/lora", json={"path": str(lora_adapter)}, timeout=60)
    assert greedy_ids(fresh_server) == with_lora
    assert model_info(fresh_server)["weights_version"] == 2

    response = httpx.delete(f"{fresh_server.url}/v1/agl/model/lora", timeout=60)
    assert response.status_code == 200
    assert response.json()["lora"]["loaded"] is False and response.json()["weights_version"] == 3
    assert greedy_ids(fresh_server) == before


def test_lora_from_an_in_memory_state_dict(fresh_server: ModelServer, tiny_model_path: Path) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    before = greedy_ids(fresh_server)
    torch.manual_seed(2)
    config = LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainee = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), config)
    version = fresh_server.load_lora_state_dict(get_peft_model_state_dict(trainee), config, name="step-1")
    assert version == 1
    first = greedy_ids(fresh_server)
    assert first != before

    # A "training step": new B weights with the same config are copied into the loaded adapter.
    with torch.no_grad():
        for name, parameter in trainee.named_parameters():
            if "lora_B" in name:
                parameter.mul_(-3.0)
    assert fresh_server.load_lora_state_dict(get_peft_model_state_dict(trainee), config.to_dict(), name="step-2") == 2
    assert greedy_ids(fresh_server) not in (before, first)
    assert model_info(fresh_server)["lora"]["source"] == "step-2"

    assert fresh_server.unload_lora() == 3
    assert greedy_ids(fresh_server) == before


def test_full_weights_swap_over_http(fresh_server: ModelServer, tiny_model_path: Path, tool_call_weights: Path) -> None:
    before = greedy_ids(fresh_server)
    response = httpx.post(f"{fresh_server.url}/v1/agl/model/weights", json={"path": str(tool_call_weights)}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["weights_version"] == 1
    assert greedy_ids(fresh_server) != before
    # The original weights come back the same way.
    httpx.post(f"{fresh_server.url}/v1/agl/model/weights", json={"path": str(tiny_model_path)}, timeout=60)
    assert greedy_ids(fresh_server) == before
    assert model_info(fresh_server)["weights_version"] == 2


def test_weights_swap_from_a_state_dict_keeps_a_loaded_lora(fresh_server: ModelServer, lora_adapter: Path) -> None:
    fresh_server.load_lora(lora_adapter)
    with_lora = greedy_ids(fresh_server)
    original = {
        name: tensor.clone() for name, tensor in fresh_server.engine.model.state_dict().items() if "lora_" not in name
    }
    renamed = {name.replace(".base_layer", ""): tensor for name, tensor in original.items()}
    fresh_server.load_weights({"model.norm.weight": torch.zeros_like(renamed["model.norm.weight"])})
    assert greedy_ids(fresh_server) != with_lora
    fresh_server.load_weights(renamed)
    assert greedy_ids(fresh_server) == with_lora
    assert model_info(fresh_server)["lora"]["loaded"] is True


@pytest.mark.parametrize(
    "route,body",
    [
        ("/v1/agl/model/weights", {}),
        ("/v1/agl/model/weights", {"path": 3}),
        ("/v1/agl/model/weights", {"path": "/no/such/folder"}),
        ("/v1/agl/model/lora", {"path": "/no/such/adapter"}),
    ],
)
def test_bad_swap_requests_get_400(fresh_server: ModelServer, route: str, body: Dict[str, Any]) -> None:
    response = httpx.post(f"{fresh_server.url}{route}", json=body, timeout=30)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_weights_that_do_not_fit_get_400_and_change_nothing(fresh_server: ModelServer, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    before = greedy_ids(fresh_server)
    save_file({"model.norm.weight": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    response = httpx.post(f"{fresh_server.url}/v1/agl/model/weights", json={"path": str(tmp_path)}, timeout=30)
    assert response.status_code == 400 and "shape" in response.json()["error"]["message"]
    save_file({"not.a.weight": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    response = httpx.post(f"{fresh_server.url}/v1/agl/model/weights", json={"path": str(tmp_path)}, timeout=30)
    assert response.status_code == 400 and "not in the model" in response.json()["error"]["message"]
    # A folder that is not an adapter.
    response = httpx.post(f"{fresh_server.url}/v1/agl/model/lora", json={"path": str(tmp_path)}, timeout=30)
    assert response.status_code == 400
    assert model_info(fresh_server)["weights_version"] == 0
    assert greedy_ids(fresh_server) == before


# -- tool calls from a model that makes them ----------------------------------------------------------


@pytest.fixture
def tool_server(fresh_server: ModelServer, tool_call_weights: Path) -> ModelServer:
    fresh_server.load_weights(tool_call_weights)
    return fresh_server


def test_tool_call_is_parsed_into_tool_calls(tool_server: ModelServer) -> None:
    response = httpx.post(
        f"{tool_server.url}/v1/chat/completions",
        json={"messages": TOOL_PROMPT, "tools": [CALCULATOR_TOOL], "max_tokens": 48, "temperature": 0},
        timeout=60,
    )
    body = response.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "12+7"}
    # The ids still cover the whole generated text, tags included.
    tokenizer = tool_server.engine.tokenizer
    assert "<tool_call>" in tokenizer.decode(choice["token_ids"])

    # Without tools in the request the same text is plain content.
    plain = httpx.post(
        f"{tool_server.url}/v1/chat/completions",
        json={"messages": TOOL_PROMPT, "max_tokens": 48, "temperature": 0},
        timeout=60,
    ).json()["choices"][0]
    assert "tool_calls" not in plain["message"]


def test_tool_call_with_the_openai_sdk_streamed_and_not(tool_server: ModelServer) -> None:
    client = OpenAI(base_url=tool_server.base_url, api_key="unused")
    request: Dict[str, Any] = {
        "model": MODEL_NAME,
        "messages": TOOL_PROMPT,
        "tools": [CALCULATOR_TOOL],
        "max_tokens": 48,
        "temperature": 0,
    }
    completion = client.chat.completions.create(**request)
    message = completion.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "calculator"

    stream = client.chat.completions.create(**request, stream=True)
    calls: List[Any] = []
    finish = None
    streamed_ids: List[int] = []
    for chunk in stream:
        for choice in chunk.choices:
            streamed_ids += (choice.model_extra or {}).get("token_ids", [])
            if choice.delta.tool_calls:
                calls.extend(choice.delta.tool_calls)
            assert not choice.delta.content  # the call's text is buffered, never streamed as content
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function.name == "calculator"
    assert json.loads(calls[0].function.arguments or "") == {"expression": "12+7"}
    assert streamed_ids == (completion.choices[0].model_extra or {})["token_ids"]

    # tool_choice "none": the text comes back as content.
    none = client.chat.completions.create(**request, tool_choice="none")
    assert none.choices[0].message.tool_calls is None and "<tool_call>" in (none.choices[0].message.content or "")


def test_a_call_without_tags_counts_unless_strict(fresh_server: ModelServer, bare_call_weights: Path) -> None:
    fresh_server.load_weights(bare_call_weights)
    body = {"messages": TOOL_PROMPT, "tools": [CALCULATOR_TOOL], "max_tokens": 48, "temperature": 0}
    choice = httpx.post(f"{fresh_server.url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"expression": "12+7"}

    strict = ModelServer(fresh_server.engine, port=0, lenient_tool_calls=False).start_in_thread()
    try:
        choice = httpx.post(f"{strict.url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    finally:
        strict.stop_thread()
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith("```json")


def test_a_swap_waits_for_the_sequences_in_flight(fresh_server: ModelServer, lora_adapter: Path) -> None:
    engine = fresh_server.engine
    long_body = {"messages": PROMPT, "max_tokens": 120, "temperature": 0, "ignore_eos": True}
    expected_without_lora = httpx.post(f"{fresh_server.url}/v1/chat/completions", json=long_body, timeout=60).json()

    async def scenario() -> tuple[Dict[str, Any], Dict[str, Any], bool]:
        async with httpx.AsyncClient(base_url=fresh_server.url, timeout=60) as http:
            long = asyncio.create_task(http.post("/v1/chat/completions", json=long_body))
            while not engine.busy:
                await asyncio.sleep(0.002)
            swap = engine.request_load_lora(lora_adapter)
            await asyncio.sleep(0.05)
            swapped_early = swap.done()
            later = asyncio.create_task(http.post("/v1/chat/completions", json={"messages": PROMPT, "max_tokens": 4}))
            first, second = await asyncio.gather(long, later)
            assert swap.result(timeout=30) == 1
            return first.json(), second.json(), swapped_early

    first, second, swapped_early = asyncio.run(scenario())
    assert not swapped_early  # the swap waited for the long sequence...
    assert first["system_fingerprint"] == "agl-weights-0"  # ...which was generated by one version only
    assert first["choices"][0]["token_ids"] == expected_without_lora["choices"][0]["token_ids"]
    assert second["system_fingerprint"] == "agl-weights-1"  # the request sent meanwhile waited for the swap
