"""GRPO with ``serving="vllm"``: the recipe's wiring against the stand-in vLLM server of the vLLM tests.

The stand-in launches exactly as vLLM does (``python -m vllm.entrypoints.openai.api_server``), answers
chat completions with token ids and logprobs, and takes LoRA adapters by folder; the policy is the
tiny Qwen2. What is checked: the server GRPO starts, the proxy routing the agent's calls to it with
vLLM's request extras, the adapter pushed as a folder, and the next step served under its name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import pytest

import agentlightning as agl
from agentlightning import plugins
from agentlightning.store import InMemoryLightningStore
from agentlightning_grpo import GRPO
from agentlightning_testing.tiny_model import create_tiny_model

pytest.importorskip("agentlightning_vllm")

# transformers deprecation notes raised from inside PEFT, not from this package.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:transformers")

FAKE_SERVER = Path(__file__).resolve().parents[1] / "vllm" / "fake_vllm_api_server.py"


@agl.rollout
async def vowel_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": task["q"]}], **llm.sampling_parameters
        )
    text = reply.choices[0].message.content or ""
    return sum(c in "aeiou" for c in text) / max(len(text), 1)


def _events(record: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def test_grpo_trains_through_the_vllm_backend(tmp_path: Path) -> None:
    package = tmp_path / "fake-site" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    shutil.copy(FAKE_SERVER, package / "api_server.py")
    record = tmp_path / "fake-vllm.jsonl"
    model = create_tiny_model(tmp_path / "tiny")

    plugins.reset_plugin_manager()
    algorithm = GRPO(
        model=str(model),
        serving="vllm",
        serving_options={
            "env": {"PYTHONPATH": str(tmp_path / "fake-site"), "FAKE_VLLM_RECORD": str(record)},
            "startup_timeout": 60.0,
            "stop_timeout": 5.0,
            "log_path": tmp_path / "vllm.log",
        },
        config={"group_size": 2, "learning_rate": 0.05, "lora_r": 4, "lora_alpha": 8, "seed": 0},
        n_steps=2,
        tasks_per_step=2,
        val_every=0,
        sampling={"temperature": 1.0, "max_tokens": 8},
        progress=False,
    )
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=4)
    trainer = agl.Trainer(algorithm=algorithm, runner=runner, store=InMemoryLightningStore(), run_dir=tmp_path / "run")
    trainer.fit(vowel_agent, [{"q": "hello"}, {"q": "world"}, {"q": "tiny"}])

    events = _events(record)
    (start,) = [e for e in events if e["event"] == "start"]
    argv = start["argv"]
    assert argv[argv.index("--model") + 1] == str(model)
    assert argv[argv.index("--served-model-name") + 1] == "policy" and "--enable-lora" in argv
    chats = [e["body"] for e in events if e["event"] == "request" and e["path"] == "/v1/chat/completions"]
    assert len(chats) == 8  # 2 steps x 2 tasks x groups of 2
    assert all(body.get("return_token_ids") for body in chats)  # the backend's request extras, via the proxy
    # Step 1 asks the base model; GRPO then pushes its adapter as a folder and step 2 asks for it by name.
    assert [body["model"] for body in chats[:4]] == ["policy"] * 4
    assert [body["model"] for body in chats[4:]] == ["policy-lora"] * 4
    loads = [e["body"] for e in events if e["event"] == "request" and e["path"] == "/v1/load_lora_adapter"]
    assert len(loads) == 2 and loads[0]["lora_path"] == str(tmp_path / "run" / "serving" / "lora")
    assert (tmp_path / "run" / "serving" / "lora" / "adapter_config.json").is_file()
    assert algorithm.log is not None
    train = algorithm.log.of_kind("train")
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["loss_tokens"] > 0 and not r["skipped"] for r in train)
