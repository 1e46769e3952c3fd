"""The Python side of the Node.js example: an algorithm that enqueues tasks in a store server and
learns from what the Node runners (runner.js) record. Nothing here runs the agent.

Baseline (one pass over the tasks, a report per rollout) against a running store server and proxy::

    agl store serve --store sqlite:///runs/node/store.db                       # terminal 1
    agl proxy --backend http://127.0.0.1:4749/v1 --store http://127.0.0.1:4747 --token-ids   # terminal 2
    node examples/node_agent/runner.js --store http://127.0.0.1:4747          # terminals 3, 4, ...
    python examples/node_agent/train.py --store http://127.0.0.1:4747 --proxy http://127.0.0.1:4750 --model MODEL

GRPO on the embedded model (needs ``pip install torch==2.13.0 "./core[model,default-model]" ./plugins/grpo``;
GRPO starts its own model server and proxy and publishes the proxy to the runners)::

    python examples/node_agent/train.py --store http://127.0.0.1:4747 --algorithm grpo --steps 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from typing import Any, Dict, List

from agentlightning.adapter import TracerTraceToTriplet
from agentlightning.algorithm import Baseline
from agentlightning.store import open_store
from agentlightning.types import ProxyLLM


def make_tasks(n: int, *, seed: int) -> List[Dict[str, Any]]:
    """Arithmetic word problems: 3-digit by 2-digit products (the calculator tool helps)."""
    draw = random.Random(seed)
    tasks = []
    for _ in range(n):
        a, b = draw.randint(101, 999), draw.randint(11, 99)
        tasks.append({"question": f"A crate holds {a} bottles. How many bottles are in {b} crates?", "answer": a * b})
    return tasks


async def run_baseline(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    baseline = Baseline(max_queue_length=args.max_in_flight)
    adapter = TracerTraceToTriplet()
    baseline.set_store(store)
    baseline.set_adapter(adapter)
    baseline.set_initial_resources({"main_llm": ProxyLLM(endpoint=f"{args.proxy.rstrip('/')}/v1", model=args.model)})
    tasks = make_tasks(args.tasks, seed=args.seed)
    print(f"Baseline: {len(tasks)} tasks into {args.store}; waiting for runners to take them", flush=True)
    try:
        await baseline.run(train_dataset=tasks)
    finally:
        await store.close()
    failed = 0
    for report in sorted(baseline.reports, key=lambda r: r.rollout.rollout_id):
        triplets = report.adapted or []
        print(
            f"  {report.rollout.rollout_id} {report.rollout.status:<9} reward {report.final_reward}  "
            f"spans {len(report.spans)}  triplets {len(triplets)}",
            flush=True,
        )
        failed += report.rollout.status != "succeeded"
    rewards = [r.final_reward or 0.0 for r in baseline.reports]
    mean = sum(rewards) / len(rewards) if rewards else 0.0
    print(f"{len(baseline.reports) - failed}/{len(baseline.reports)} rollouts succeeded, mean reward {mean:.3f}")
    return 1 if failed else 0


async def run_grpo(args: argparse.Namespace) -> int:
    from agentlightning_grpo import GRPO

    store = open_store(args.store)
    tasks = make_tasks(args.tasks, seed=args.seed)
    held_out = make_tasks(8, seed=args.seed + 1)
    grpo = GRPO(n_steps=args.steps, tasks_per_step=args.tasks_per_step, run_dir=args.run_dir)
    grpo.set_store(store)
    try:
        await grpo.run(train_dataset=tasks, val_dataset=held_out)
    finally:
        await store.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="http://127.0.0.1:4747", help="URL of the store server (agl store serve).")
    parser.add_argument("--algorithm", choices=["baseline", "grpo"], default="baseline")
    parser.add_argument("--proxy", default="http://127.0.0.1:4750", help="Baseline: the LLM proxy (agl proxy).")
    parser.add_argument("--model", default="fake-model", help="Baseline: the model name the proxy serves.")
    parser.add_argument("--tasks", type=int, default=8, help="How many tasks to generate.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-in-flight", type=int, default=4, help="Baseline: rollouts queued or running at once.")
    parser.add_argument("--steps", type=int, default=3, help="GRPO: training steps.")
    parser.add_argument("--tasks-per-step", type=int, default=2, help="GRPO: tasks per step (each played a group).")
    parser.add_argument("--run-dir", default=None, help="GRPO: checkpoints, metrics and the curve.")
    args = parser.parse_args()
    return asyncio.run(run_baseline(args) if args.algorithm == "baseline" else run_grpo(args))


if __name__ == "__main__":
    sys.exit(main())
