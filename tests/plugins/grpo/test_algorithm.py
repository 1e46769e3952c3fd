"""The GRPO algorithm end to end on a tiny model: runner -> proxy -> serving backend -> update -> new weights served.

Also what GRPO takes from the Trainer (its adapter and LLM proxy) and the serving backend it asks for by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import pytest
import torch
from safetensors.torch import load_file

import agentlightning as agl
from agentlightning import hookimpl, plugins
from agentlightning.adapter import TraceAdapter, TraceToTokenSequences
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.semconv import LLMCallAttributes
from agentlightning.serving import WeightsSource
from agentlightning.store import InMemoryLightningStore
from agentlightning.types import Span
from agentlightning_embedded.backend import EmbeddedServingBackend, start_embedded_backend
from agentlightning_grpo import GRPO, FailedRolloutWarning
from agentlightning_grpo.algorithm import POLICY_BACKEND_NAME
from agentlightning_testing.tiny_model import create_tiny_model

AGENT_SOURCE = '''
import agentlightning as agl
from openai import AsyncOpenAI


@agl.rollout
async def vowel_agent(task, llm) -> float:
    """Rewards text rich in vowels: random text varies, so groups carry a learning signal."""
    client = AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0)
    reply = await client.chat.completions.create(
        model=llm.model, messages=[{"role": "user", "content": task["q"]}], **llm.sampling_parameters
    )
    if task.get("fail"):
        raise RuntimeError("the agent's tool crashed")
    text = reply.choices[0].message.content or ""
    return sum(c in "aeiou" for c in text) / max(len(text), 1)
'''


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def agent_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("agent")
    (folder / "vowel_agent_mod.py").write_text(AGENT_SOURCE)
    return folder


@pytest.fixture
def vowel_agent(agent_module: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(agent_module))
    import vowel_agent_mod  # type: ignore[import-not-found]

    return vowel_agent_mod.vowel_agent


TRAIN = [{"q": "hello"}, {"q": "world"}, {"q": "tiny"}, {"q": "model"}]
VAL = [{"q": "alpha"}, {"q": "beta"}, {"q": "gamma"}]


def _grpo(tiny_model: Path, **overrides: Any) -> GRPO:
    settings: Dict[str, Any] = {
        "model": str(tiny_model),
        "config": {"group_size": 3, "learning_rate": 0.05, "lora_r": 4, "lora_alpha": 8, "seed": 0},
        "n_steps": 1,
        "tasks_per_step": 2,
        "val_every": 0,
        "sampling": {"temperature": 1.0, "max_tokens": 12},
        "progress": False,
        "max_batch_size": 8,
    }
    settings.update(overrides)
    return GRPO(**settings)


def _trainer(algorithm: GRPO, store: Any, run_dir: Path) -> agl.Trainer:
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
    return agl.Trainer(algorithm=algorithm, runner=runner, store=store, run_dir=run_dir)


async def _val_outputs(store: Any, step: int) -> Dict[str, List[int]]:
    """Response token ids of the greedy validation rollouts of ``step``, by question."""
    outputs: Dict[str, List[int]] = {}
    for rollout in await store.query_rollouts():
        if rollout.mode == "val" and (rollout.metadata or {}).get("step") == step:
            spans = await store.query_spans(rollout.rollout_id)
            (call,) = [s for s in spans if LLMCallAttributes.RESPONSE_TOKEN_IDS in s.attributes]
            outputs[rollout.input["q"]] = call.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]
    return outputs


async def test_one_step_changes_the_lora_weights_and_what_the_server_answers(
    tiny_model: Path, vowel_agent: Any, tmp_path: Path
) -> None:
    store = InMemoryLightningStore()
    algorithm = _grpo(tiny_model)
    await _run_in_thread(_trainer(algorithm, store, tmp_path / "run"), vowel_agent)

    assert algorithm.log is not None
    (train,) = algorithm.log.of_kind("train")
    assert train["step"] == 1 and train["rollouts"] == 6 and not train["skipped"]
    assert train["loss_tokens"] > 0 and train["informative_groups"] >= 1
    assert [r["step"] for r in algorithm.log.of_kind("validation")] == [0, 1]

    # The LoRA B matrices start at zero; one step moved them.
    (checkpoint,) = sorted((tmp_path / "run" / "checkpoints").iterdir())
    tensors = load_file(str(next(checkpoint.glob("*.safetensors"))))
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and any(torch.count_nonzero(t) > 0 for t in lora_b)

    # The same greedy validation prompts get different answers from the server after the update.
    before, after = await _val_outputs(store, 0), await _val_outputs(store, 1)
    assert set(before) == set(after) == {"alpha", "beta", "gamma"}
    assert any(before[q] != after[q] for q in before)
    assert (tmp_path / "run" / "curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"kind": "train"') == 1


async def test_a_failed_rollout_leaves_its_group_with_a_warning(
    tiny_model: Path, vowel_agent: Any, tmp_path: Path
) -> None:
    store = InMemoryLightningStore()
    algorithm = _grpo(tiny_model, tasks_per_step=2)
    with pytest.warns(FailedRolloutWarning, match="left out of their groups"):
        await _run_in_thread(
            _trainer(algorithm, store, tmp_path / "run"),
            vowel_agent,
            train=[{"q": "hello"}, {"q": "boom", "fail": True}],
            val=None,
        )
    assert algorithm.log is not None
    (train,) = algorithm.log.of_kind("train")
    assert train["failed"] == 3 and train["rollouts"] == 6 and not train["skipped"]


async def _run_in_thread(trainer: agl.Trainer, agent: Any, train: Any = TRAIN, val: Any = VAL) -> None:
    await asyncio.to_thread(trainer.fit, agent, train, val_dataset=val)


RESUMABLE_RUN = """
import sys
sys.path.insert(0, {agent_dir!r})
import agentlightning as agl
from agentlightning_grpo import GRPO
from vowel_agent_mod import vowel_agent

algorithm = GRPO(
    model={model!r},
    config={{"group_size": 2, "learning_rate": 0.05, "lora_r": 4, "lora_alpha": 8, "seed": 0}},
    n_steps=4, tasks_per_step=2, val_every=0, sampling={{"temperature": 1.0, "max_tokens": 8}}, progress=False,
)
runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
trainer = agl.Trainer(algorithm=algorithm, runner=runner, run_dir={run_dir!r})
trainer.fit(vowel_agent, {train!r}, resume={resume})
"""


def _launch(tiny_model: Path, agent_module: Path, run_dir: Path, resume: bool) -> subprocess.Popen[bytes]:
    script = RESUMABLE_RUN.format(
        agent_dir=str(agent_module), model=str(tiny_model), run_dir=str(run_dir), train=TRAIN, resume=resume
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stderr=subprocess.PIPE)


def _train_records(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return [r for r in records if r["kind"] == "train"]


def test_a_run_killed_after_step_2_resumes_at_step_3(tiny_model: Path, agent_module: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = _launch(tiny_model, agent_module, run_dir, resume=False)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len(_train_records(run_dir)) >= 2 and (run_dir / "checkpoints" / "step-000002").is_dir():
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    history = _train_records(run_dir)[:2]
    assert [r["step"] for r in history] == [1, 2]

    resumed = _launch(tiny_model, agent_module, run_dir, resume=True)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    records = _train_records(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[:2] == history  # the metrics history before the kill is kept as it was


# -- what GRPO takes from the Trainer, and its serving backend by name -----------------------------


class CountingSequences(TraceToTokenSequences):
    """The default adapter, counting how often it is used."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def adapt(self, source: Sequence[Span], /) -> Any:
        self.calls += 1
        return super().adapt(source)


class FolderOnlyBackend:
    """The embedded server behind a backend that, like vLLM, takes weights only as folders."""

    accepts_state_dicts = False

    def __init__(self, inner: EmbeddedServingBackend) -> None:
        self.inner = inner
        self.loaded: List[str] = []

    base_url = property(lambda self: self.inner.base_url)
    model_name = property(lambda self: self.inner.model_name)
    weights_version = property(lambda self: self.inner.weights_version)

    def load_weights(self, source: WeightsSource) -> int:
        assert isinstance(source, (str, Path)), "folders only"
        self.loaded.append(str(source))
        return self.inner.load_weights(str(source))

    def load_lora(self, source: WeightsSource, config: Any = None) -> int:
        assert isinstance(source, (str, Path)), "folders only"
        self.loaded.append(str(source))
        return self.inner.load_lora(str(source))

    def request_extras(self) -> Dict[str, Any]:
        return {}

    def close(self) -> None:
        self.inner.close()


STARTED: List[FolderOnlyBackend] = []


class FolderOnlyPlugin:
    @hookimpl
    def agl_register_serving_backends(self, register: Callable[[str, Any], None]) -> None:
        def start(model: str, **options: Any) -> FolderOnlyBackend:
            backend = FolderOnlyBackend(start_embedded_backend(model, **options))
            STARTED.append(backend)
            return backend

        register("folders-only", start)


def _fit(algorithm: GRPO, agent: Any, run_dir: Path, **trainer_options: Any) -> agl.Trainer:
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
    trainer = agl.Trainer(
        algorithm=algorithm, runner=runner, store=InMemoryLightningStore(), run_dir=run_dir, **trainer_options
    )
    trainer.fit(agent, TRAIN)
    return trainer


async def test_grpo_uses_the_trainers_adapter_and_proxy(tiny_model: Path, vowel_agent: Any, tmp_path: Path) -> None:
    adapter = CountingSequences()
    store = InMemoryLightningStore()
    other = ProxyBackend("http://127.0.0.1:9/v1", models=["someone-else"], name="other")
    proxy = LLMProxy(store, [other])  # not started: GRPO starts it and adds the policy's backend
    algorithm = _grpo(tiny_model, val_every=0)
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
    trainer = agl.Trainer(
        algorithm=algorithm, runner=runner, store=store, run_dir=tmp_path / "run", adapter=adapter, llm_proxy=proxy
    )
    await asyncio.to_thread(trainer.fit, vowel_agent, TRAIN)

    assert adapter.calls == 6  # 2 tasks x group of 3, each adapted once
    assert proxy.stats.calls >= 6  # the agents' calls went through the Trainer's proxy
    assert [b.name for b in proxy.backends] == ["other", POLICY_BACKEND_NAME]
    assert not proxy.running  # GRPO started it, so GRPO stopped it
    assert algorithm.log is not None and not algorithm.log.of_kind("train")[0]["skipped"]


async def test_an_adapter_that_makes_no_token_sequences_is_refused(
    tiny_model: Path, vowel_agent: Any, tmp_path: Path
) -> None:
    class CountSpans(TraceAdapter[int]):
        def adapt(self, source: Sequence[Span], /) -> int:
            return len(source)

    algorithm = _grpo(tiny_model, n_steps=1)
    with pytest.raises(TypeError, match="GRPO trains on token sequences, but the adapter CountSpans returned int"):
        await asyncio.to_thread(_fit, algorithm, vowel_agent, tmp_path / "run", adapter=CountSpans())


async def test_grpo_serves_through_the_backend_it_names(tiny_model: Path, vowel_agent: Any, tmp_path: Path) -> None:
    plugins.get_plugin_manager().register(FolderOnlyPlugin(), name="folders-only")
    STARTED.clear()
    try:
        algorithm = _grpo(tiny_model, serving="folders-only", serving_options={"device": "cpu", "max_batch_size": 8})
        await asyncio.to_thread(_fit, algorithm, vowel_agent, tmp_path / "run")
    finally:
        plugins.reset_plugin_manager()
    (backend,) = STARTED
    # The updated LoRA adapter went to the backend as a PEFT folder under the run, not as tensors.
    assert backend.loaded == [str(tmp_path / "run" / "serving" / "lora")]
    assert (tmp_path / "run" / "serving" / "lora" / "adapter_config.json").is_file()
    assert backend.weights_version == 1


def test_an_unknown_serving_backend_names_the_installed_ones(
    tiny_model: Path, vowel_agent: Any, tmp_path: Path
) -> None:
    algorithm = _grpo(tiny_model, serving="nope")
    with pytest.raises(agl.AgentLightningError, match="unknown serving backend 'nope'; known names: embedded"):
        _fit(algorithm, vowel_agent, tmp_path / "run")
