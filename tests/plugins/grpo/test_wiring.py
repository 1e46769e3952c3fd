"""GRPO takes what the Trainer gives it (adapter, LLM proxy) and asks for its serving backend by name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import pytest
from test_algorithm import TRAIN, _grpo, agent_module, tiny_model, vowel_agent  # noqa: F401 -- fixtures

import agentlightning as agl
from agentlightning import hookimpl, plugins
from agentlightning.adapter import TraceAdapter, TraceToTokenSequences
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.serving import WeightsSource
from agentlightning.store import InMemoryLightningStore
from agentlightning.types import Span
from agentlightning_embedded.backend import EmbeddedServingBackend, start_embedded_backend
from agentlightning_grpo import GRPO
from agentlightning_grpo.algorithm import POLICY_BACKEND_NAME


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


def test_an_unknown_serving_backend_names_the_installed_ones(tiny_model: Path, tmp_path: Path) -> None:
    algorithm = _grpo(tiny_model, serving="nope")
    with pytest.raises(agl.AgentLightningError, match="unknown serving backend 'nope'; known names: embedded"):
        _fit(algorithm, lambda task: 0.0, tmp_path / "run")
