"""The agent of the APO tests: two prompt templates and an LLM call; the reward checks the prompts.

The reward is the share of the task's ``needs`` words found in the rendered prompts, so a scripted
optimizer's edits have exact, known scores while the agent still talks to a real (fake) LLM server
through the proxy, which gives the optimizer real messages to read.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI

import agentlightning as agl
from agentlightning.types import NamedResources, ProxyLLM, Rollout

SEED_SYSTEM = "You are an assistant."
SEED_USER = "Question: {question}"

TRAIN = [{"question": f"train {i}", "needs": ["careful", "units"]} for i in range(4)]
VAL = [{"question": f"val {i}", "needs": ["careful", "units"]} for i in range(3)]


class TwoPromptAgent(agl.LitAgent[Any]):
    async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> float:
        llm = resources["main_llm"]
        assert isinstance(llm, ProxyLLM), "APO puts the agent's LLM behind the proxy"
        llm = llm.with_attempted_rollout(rollout)  # type: ignore[arg-type]
        system = resources["system_prompt"].format()  # type: ignore[union-attr]
        user = resources["user_prompt"].format(question=task["question"])  # type: ignore[union-attr]
        client = AsyncOpenAI(base_url=llm.endpoint, api_key="unused", max_retries=0)
        await client.chat.completions.create(
            model=llm.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            **llm.sampling_parameters,
        )
        await client.close()
        text = f"{system} {user}".lower()
        return sum(word in text for word in task["needs"]) / len(task["needs"])


def initial_resources(agent_llm_url: str) -> NamedResources:
    return {
        "system_prompt": agl.PromptTemplate(template=SEED_SYSTEM, engine="f-string"),
        "user_prompt": agl.PromptTemplate(template=SEED_USER, engine="f-string"),
        "main_llm": agl.LLM(endpoint=agent_llm_url, model="fake-model"),
    }
