"""The quickstart: a tool-using calculator agent measurably improves with GRPO on this machine.

The agent is a plain ``openai`` agent: it answers arithmetic word problems, may call a
``calculator`` tool (OpenAI tool calling, served through the model's own chat template) and ends
with ``Answer: <number>``. The reward is 1 for the right number, else 0. Small models get such
products wrong without the tool and often call the tool in a broken format: GRPO teaches them to
use it. ``agl quickstart`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import agentlightning as agl

__all__ = ["CALCULATOR_TOOL", "calculator", "calculator_agent", "make_problems", "main", "parse_answer"]

SYSTEM_PROMPT = (
    "You are a careful math assistant. For any multiplication, division, addition or subtraction, call the "
    "calculator tool instead of computing in your head. When you know the result, reply with exactly "
    "'Answer: <number>'."
)
CALCULATOR_TOOL: Dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression with + - * / and parentheses, e.g. '37 * 24 + 5'.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "The expression to evaluate."}},
            "required": ["expression"],
        },
    },
}
MAX_TURNS = 3

_OPERATORS: Dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def calculator(expression: str) -> str:
    """Evaluate ``expression`` safely (numbers, + - * /, parentheses); errors come back as text for the model."""

    def evaluate(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return float(_OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = evaluate(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise ValueError(f"unsupported expression element {type(node).__name__}")

    try:
        if len(expression) > 200:
            raise ValueError("expression too long")
        value = evaluate(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError) as exc:
        return f"error: {exc}"
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def parse_answer(text: Optional[str]) -> Optional[float]:
    """The number after 'Answer:' (or the last number in the text)."""
    if not text:
        return None
    match = re.search(r"Answer:\s*\$?(-?[\d,]*\.?\d+)", text)
    numbers = [match.group(1)] if match else re.findall(r"-?\d[\d,]*\.?\d*", text)
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", ""))
    except ValueError:
        return None


@agl.rollout
async def calculator_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    """One word problem: chat with tools until a final answer (at most ``MAX_TURNS`` model calls)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=llm.endpoint, api_key="agentlightning", max_retries=0)
    messages: List[Dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": task["question"]},
    ]
    params = dict(llm.sampling_parameters)
    final_text: Optional[str] = None
    for _ in range(MAX_TURNS):
        completion = await client.chat.completions.create(
            model=llm.model,
            messages=messages,  # type: ignore[arg-type]
            tools=[CALCULATOR_TOOL],  # type: ignore[list-item]
            **params,
        )
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        final_text = message.content
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            try:
                arguments = json.loads(call.function.arguments or "{}")  # type: ignore[union-attr]
                result = calculator(str(arguments.get("expression", "")))
            except ValueError:
                result = "error: arguments must be JSON with an 'expression' string"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    answer = parse_answer(final_text)
    return 1.0 if answer is not None and abs(answer - task["answer"]) < 1e-6 else 0.0


_TEMPLATES = [
    "A warehouse has {a} shelves and each shelf holds {b} boxes. How many boxes are there in total?",
    "A school orders {a} packs of pencils with {b} pencils in each pack. How many pencils does it get?",
    "A farmer plants {a} rows of trees with {b} trees in each row. How many trees are planted?",
    "A train carries {a} passengers on each of its {b} trips. How many passengers does it carry in all?",
    "A printer prints {a} pages per minute for {b} minutes. How many pages does it print?",
]


def make_problems(n: int, *, seed: int) -> List[Dict[str, Any]]:
    """``n`` word problems multiplying a 3-digit by a 2-digit number (hard without the tool)."""
    draw = random.Random(seed)
    problems = []
    for _ in range(n):
        a, b = draw.randint(101, 999), draw.randint(11, 99)
        problems.append({"question": draw.choice(_TEMPLATES).format(a=a, b=b), "answer": float(a * b)})
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a calculator agent with GRPO on the embedded default model.")
    parser.add_argument("--model", default=None, help="Model folder or hub id (default: the embedded default).")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps (default: 4).")
    parser.add_argument("--tasks-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--val-size", type=int, default=16, help="Held-out problems (default: 16).")
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--max-tokens", type=int, default=160, help="Completion limit per model call.")
    parser.add_argument("--run-dir", default=None, help="Run folder (default: agl_runs/quickstart-<time>).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="Continue the run in --run-dir.")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from .algorithm import GRPO

    console = Console()
    run_dir = Path(args.run_dir or f"agl_runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    model = args.model
    if model is None:
        from agentlightning.model_server.default_model import ensure_default_model

        console.print("[bold]Preparing the default model[/] (Qwen2.5-Coder-0.5B-Instruct; converted once, then cached)")
        model = str(ensure_default_model())
    train = make_problems(200, seed=args.seed + 1)
    val = make_problems(args.val_size, seed=args.seed + 2)
    algorithm = GRPO(
        model=model,
        config={"group_size": args.group_size, "learning_rate": args.learning_rate, "seed": args.seed},
        n_steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        val_every=0,
        sampling={"temperature": 1.0, "max_tokens": args.max_tokens},
    )
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=args.tasks_per_step * args.group_size)
    trainer = agl.Trainer(algorithm=algorithm, runner=runner, run_dir=run_dir)
    started = time.perf_counter()
    trainer.fit(calculator_agent, train, val_dataset=val, resume=args.resume)
    minutes = (time.perf_counter() - started) / 60
    assert algorithm.log is not None
    validations = algorithm.log.of_kind("validation")
    before, after = validations[0], validations[-1]
    delta = (after["accuracy"] - before["accuracy"]) * 100
    console.print()
    console.print(f"[bold]Held-out accuracy[/] ({before['n']} problems, greedy):")
    console.print(f"  before training: {before['accuracy']:.1%}")
    console.print(f"  after {after['step']} GRPO steps: {after['accuracy']:.1%}  ({delta:+.1f} points)")
    console.print(f"Finished in {minutes:.1f} min. Run folder: {run_dir}")
    console.print(f"  curve:       {run_dir / 'curve.png'}")
    console.print(f"  metrics:     {run_dir / 'metrics.jsonl'}")
    console.print(f"  rollouts:    agl store stats sqlite:///{(run_dir / 'store.db').resolve()}")
    console.print(f"  continue:    agl quickstart --run-dir {run_dir} --steps {args.steps + 4} --resume")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
