"""A small valid verl config for one CPU "GPU", and a multi-turn agent that plays through the proxy."""

from __future__ import annotations

import copy
import re
from typing import Any, Dict

import openai

import agentlightning as agl
from agentlightning.types import LLM


def small_config(**overrides: Any) -> Dict[str, Any]:
    """verl keys of a run on one device with groups of 4: verl's own checks pass on it."""
    config: Dict[str, Any] = {
        "actor_rollout_ref": {
            "model": {"path": "/models/tiny"},
            "actor": {
                "ppo_mini_batch_size": 2,
                "ppo_micro_batch_size_per_gpu": 1,
                "ppo_epochs": 1,
                "use_kl_loss": False,
                "optim": {"lr": 0.05},
            },
            "rollout": {"log_prob_micro_batch_size_per_gpu": 1, "temperature": 1.0},
            "ref": {"log_prob_micro_batch_size_per_gpu": 1},
        },
        "data": {"max_prompt_length": 256, "max_response_length": 64},
        "trainer": {"n_gpus_per_node": 1, "nnodes": 1},
        "algorithm": {"adv_estimator": "grpo"},
    }
    merged = copy.deepcopy(config)
    for dotted, value in overrides.items():
        node = merged
        *parents, leaf = dotted.split("__")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return merged


END = "<|im_end|>"


def user_turn(text: str) -> str:
    return f"<|im_start|>user\n{text}{END}\n<|im_start|>assistant\n"


@agl.rollout
async def tool_agent(task: Dict[str, Any], llm: LLM) -> float:
    """Two model turns around a tool result appended to one text prompt; the reward counts vowels.

    With ``task["step_rewards"]`` it also emits a reward after the first turn.
    """
    client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0)
    sampling = {k: v for k, v in llm.sampling_parameters.items() if k in ("temperature", "top_p")}
    prompt = user_turn(task["question"])
    texts = []
    for turn in range(2):
        completion = await client.completions.create(model=llm.model, prompt=prompt, max_tokens=8, **sampling)
        text = completion.choices[0].text
        texts.append(text)
        prompt += text
        if turn == 0:
            if task.get("step_rewards"):
                agl.emit_reward(0.25)
            prompt += "\n" + user_turn("<tool_response>42</tool_response>")
    joined = "".join(texts)
    return len(re.findall(r"[aeiouAEIOU]", joined)) / max(len(joined), 1)
