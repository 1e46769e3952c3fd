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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import agentlightning as agl

__all__ = [
    "CALCULATOR_TOOL",
    "CalculatorRun",
    "calculator",
    "calculator_agent",
    "make_problems",
    "main",
    "parse_answer",
    "train_calculator",
]

SYSTEM_PROMPT = "Use the calculator tool for arithmetic. When you have the result, reply 'Answer: <number>'."
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
    # Plain dicts: the conversation is JSON as it goes over the wire, whatever the SDK's typed params are.
    request: Dict[str, Any] = {"model": llm.model, "tools": [CALCULATOR_TOOL], **llm.sampling_parameters}
    final_text: Optional[str] = None
    for _ in range(MAX_TURNS):
        conversation: Any = messages
        completion = await client.chat.completions.create(**request, messages=conversation)
        message = completion.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        final_text = message.content
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            function = call.model_dump().get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
                result = calculator(str(arguments.get("expression", "")))
            except (ValueError, AttributeError):
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
    """``n`` word problems: a third are 2-digit additions (the model mostly gets them right alone),
    the rest multiply a 3-digit by a 2-digit number (it gets them wrong without the tool), so groups
    of rollouts differ in reward from the first step."""
    draw = random.Random(seed)
    problems = []
    for index in range(n):
        if index % 3 == 0:
            a, b = draw.randint(10, 99), draw.randint(10, 99)
            question = f"Tom has {a} marbles and finds {b} more. How many marbles does he have now?"
            problems.append({"question": question, "answer": float(a + b)})
        else:
            a, b = draw.randint(101, 999), draw.randint(11, 99)
            problems.append({"question": draw.choice(_TEMPLATES).format(a=a, b=b), "answer": float(a * b)})
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a calculator agent with GRPO on the embedded default model.")
    parser.add_argument("--model", default=None, help="Model folder or hub id (default: the embedded default).")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps (default: 3).")
    parser.add_argument("--tasks-per-step", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--val-size", type=int, default=12, help="Held-out problems (default: 12).")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="LoRA learning rate (default: 2e-4).")
    parser.add_argument("--max-tokens", type=int, default=96, help="Completion limit per model call (default: 96).")
    parser.add_argument("--run-dir", default=None, help="Run folder (default: agl_runs/quickstart-<time>).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="Continue the run in --run-dir.")
    parser.add_argument(
        "--serving",
        default="embedded",
        help="Serving backend of the policy, by registered name: embedded (default) or vllm (agentlightning-vllm).",
    )
    return parser


@dataclass
class CalculatorRun:
    """What :func:`train_calculator` measured: validation records before and after, and the wall time."""

    run_dir: Path
    before: Dict[str, Any]
    after: Dict[str, Any]
    minutes: float


def train_calculator(
    *,
    model: str,
    run_dir: Path,
    steps: int,
    tasks_per_step: int,
    group_size: int,
    val_size: int,
    learning_rate: float,
    max_tokens: int,
    seed: int,
    val_every: int = 0,
    resume: bool = False,
    progress: bool = True,
    serving: str = "embedded",
) -> CalculatorRun:
    """The quickstart's recipe: held-out accuracy, ``steps`` GRPO steps, held-out accuracy again."""
    from .algorithm import GRPO

    algorithm = GRPO(
        model=model,
        # 2048 tokens per forward/backward keep a 0.5B model's activations near 5 GB on CPU.
        config={"group_size": group_size, "learning_rate": learning_rate, "seed": seed, "micro_batch_tokens": 2048},
        n_steps=steps,
        tasks_per_step=tasks_per_step,
        val_every=val_every,
        sampling={"temperature": 1.0, "max_tokens": max_tokens},
        progress=progress,
        serving=serving,
    )
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=max(tasks_per_step * group_size, val_size))
    trainer = agl.Trainer(algorithm=algorithm, runner=runner, run_dir=run_dir)
    started = time.perf_counter()
    trainer.fit(
        calculator_agent,
        make_problems(200, seed=seed + 1),
        val_dataset=make_problems(val_size, seed=seed + 2),
        resume=resume,
    )
    assert algorithm.log is not None
    validations = algorithm.log.of_kind("validation")
    return CalculatorRun(run_dir, validations[0], validations[-1], (time.perf_counter() - started) / 60)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from transformers.utils import logging as transformers_logging

    # The run prints its own progress; keep library progress bars and a deprecation notice of peft out of it.
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    console = Console()
    run_dir = Path(args.run_dir or f"agl_runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    model = args.model
    if model is None:
        from agentlightning_embedded.default_model import ensure_default_model

        console.print("[bold]Preparing the default model[/] (Qwen2.5-Coder-0.5B-Instruct; converted once, then cached)")
        model = str(ensure_default_model())
    run = train_calculator(
        model=model,
        run_dir=run_dir,
        steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        group_size=args.group_size,
        val_size=args.val_size,
        learning_rate=args.learning_rate,
        max_tokens=args.max_tokens,
        seed=args.seed,
        resume=args.resume,
        serving=args.serving,
    )
    before, after = run.before, run.after
    delta = (after["accuracy"] - before["accuracy"]) * 100
    console.print()
    console.print(f"[bold]Held-out accuracy[/] ({before['n']} problems, greedy):")
    console.print(f"  before training: {before['accuracy']:.1%}")
    console.print(f"  after {after['step']} GRPO steps: {after['accuracy']:.1%}  ({delta:+.1f} points)")
    console.print(f"Finished in {run.minutes:.1f} min. Run folder: {run_dir}")
    console.print(f"  curve:       {run_dir / 'curve.png'}")
    console.print(f"  metrics:     {run_dir / 'metrics.jsonl'}")
    console.print(f"  rollouts:    agl store stats sqlite:///{(run_dir / 'store.db').resolve()}")
    console.print(f"  continue:    agl quickstart --run-dir {run_dir} --steps {args.steps + 3} --resume")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
