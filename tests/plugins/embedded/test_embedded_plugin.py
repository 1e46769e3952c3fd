"""The plugin side of agentlightning-embedded: serving backend "embedded" and `agl serve-model`, found by hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List

import httpx
import pytest
import torch
from conftest import TOOL_PROMPT

from agentlightning import plugins
from agentlightning.serving import ServingBackend, start_serving_backend


def greedy_ids(base_url: str, model: str) -> List[int]:
    reply = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": model, "messages": TOOL_PROMPT, "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    ids: List[int] = reply.json()["choices"][0]["token_ids"]
    return ids


def test_the_plugin_registers_the_backend_and_the_command_lazily() -> None:
    code = (
        "import sys\n"
        "from agentlightning import plugins\n"
        "backends = {c.name: c.distribution for c in plugins.list_components('serving_backends')}\n"
        "commands = {c.name: c.distribution for c in plugins.list_components('commands')}\n"
        "print(backends['embedded'], commands['serve-model'], 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["agentlightning-embedded", "agentlightning-embedded", "False"]


def test_agl_plugins_lists_serving_backends_and_commands_with_their_distributions() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "plugins", "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    components = json.loads(result.stdout)["components"]
    backends = {c["name"]: c for c in components["serving_backends"]}
    assert backends["embedded"]["distribution"] == "agentlightning-embedded"
    assert backends["embedded"]["target"] == "agentlightning_embedded.backend:start_embedded_backend"
    commands = {c["name"]: c["distribution"] for c in components["commands"]}
    assert commands["serve-model"] == "agentlightning-embedded" and commands["store"] == "agentlightning"
    algorithms = {c["name"]: c["distribution"] for c in components["algorithms"]}
    assert algorithms["baseline"] == "agentlightning"


def test_embedded_backend_by_name_serves_and_takes_new_weights(tiny_model_path: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    plugins.reset_plugin_manager()
    backend = start_serving_backend(
        "embedded", str(tiny_model_path), served_model_name="policy", device="cpu", max_batch_size=4
    )
    try:
        assert isinstance(backend, ServingBackend) and backend.accepts_state_dicts
        assert (backend.model_name, backend.weights_version, backend.request_extras()) == ("policy", 0, {})
        before = greedy_ids(backend.base_url, "policy")

        torch.manual_seed(3)
        config = LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        trainee = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path), config)
        with pytest.raises(ValueError, match="needs its peft LoraConfig"):
            backend.load_lora(get_peft_model_state_dict(trainee))
        assert backend.load_lora(get_peft_model_state_dict(trainee), config) == 1
        with_lora = greedy_ids(backend.base_url, "policy")

        folder = tmp_path / "adapter"
        trainee.save_pretrained(folder)
        assert backend.load_lora(folder) == 2  # the same adapter from a folder
        assert greedy_ids(backend.base_url, "policy") == with_lora
        assert with_lora != before  # a random adapter changes the greedy reply
        assert backend.load_weights(str(tiny_model_path)) == 3
    finally:
        backend.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{backend.base_url}/models", timeout=2)
