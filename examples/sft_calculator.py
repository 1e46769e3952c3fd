"""The quickstart's calculator agent trained with SFT (rejection sampling), or with GRPO on the same budget.

The task sits at the edge of the embedded default model (Qwen2.5-Coder-0.5B-Instruct): a mix of 2-digit
sums, 2-digit x 1-digit and 3-digit x 2-digit products as word problems, a ``calculator`` tool, and a
system prompt with one example tool call. Sampled at temperature 0.7 the model solves some problems and
fails others, so rejection sampling has successes to learn from and failures to leave out.

``--algorithm sft`` (the default): each round plays training problems several times, keeps the rollouts
that got the right number (reward 1), fine-tunes a LoRA adapter on their LLM calls (the tool calls and
the final answers) with TRL's SFTTrainer, and serves the new adapter before the next round.
``--algorithm grpo``: the same problems, prompt, sampling, LoRA and number of training rollouts, learned
with GRPO instead. Held-out problems (none shares its answer with a training problem) are scored
greedily before and after; the script prints the accuracy, the problems newly solved and newly failed
with an exact sign test, and the process's CPU minutes. ``bench/sft_bench.py --learning`` runs it for
both algorithms over several seeds.

    nox -s example_sft                              # installs everything, runs SFT with the defaults
    python examples/sft_calculator.py --algorithm grpo --seed 1 --summary grpo-1.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import agentlightning as agl
from agentlightning_grpo.quickstart import CALCULATOR_TOOL, calculator, parse_answer

# Left to the tool list alone the 0.5B model names the function after the story ("marbles"); with one
# example call it uses the tool on a good share of these problems, and gets the rest wrong.
SYSTEM_PROMPT = (
    "Solve the arithmetic word problem with the calculator tool. To call it, reply exactly like this:\n"
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 34"}}\n</tool_call>\n'
    "When you get the result, reply 'Answer: <number>'."
)
MAX_TURNS = 3
KINDS = ("sum", "product_2x1", "product_3x2")
_PRODUCT_QUESTIONS = [
    "A warehouse has {a} shelves and each shelf holds {b} boxes. How many boxes are there in total?",
    "A school orders {a} packs of pencils with {b} pencils in each pack. How many pencils does it get?",
    "A farmer plants {a} rows of trees with {b} trees in each row. How many trees are planted?",
    "A printer prints {a} pages per minute for {b} minutes. How many pages does it print?",
]
_SUM_QUESTIONS = [
    "Tom has {a} marbles and finds {b} more. How many marbles does he have now?",
    "A library has {a} books and buys {b} more. How many books does it have now?",
]


@agl.rollout
async def edge_calculator_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    """One word problem: chat with the calculator tool until a reply without tool calls; 1.0 for the right number."""
    from openai import AsyncOpenAI

    messages: List[Dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": task["question"]},
    ]
    request: Dict[str, Any] = {"model": llm.model, "tools": [CALCULATOR_TOOL], **llm.sampling_parameters}
    final_text: Optional[str] = None
    # A busy CPU may queue a call for many minutes: the rollout's own timeout ends it, not the client's 10.
    client = AsyncOpenAI(base_url=llm.endpoint, api_key="agentlightning", max_retries=0, timeout=3600.0)
    async with client:
        for _ in range(MAX_TURNS):
            conversation: Any = messages  # plain dicts: JSON as it goes over the wire
            message = (await client.chat.completions.create(**request, messages=conversation)).choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            final_text = message.content
            if not message.tool_calls:
                break
            for call in message.tool_calls:
                try:
                    arguments = json.loads(call.model_dump().get("function", {}).get("arguments") or "{}")
                    result = calculator(str(arguments.get("expression", "")))
                except (ValueError, AttributeError):
                    result = "error: arguments must be JSON with an 'expression' string"
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    answer = parse_answer(final_text)
    return 1.0 if answer is not None and abs(answer - task["answer"]) < 1e-6 else 0.0


def make_problems(n: int, *, seed: int) -> List[Dict[str, Any]]:
    """``n`` word problems cycling through the three kinds (easiest first), each with its ``kind``."""
    draw = random.Random(seed)
    problems = []
    for index in range(n):
        kind = KINDS[index % len(KINDS)]
        if kind == "sum":
            a, b = draw.randint(10, 99), draw.randint(10, 99)
            question, answer = draw.choice(_SUM_QUESTIONS).format(a=a, b=b), a + b
        else:
            a, b = (
                (draw.randint(12, 99), draw.randint(3, 9))
                if kind == "product_2x1"
                else (
                    draw.randint(101, 999),
                    draw.randint(11, 99),
                )
            )
            question, answer = draw.choice(_PRODUCT_QUESTIONS).format(a=a, b=b), a * b
        problems.append({"question": question, "answer": float(answer), "kind": kind})
    return problems


def split_problems(train_size: int, val_size: int, *, seed: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Training and held-out problems; no held-out answer is the answer of a training problem (no leakage)."""
    train = make_problems(train_size, seed=seed * 1000 + 1)
    seen = {p["answer"] for p in train}
    val = [p for p in make_problems(val_size * 4, seed=seed * 1000 + 2) if p["answer"] not in seen][:val_size]
    if len(val) < val_size:
        raise ValueError(f"only {len(val)} held-out problems have answers disjoint from the training problems")
    return train, val


def paired_changes(before: List[float], after: List[float]) -> Tuple[int, int]:
    """Problems that went from wrong to right, and from right to wrong (the same problems, in order)."""
    if len(before) != len(after):
        raise ValueError(f"paired rewards differ in length: {len(before)} and {len(after)}")
    return (
        sum(b < 1.0 <= a for b, a in zip(before, after, strict=True)),
        sum(a < 1.0 <= b for b, a in zip(before, after, strict=True)),
    )


def sign_test_p_value(gained: int, lost: int) -> float:
    """One-sided exact sign test (exact McNemar): the chance of >= ``gained`` improvements among the
    ``gained + lost`` changed problems if a change were as likely to be a loss as a gain."""
    changed = gained + lost
    return sum(math.comb(changed, k) for k in range(gained, changed + 1)) / 2.0**changed if changed else 1.0


def build_algorithm(args: argparse.Namespace) -> agl.Algorithm:
    """SFT or GRPO with the same model, LoRA, learning rate, sampling and training rollouts per iteration."""
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    common: Dict[str, Any] = {"model": args.model, "val_every": 0, "sampling": sampling, "progress": not args.quiet}
    if args.algorithm == "grpo":
        from agentlightning_grpo import GRPO

        return GRPO(
            config={
                "group_size": args.samples_per_task,
                "learning_rate": args.learning_rate,
                "seed": args.seed,
                "dtype": args.dtype,
                "micro_batch_tokens": 1024,  # bounds a 0.5B model's activations to about 2 GB on CPU
            },
            n_steps=args.iterations,
            tasks_per_step=args.tasks_per_iteration,
            serving_options={"dtype": args.dtype},
            **common,
        )
    from agentlightning_sft import SFT

    return SFT(
        config={
            "learning_rate": args.learning_rate,
            "epochs": args.epochs,
            "batch_size": 4,
            "seed": args.seed,
            "dtype": args.dtype,
        },
        n_rounds=args.iterations,
        tasks_per_round=args.tasks_per_iteration,
        samples_per_task=args.samples_per_task,
        reward_threshold=1.0,
        serving_options={"dtype": args.dtype},
        **common,
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", choices=["sft", "grpo"], default="sft")
    parser.add_argument("--model", default=None, help="Model folder or hub id (default: the embedded default model).")
    parser.add_argument("--iterations", type=int, default=5, help="SFT rounds or GRPO steps (default: 5).")
    parser.add_argument("--tasks-per-iteration", type=int, default=3, help="Training problems per round/step.")
    parser.add_argument("--samples-per-task", type=int, default=4, help="Rollouts per problem (GRPO's group size).")
    parser.add_argument("--val-size", type=int, default=24, help="Held-out problems (default: 24).")
    parser.add_argument("--train-size", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="LoRA learning rate.")
    parser.add_argument("--epochs", type=float, default=2.0, help="SFT: passes over each round's kept records.")
    parser.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature of training rollouts.")
    parser.add_argument("--max-tokens", type=int, default=64, help="Completion limit per model call.")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="Weights' dtype.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="Run folder (default: agl_runs/<algorithm>-calculator-<time>).")
    parser.add_argument("--resume", action="store_true", help="Continue the run in --run-dir.")
    parser.add_argument("--summary", default=None, help="Also write the figures printed at the end to this JSON file.")
    parser.add_argument("--quiet", action="store_true", help="No live progress display.")
    args = parser.parse_args(argv)
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    # The run prints its own progress: no model-loading bars, request logs or deprecation notices.
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)

    run_dir = Path(args.run_dir or f"agl_runs/{args.algorithm}-calculator-{time.strftime('%Y%m%d-%H%M%S')}")
    train, val = split_problems(args.train_size, args.val_size, seed=args.seed)
    algorithm = build_algorithm(args)
    concurrency = max(args.tasks_per_iteration * args.samples_per_task, args.val_size)
    trainer = agl.Trainer(
        algorithm=algorithm, runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=concurrency), run_dir=run_dir
    )
    started = time.perf_counter()
    trainer.fit(edge_calculator_agent, train, val_dataset=val, resume=args.resume)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    log: Any = algorithm.log
    validations = log.of_kind("validation")
    before, after = validations[0], validations[-1]
    gained, lost = paired_changes(before["rewards"], after["rewards"])
    cpu_minutes = (usage.ru_utime + usage.ru_stime) / 60
    validation_cpu_minutes = sum(v["cpu_seconds"] for v in validations) / 60
    summary = {
        "algorithm": args.algorithm,
        "seed": args.seed,
        "settings": {k: v for k, v in vars(args).items() if k not in ("summary", "quiet")},
        "held_out": before["n"],
        "before": before["accuracy"],
        "after": after["accuracy"],
        "gain_points": (after["accuracy"] - before["accuracy"]) * 100,
        "newly_solved": gained,
        "newly_failed": lost,
        "p_value": sign_test_p_value(gained, lost),
        # Held-out rollouts that did not finish (scored 0): a clean measurement has none.
        "failed_rollouts": [before["failed"], after["failed"]],
        "wall_minutes": (time.perf_counter() - started) / 60,
        "cpu_minutes": cpu_minutes,
        "training_cpu_minutes": cpu_minutes - validation_cpu_minutes,
        "peak_rss_gb": usage.ru_maxrss / 1024**2,
        "iterations": [r for r in log.records if r.get("kind") != "validation"],
        "rewards_before": before["rewards"],
        "rewards_after": after["rewards"],
    }
    unit = "SFT rounds" if args.algorithm == "sft" else "GRPO steps"
    print()
    print(f"Held-out accuracy ({before['n']} problems no training answer leaks into, greedy, same prompt):")
    print(f"  before training:   {before['accuracy']:.1%}")
    print(f"  after {args.iterations} {unit}: {after['accuracy']:.1%}  ({summary['gain_points']:+.1f} points)")
    print(f"  newly solved {gained}, newly failed {lost} (exact sign test, one-sided p = {summary['p_value']:.4f})")
    if before["failed"] or after["failed"]:
        print(f"  held-out rollouts that did not finish (scored 0): {before['failed']} before, {after['failed']} after")
    print(
        f"Finished in {summary['wall_minutes']:.1f} min, {cpu_minutes:.1f} CPU-minutes "
        f"({summary['training_cpu_minutes']:.1f} outside validation). Run folder: {run_dir}"
    )
    print(f"  curve:   {run_dir / 'curve.png'}")
    if args.algorithm == "sft":
        print(f"  dataset: agl export-dataset --run {run_dir} --format jsonl --out {run_dir / 'sft.jsonl'}")
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
