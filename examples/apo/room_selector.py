"""APO on a tool-using agent that picks a meeting room: two prompt templates, an exact reward.

The agent reads a booking request, calls the ``list_rooms`` tool (the day's rooms: capacity,
equipment, booked hours) and answers ``Room: <id>``. A request fixes the number of people, the hour
and sometimes a projector or a whiteboard; the right room is the *smallest* one that fits every
constraint (ties: the lowest id). Reward: 1.0 for that room, 0.5 for a room that fits but is not the
smallest, 0.0 otherwise. The starting prompts are weak on purpose: they mention neither the
constraints nor the smallest-room rule.

    python examples/apo/room_selector.py                       # embedded model as agent and optimizer
    python examples/apo/room_selector.py --optimizer-url https://api.example.com/v1 --optimizer-model big-model

``nox -s example_apo`` runs it on the embedded default model (Qwen2.5-Coder-0.5B-Instruct, CPU).
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any, Dict, List, Optional

from openai import AsyncOpenAI
from room_tasks import best_room, fits, make_tasks, parse_answer, reward

import agentlightning as agl
from agentlightning.types import NamedResources, ProxyLLM, Rollout

__all__ = ["RoomSelector", "best_room", "fits", "make_tasks", "parse_answer", "reward"]

SYSTEM_PROMPT = "You are a helpful assistant."
REQUEST_PROMPT = "{request}"
LIST_ROOMS_TOOL: Dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "list_rooms",
        "description": "List today's meeting rooms with capacity, equipment and booked hours.",
        "parameters": {"type": "object", "properties": {}},
    },
}
MAX_TURNS = 3


class RoomSelector(agl.LitAgent[Dict[str, Any]]):
    """A plain ``openai`` tool-calling agent with two prompt templates: ``system_prompt`` and ``request_prompt``."""

    async def rollout_async(self, task: Dict[str, Any], resources: NamedResources, rollout: Rollout) -> float:
        llm = resources["main_llm"]
        if isinstance(llm, ProxyLLM):
            llm = llm.with_attempted_rollout(rollout)  # type: ignore[arg-type]
        assert isinstance(llm, agl.LLM)
        system = resources["system_prompt"].format()  # type: ignore[union-attr]
        request = resources["request_prompt"].format(request=task["request"])  # type: ignore[union-attr]
        messages: List[Dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": request}]
        client = AsyncOpenAI(base_url=llm.endpoint, api_key=llm.api_key or "unused", max_retries=0)
        text = ""
        try:
            for _ in range(MAX_TURNS):
                response = await client.chat.completions.create(
                    model=llm.model,
                    messages=messages,
                    tools=[LIST_ROOMS_TOOL],
                    **llm.sampling_parameters,  # type: ignore[arg-type]
                )
                message = response.choices[0].message
                text = message.content or ""
                if not message.tool_calls:
                    break
                messages.append(message.model_dump(exclude_none=True))
                listing = json.dumps([{k: v for k, v in r.items()} for r in task["rooms"]])
                for call in message.tool_calls:
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": listing})
        finally:
            await client.close()
        return reward(task, parse_answer(text))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=12, help="training requests")
    parser.add_argument("--val", type=int, default=10, help="validation requests")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--beam-width", type=int, default=2)
    parser.add_argument("--branch-factor", type=int, default=2)
    parser.add_argument("--gradient-batch-size", type=int, default=3)
    parser.add_argument("--max-rollouts", type=int, default=None)
    parser.add_argument("--n-runners", type=int, default=1)
    parser.add_argument("--agent-url", help="the agent's model (OpenAI API root); default: the embedded model")
    parser.add_argument("--agent-model", default="default")
    parser.add_argument("--optimizer-url", help="the optimizer's endpoint; default: the agent's embedded model")
    parser.add_argument("--optimizer-model", default="default")
    parser.add_argument("--optimizer-key", default=None)
    parser.add_argument("--optimizer-timeout", type=float, default=600.0, help="seconds per optimizer call")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Deprecation notices of the model libraries are not the run's progress.
    warnings.filterwarnings("ignore", category=FutureWarning)

    resources: NamedResources = {
        "system_prompt": agl.PromptTemplate(template=SYSTEM_PROMPT, engine="f-string"),
        "request_prompt": agl.PromptTemplate(template=REQUEST_PROMPT, engine="f-string"),
    }
    if args.agent_url:
        resources["main_llm"] = agl.LLM(endpoint=args.agent_url, model=args.agent_model)
    optimizer = None
    if args.optimizer_url:
        optimizer = {"base_url": args.optimizer_url, "model": args.optimizer_model, "api_key": args.optimizer_key}
    algorithm = agl.Trainer(
        algorithm={
            "type": "apo",
            "optimizer": optimizer,
            "rounds": args.rounds,
            "beam_width": args.beam_width,
            "branch_factor": args.branch_factor,
            "gradient_batch_size": args.gradient_batch_size,
            "max_rollouts": args.max_rollouts,
            "seed": args.seed,
            "sampling": {"temperature": 0.7, "max_tokens": 160},
            "optimizer_max_tokens": 400,
            "optimizer_timeout": args.optimizer_timeout,
            "serving_options": {"max_batch_size": 16},
        },
        n_runners=args.n_runners,
        runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=16),
        run_dir=args.run_dir,
        initial_resources=resources,
    )
    with algorithm as trainer:
        trainer.fit(
            RoomSelector(), make_tasks(args.train, args.seed + 1), val_dataset=make_tasks(args.val, args.seed + 2)
        )
        apo = trainer.algorithm
        assert apo is not None
        seed_score = apo.candidates[0].score  # type: ignore[attr-defined]
        best = apo.best  # type: ignore[attr-defined]
        print(
            f"\nvalidation score: seed {seed_score:.3f} -> best {best.score:.3f} ({best.id}); budget {apo.budget.as_dict()}"
        )  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
