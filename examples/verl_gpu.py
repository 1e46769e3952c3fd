"""GRPO with verl on a GPU node: a plain `openai` agent answers arithmetic questions, verl trains the model.

On a GPU node (see plugins/verl/README.md for the install line)::

    python examples/verl_gpu.py --model Qwen/Qwen2.5-0.5B-Instruct --gpus 1 --steps 20

``--check`` only builds and validates the verl config (no GPU needed) and prints the keys that matter.
"""

from __future__ import annotations

import argparse
import random
import re
from typing import Any, Dict, List

import openai

import agentlightning as agl
from agentlightning_verl import VERL, build_verl_config


@agl.rollout
async def arithmetic_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    """One chat call through the proxy (which records the token ids); reward 1 for the right number."""
    client = openai.AsyncOpenAI(base_url=llm.endpoint, api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(
        model=llm.model,
        messages=[{"role": "user", "content": f"{task['question']} Answer with the number only."}],
        **llm.sampling_parameters,
    )
    numbers = re.findall(r"-?\d+", reply.choices[0].message.content or "")
    return 1.0 if numbers and int(numbers[-1]) == task["answer"] else 0.0


def tasks(count: int, seed: int) -> List[Dict[str, Any]]:
    draw = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = draw.randint(2, 99), draw.randint(2, 99)
        out.append({"question": f"What is {a} * {b}?", "answer": a * b})
    return out


def verl_config(args: argparse.Namespace) -> Dict[str, Any]:
    """verl keys for one node: FSDP actor (LoRA off), vLLM rollout, GRPO, small batches."""
    return {
        "actor_rollout_ref": {
            "model": {"path": args.model, "use_remove_padding": True},
            "actor": {
                "ppo_mini_batch_size": args.tasks_per_step,
                "ppo_micro_batch_size_per_gpu": 4,
                "use_kl_loss": True,
                "kl_loss_coef": 0.001,
                "optim": {"lr": 1e-6},
            },
            "rollout": {
                "tensor_model_parallel_size": 1,
                "gpu_memory_utilization": 0.5,
                "log_prob_micro_batch_size_per_gpu": 8,
                "temperature": 1.0,
            },
            "ref": {"log_prob_micro_batch_size_per_gpu": 8},
        },
        "data": {"max_prompt_length": 512, "max_response_length": 256},
        "trainer": {"n_gpus_per_node": args.gpus, "nnodes": 1, "logger": ["console"]},
        "algorithm": {"adv_estimator": "grpo"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Hugging Face id or local folder of the model to train")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--runners", type=int, default=8)
    parser.add_argument("--check", action="store_true", help="validate the config and stop (no GPU needed)")
    args = parser.parse_args()
    settings = {"n_steps": args.steps, "tasks_per_step": args.tasks_per_step, "group_size": args.group_size}
    if args.check:
        config, parsed = build_verl_config(verl_config(args), **settings)
        print(f"config valid: model {config.actor_rollout_ref.model.path}, {config.trainer.n_gpus_per_node} GPU(s)")
        print(
            f"each step: {parsed.tasks_per_step} tasks x {parsed.group_size} rollouts "
            f"(data.train_batch_size={config.data.train_batch_size}, rollout.n={config.actor_rollout_ref.rollout.n}), "
            f"advantages: {config.algorithm.adv_estimator}"
        )
        return
    algorithm = VERL(verl_config(args), **settings)
    trainer = agl.Trainer(algorithm=algorithm, n_runners=args.runners)
    trainer.fit(arithmetic_agent, train_dataset=tasks(256, seed=0))
    for record in algorithm.history:
        print(f"step {record['step']}: reward {record['reward_mean']}, {record['step_seconds']:.0f}s")


if __name__ == "__main__":
    main()
