"""Prompt, then weights, in one run on one store: ``Chain(APO, GRPO)`` on the tiny model.

APO (with a scripted optimizer) finds a better system prompt and publishes it; GRPO then trains the
weights, and every rollout it plays gets that prompt, carried beside the policy's LLM resource.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from openai import AsyncOpenAI

import agentlightning as agl
from agentlightning.types import NamedResources, ProxyLLM, Rollout
from agentlightning_apo import APO
from agentlightning_grpo import GRPO
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply
from agentlightning_testing.tiny_model import create_tiny_model

SEED_PROMPT = "You are an assistant."
BETTER_PROMPT = "You are a careful assistant."
TRAIN = [{"q": "hello"}, {"q": "world"}, {"q": "tiny"}, {"q": "model"}]
VAL = [{"q": "alpha"}, {"q": "beta"}]


class PromptedAgent(agl.LitAgent[Dict[str, Any]]):
    """Half the reward is the prompt (it says "careful"), half the reply's vowels (so GRPO's groups vary)."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts_seen: List[str] = []

    async def rollout_async(self, task: Dict[str, Any], resources: NamedResources, rollout: Rollout) -> float:
        llm = resources["main_llm"]
        assert isinstance(llm, ProxyLLM), "both stages put the model behind the proxy"
        llm = llm.with_attempted_rollout(rollout)  # type: ignore[arg-type]
        system = resources["system_prompt"].format()  # type: ignore[union-attr]
        self.prompts_seen.append(system)
        client = AsyncOpenAI(base_url=llm.endpoint, api_key="unused", max_retries=0)
        try:
            reply = await client.chat.completions.create(
                model=llm.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": task["q"]}],
                **llm.sampling_parameters,
            )
        finally:
            await client.close()
        text = reply.choices[0].message.content or ""
        vowels = sum(c in "aeiou" for c in text) / max(len(text), 1)
        return 0.5 * ("careful" in system) + 0.5 * vowels


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def optimizer_llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=["optimizer"]) as server:
        yield server


def test_grpo_starts_from_the_prompt_apo_published(
    tiny_model: Path, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(
        FakeReply.text("The prompt never asks the agent to be careful."),
        FakeReply.text(f"<prompt>{BETTER_PROMPT}</prompt>"),
    )
    apo = APO(
        optimizer={"base_url": optimizer_llm.base_url, "model": "optimizer"},
        agent_model=str(tiny_model),
        serving_options={"max_batch_size": 8},
        rounds=1,
        beam_width=1,
        branch_factor=1,
        gradient_batch_size=2,
        sampling={"max_tokens": 6},
        progress=False,
    )
    grpo = GRPO(
        model=str(tiny_model),
        config={"group_size": 2, "learning_rate": 0.05, "lora_r": 4, "lora_alpha": 8, "seed": 0},
        n_steps=1,
        tasks_per_step=2,
        val_every=0,
        sampling={"temperature": 1.0, "max_tokens": 8},
        progress=False,
        max_batch_size=8,
    )
    agent = PromptedAgent()
    store = agl.InMemoryLightningStore()
    trainer = agl.Trainer(
        algorithm=agl.Chain(apo, grpo),
        runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=8),
        store=store,
        run_dir=tmp_path / "run",
        initial_resources={"system_prompt": agl.PromptTemplate(template=SEED_PROMPT, engine="f-string")},
    )
    trainer.fit(agent, TRAIN, val_dataset=VAL)

    # APO: the seed scored lower than the edit, which it published as the best prompt.
    assert apo.best is not None and apo.best.prompts == {"system_prompt": BETTER_PROMPT}
    assert apo.candidates[0].score is not None and apo.best.score is not None
    assert apo.best.score > apo.candidates[0].score

    # GRPO trained one step, and every rollout it enqueued got APO's prompt beside the policy's LLM.
    assert grpo.log is not None
    (train,) = grpo.log.of_kind("train")
    assert train["rollouts"] == 4 and train["loss_tokens"] > 0

    async def grpo_resources() -> List[NamedResources]:
        found = []
        for rollout in await store.query_rollouts():
            if "group" in (rollout.metadata or {}):  # GRPO's rollouts (APO's carry its own metadata key)
                assert rollout.resources_id is not None
                update = await store.get_resources_by_id(rollout.resources_id)
                assert update is not None
                found.append(update.resources)
        return found

    played = asyncio.run(grpo_resources())
    assert len(played) == 4 + 2 * len(VAL)  # a training step, validation before and after
    for resources in played:
        assert isinstance(resources["main_llm"], ProxyLLM)
        assert resources["system_prompt"].template == BETTER_PROMPT  # type: ignore[union-attr]
    # The agent saw the seed (APO's seed scoring, its training batch), then only the better prompt.
    assert agent.prompts_seen[: len(VAL)] == [SEED_PROMPT] * len(VAL)
    assert agent.prompts_seen[-len(played) :] == [BETTER_PROMPT] * len(played)


def test_a_chain_needs_algorithms() -> None:
    with pytest.raises(ValueError, match="at least one"):
        agl.Chain()
    with pytest.raises(TypeError, match="stage 1 must be an Algorithm"):
        agl.Chain(agl.Baseline(), "grpo")  # type: ignore[arg-type]
