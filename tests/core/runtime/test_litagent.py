"""LitAgent, FunctionalLitAgent and the @rollout / @llm_rollout / @prompt_rollout decorators."""

from __future__ import annotations

import gc
import time
import warnings
from typing import Any, List

import pytest

import agentlightning as agl
from agentlightning.litagent import FunctionalLitAgent, LitAgent, llm_rollout, prompt_rollout, rollout
from agentlightning.tracer import DummyTracer, OtelTracer
from agentlightning.types import (
    LLM,
    Attempt,
    AttemptedRollout,
    NamedResources,
    PromptTemplate,
    ProxyLLM,
    Rollout,
)


def attempted(rollout_id: str = "ro-1", attempt_id: str = "at-1") -> AttemptedRollout:
    now = time.time()
    return AttemptedRollout(
        rollout_id=rollout_id,
        input="t",
        start_time=now,
        attempt=Attempt(rollout_id=rollout_id, attempt_id=attempt_id, sequence_id=1, start_time=now),
    )


def plain_rollout() -> Rollout:
    return Rollout(rollout_id="ro-1", input="t", start_time=time.time())


class Referent:
    """Something that can be weakly referenced, standing in for a trainer or runner."""

    def __init__(self, tracer: Any = None) -> None:
        self.tracer = tracer


# -- LitAgent ------------------------------------------------------------------------------------


def test_is_async_detects_overridden_async_methods() -> None:
    class Sync(LitAgent[Any]):
        def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            return 1.0

    class Async(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            return 1.0

    class AsyncTraining(LitAgent[Any]):
        async def training_rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            return 1.0

    class AsyncValidation(Sync):
        async def validation_rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            return 1.0

    class SyncTraining(LitAgent[Any]):
        def training_rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            return 1.0

    assert not Sync().is_async()
    assert not SyncTraining().is_async()
    assert not LitAgent().is_async()
    assert Async().is_async()
    assert AsyncTraining().is_async()
    assert AsyncValidation().is_async()


async def test_training_and_validation_delegate_to_rollout() -> None:
    calls: List[str] = []

    class Sync(LitAgent[Any]):
        def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            calls.append(f"sync:{task}")
            return 1.0

    class Async(LitAgent[Any]):
        async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
            calls.append(f"async:{task}")
            return 2.0

    r = attempted()
    assert Sync().training_rollout("a", {}, r) == 1.0
    assert Sync().validation_rollout("b", {}, r) == 1.0
    assert await Async().training_rollout_async("c", {}, r) == 2.0
    assert await Async().validation_rollout_async("d", {}, r) == 2.0
    assert calls == ["sync:a", "sync:b", "async:c", "async:d"]


async def test_unimplemented_rollout_raises() -> None:
    agent = LitAgent[Any]()
    with pytest.raises(NotImplementedError, match="LitAgent"):
        agent.rollout("t", {}, attempted())
    with pytest.raises(NotImplementedError):
        await agent.rollout_async("t", {}, attempted())


def test_trained_agents_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="agent_match"):
        agent = LitAgent[Any](trained_agents="writer")
    assert agent.trained_agents == "writer"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LitAgent[Any]()


def test_trainer_and_runner_are_weak_references() -> None:
    agent = LitAgent[Any]()
    with pytest.raises(ValueError, match="Trainer"):
        agent.get_trainer()
    with pytest.raises(ValueError, match="Runner"):
        _ = agent.runner

    trainer, runner = Referent(), Referent()
    agent.set_trainer(trainer)  # type: ignore[arg-type]
    agent.set_runner(runner)  # type: ignore[arg-type]
    assert agent.trainer is trainer and agent.get_trainer() is trainer
    assert agent.runner is runner and agent.get_runner() is runner

    del trainer, runner
    gc.collect()
    with pytest.raises(ValueError, match="Trainer"):
        agent.get_trainer()
    with pytest.raises(ValueError, match="Runner"):
        agent.get_runner()


def test_tracer_is_the_runners_else_the_trainers() -> None:
    agent = LitAgent[Any]()
    runner_tracer, trainer_tracer = DummyTracer(), OtelTracer()
    trainer = Referent(trainer_tracer)
    agent.set_trainer(trainer)  # type: ignore[arg-type]
    assert agent.tracer is trainer_tracer
    runner = Referent(runner_tracer)
    agent.set_runner(runner)  # type: ignore[arg-type]
    assert agent.get_tracer() is runner_tracer
    del runner
    gc.collect()
    assert agent.tracer is trainer_tracer


# -- decorator shapes ------------------------------------------------------------------------------


def test_rollout_accepts_the_documented_shapes() -> None:
    def with_llm(task: Any, llm: LLM) -> float:
        return 1.0

    def with_llm_rollout(task: Any, llm: LLM, rollout: Rollout) -> float:
        return 1.0

    def with_prompt(task: Any, prompt_template: PromptTemplate) -> float:
        return 1.0

    def with_prompt_rollout(task: Any, prompt_template: PromptTemplate, rollout: Rollout) -> float:
        return 1.0

    def task_only(task: Any) -> float:
        return 1.0

    def task_rollout(task: Any, rollout: Rollout) -> float:
        return 1.0

    for func in (with_llm, with_llm_rollout, with_prompt, with_prompt_rollout, task_only, task_rollout):
        agent = rollout(func)
        assert isinstance(agent, FunctionalLitAgent) and isinstance(agent, LitAgent)
        assert agent.__name__ == func.__name__  # type: ignore[attr-defined]
    assert isinstance(rollout(strip_proxy=False)(with_llm), FunctionalLitAgent)
    assert agl.rollout is rollout and agl.llm_rollout is llm_rollout and agl.prompt_rollout is prompt_rollout


@pytest.mark.parametrize(
    "source",
    [
        "def f(x, llm): pass",
        "def f(task, resources): pass",
        "def f(): pass",
        "def f(llm, task): pass",
        "def f(task, llm, extra): pass",
    ],
)
def test_rollout_rejects_other_shapes(source: str) -> None:
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises((NotImplementedError, TypeError)) as info:
        rollout(namespace["f"])
    message = str(info.value)
    assert "'f'" in message
    if isinstance(info.value, NotImplementedError):
        assert "(task, llm[, rollout])" in message and "(task, prompt_template[, rollout])" in message


def test_llm_rollout_shape_errors() -> None:
    def good(task: Any, llm: LLM, rollout: Rollout) -> float:
        return 1.0

    assert isinstance(llm_rollout(good), FunctionalLitAgent)
    assert isinstance(llm_rollout(strip_proxy=False)(good), FunctionalLitAgent)

    def wrong_second(task: Any, prompt_template: PromptTemplate) -> float:
        return 1.0

    def wrong_first(x: Any, llm: LLM) -> float:
        return 1.0

    def one_param(task: Any) -> float:
        return 1.0

    def extra_param(task: Any, llm: LLM, other: Any) -> float:
        return 1.0

    for func in (wrong_second, wrong_first, one_param):
        with pytest.raises(TypeError, match=r"\(task, llm\[, rollout\]\)"):
            llm_rollout(func)
    with pytest.raises(TypeError, match="other"):
        llm_rollout(extra_param)


def test_prompt_rollout_shape_errors() -> None:
    def good(task: Any, prompt_template: PromptTemplate) -> float:
        return 1.0

    assert isinstance(prompt_rollout(good), FunctionalLitAgent)
    assert isinstance(prompt_rollout()(good), FunctionalLitAgent)

    def wrong(task: Any, llm: LLM) -> float:
        return 1.0

    with pytest.raises(TypeError, match=r"\(task, prompt_template\[, rollout\]\)"):
        prompt_rollout(wrong)


# -- FunctionalLitAgent ------------------------------------------------------------------------------


def test_functional_agent_is_still_callable_as_the_function() -> None:
    @rollout
    def add_one(task: int, llm: LLM) -> float:
        """Docstring kept."""
        return task + 1.0

    assert add_one(1, LLM(endpoint="http://x", model="m")) == 2.0  # type: ignore[operator]
    assert add_one.__doc__ == "Docstring kept."
    assert not add_one.is_async()


async def test_async_functional_agent_is_callable_and_async() -> None:
    @rollout
    async def agent(task: int) -> float:
        return task * 2.0

    assert agent.is_async()
    assert await agent(3) == 6.0  # type: ignore[operator]
    assert await agent.rollout_async(4, {}, attempted()) == 8.0


async def test_sync_and_async_entry_points_are_not_mixed() -> None:
    @rollout
    def sync_agent(task: Any) -> float:
        return 1.0

    @rollout
    async def async_agent(task: Any) -> float:
        return 1.0

    with pytest.raises(RuntimeError, match="rollout_async"):
        async_agent.rollout("t", {}, attempted())
    with pytest.raises(RuntimeError, match="rollout"):
        await sync_agent.rollout_async("t", {}, attempted())


def test_rollout_parameter_receives_the_attempted_rollout() -> None:
    seen: List[Any] = []

    @rollout
    def agent(task: Any, rollout: Rollout) -> float:
        seen.append((task, rollout))
        return 1.0

    r = attempted()
    assert agent.rollout("input", {"p": PromptTemplate(template="x")}, r) == 1.0
    assert seen == [("input", r)]


# -- resource picking ---------------------------------------------------------------------------------


def test_the_only_llm_and_prompt_template_are_picked_whatever_their_names() -> None:
    llms: List[LLM] = []
    prompts: List[PromptTemplate] = []

    @rollout
    def llm_agent(task: Any, llm: LLM) -> float:
        llms.append(llm)
        return 1.0

    @rollout
    def prompt_agent(task: Any, prompt_template: PromptTemplate) -> float:
        prompts.append(prompt_template)
        return 1.0

    model = LLM(endpoint="http://llm:8000/v1", model="m", sampling_parameters={"temperature": 0.2})
    prompt = PromptTemplate(template="Q: {q}", engine="f-string")
    resources: NamedResources = {"main_llm": model, "system": prompt}
    llm_agent.rollout("t", resources, attempted())
    prompt_agent.rollout("t", resources, attempted())
    assert llms == [model] and prompts == [prompt]


def test_proxy_llm_is_stripped_to_the_attempt_route() -> None:
    received: List[LLM] = []

    @rollout
    def agent(task: Any, llm: LLM) -> float:
        received.append(llm)
        return 1.0

    proxy = ProxyLLM(endpoint="http://proxy:4000/v1", model="policy", api_key="k", sampling_parameters={"t": 1})
    agent.rollout("t", {"llm": proxy}, attempted("ro-abc", "at-def"))
    (llm,) = received
    assert type(llm) is LLM
    assert llm.endpoint == "http://proxy:4000/rollout/ro-abc/attempt/at-def/v1"
    assert (llm.model, llm.api_key, llm.sampling_parameters) == ("policy", "k", {"t": 1})


@pytest.mark.parametrize(
    "endpoint, expected",
    [
        ("http://proxy:4000/v1/", "http://proxy:4000/rollout/r/attempt/a/v1"),
        ("http://proxy:4000", "http://proxy:4000/rollout/r/attempt/a"),
        ("http://proxy:4000/", "http://proxy:4000/rollout/r/attempt/a"),
    ],
)
def test_proxy_llm_route_keeps_or_omits_v1(endpoint: str, expected: str) -> None:
    received: List[LLM] = []

    @llm_rollout
    def agent(task: Any, llm: LLM) -> float:
        received.append(llm)
        return 1.0

    agent.rollout("t", {"llm": ProxyLLM(endpoint=endpoint, model="m")}, attempted("r", "a"))
    assert received[0].endpoint == expected


def test_strip_proxy_false_passes_the_proxy_llm_through() -> None:
    received: List[LLM] = []

    @llm_rollout(strip_proxy=False)
    def agent(task: Any, llm: LLM) -> float:
        received.append(llm)
        return 1.0

    proxy = ProxyLLM(endpoint="http://proxy:4000/v1", model="m")
    agent.rollout("t", {"llm": proxy}, attempted())
    assert received == [proxy] and isinstance(received[0], ProxyLLM)


def test_proxy_llm_needs_an_attempted_rollout() -> None:
    @rollout
    def agent(task: Any, llm: LLM) -> float:
        return 1.0

    with pytest.raises(ValueError, match="AttemptedRollout"):
        agent.rollout("t", {"llm": ProxyLLM(endpoint="http://p/v1", model="m")}, plain_rollout())


def test_several_llms_are_ambiguous() -> None:
    @rollout
    def agent(task: Any, llm: LLM) -> float:
        return 1.0

    resources: NamedResources = {
        "policy": LLM(endpoint="http://a/v1", model="a"),
        "judge": ProxyLLM(endpoint="http://b/v1", model="b"),  # a ProxyLLM is an LLM too
    }
    with pytest.raises(ValueError, match="several") as info:
        agent.rollout("t", resources, attempted())
    assert "judge" in str(info.value) and "policy" in str(info.value)


def test_a_resource_named_like_the_parameter_resolves_the_ambiguity() -> None:
    received: List[LLM] = []

    @rollout
    def agent(task: Any, llm: LLM) -> float:
        received.append(llm)
        return 1.0

    chosen = LLM(endpoint="http://a/v1", model="a")
    agent.rollout("t", {"llm": chosen, "judge": LLM(endpoint="http://b/v1", model="b")}, attempted())
    assert received == [chosen]


def test_several_prompt_templates_are_ambiguous() -> None:
    @rollout
    def agent(task: Any, prompt_template: PromptTemplate) -> float:
        return 1.0

    resources: NamedResources = {"a": PromptTemplate(template="a"), "b": PromptTemplate(template="b")}
    with pytest.raises(ValueError, match="several"):
        agent.rollout("t", resources, attempted())


def test_missing_resource_is_a_clear_error() -> None:
    @rollout
    def agent(task: Any, llm: LLM) -> float:
        return 1.0

    with pytest.raises(ValueError, match="LLM") as info:
        agent.rollout("t", {"prompt": PromptTemplate(template="x")}, attempted())
    assert "prompt" in str(info.value)
