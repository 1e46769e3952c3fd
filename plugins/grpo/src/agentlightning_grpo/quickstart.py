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
import math
import operator
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import agentlightning as agl

from .memory import limit_heap_growth, releasing_freed_memory

__all__ = [
    "CALCULATOR_TOOL",
    "RECIPE",
    "CalculatorRun",
    "Recipe",
    "calculator",
    "calculator_agent",
    "make_problems",
    "main",
    "paired_changes",
    "parse_answer",
    "sign_test_p_value",
    "split_problems",
    "train_calculator",
]

# Qwen2.5-Coder-0.5B left to the tool list alone names the function after the story ("marbles",
# "TrainPassengers"); with one example call it uses the tool on about a third of these problems at
# temperature 1, which leaves GRPO groups with mixed rewards to learn from.
SYSTEM_PROMPT = (
    "Solve the arithmetic word problem with the calculator tool. To call it, reply exactly like this:\n"
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 34"}}\n</tool_call>\n'
    "When you get the result, reply 'Answer: <number>'."
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

    async with AsyncOpenAI(base_url=llm.endpoint, api_key="agentlightning", max_retries=0) as client:
        final_text = await _converse(client, task, llm)
    answer = parse_answer(final_text)
    return 1.0 if answer is not None and abs(answer - task["answer"]) < 1e-6 else 0.0


async def _converse(client: Any, task: Dict[str, Any], llm: agl.LLM) -> Optional[str]:
    """The conversation: model calls and tool results until a reply without tool calls; its text."""
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
    return final_text


_PRODUCT_TEMPLATES = [
    "A warehouse has {a} shelves and each shelf holds {b} boxes. How many boxes are there in total?",
    "A school orders {a} packs of pencils with {b} pencils in each pack. How many pencils does it get?",
    "A farmer plants {a} rows of trees with {b} trees in each row. How many trees are planted?",
    "A train carries {a} passengers on each of its {b} trips. How many passengers does it carry in all?",
    "A printer prints {a} pages per minute for {b} minutes. How many pages does it print?",
]
_SUM_TEMPLATES = [
    "Tom has {a} marbles and finds {b} more. How many marbles does he have now?",
    "A library has {a} books and buys {b} more. How many books does it have now?",
    "A bus has {a} passengers and {b} more get on. How many passengers are on the bus?",
]
PROBLEM_KINDS = ("sum", "product_2x1", "product_3x2")


def make_problems(n: int, *, seed: int, kinds: Sequence[str] = PROBLEM_KINDS) -> List[Dict[str, Any]]:
    """``n`` word problems cycling through three kinds, by how often the base model solves them at
    temperature 1 (about 50%, 30% and 15%): 2-digit sums, 2-digit by 1-digit products and 3-digit by
    2-digit products (``kinds`` picks which). Each problem carries its ``kind`` for per-kind figures."""
    unknown = sorted(set(kinds) - set(PROBLEM_KINDS))
    if unknown or not kinds:
        raise ValueError(f"problem kinds must be among {PROBLEM_KINDS}, got {list(kinds)}")
    draw = random.Random(seed)
    problems = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        if kind == "sum":
            a, b = draw.randint(10, 99), draw.randint(10, 99)
            question, answer = draw.choice(_SUM_TEMPLATES).format(a=a, b=b), a + b
        elif kind == "product_2x1":
            a, b = draw.randint(12, 99), draw.randint(3, 9)
            question, answer = draw.choice(_PRODUCT_TEMPLATES).format(a=a, b=b), a * b
        else:
            a, b = draw.randint(101, 999), draw.randint(11, 99)
            question, answer = draw.choice(_PRODUCT_TEMPLATES).format(a=a, b=b), a * b
        problems.append({"question": question, "answer": float(answer), "kind": kind})
    return problems


def split_problems(
    train_size: int, val_size: int, *, seed: int, train_kinds: Sequence[str] = PROBLEM_KINDS
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Training and held-out problems of one seed (held-out problems of every kind). No held-out problem
    shares its answer with any training problem, so nothing learned from a training answer can score
    on the held-out set."""
    train = make_problems(train_size, seed=seed + 1, kinds=train_kinds)
    seen = {p["answer"] for p in train}
    val = [p for p in make_problems(val_size * 4, seed=seed + 2) if p["answer"] not in seen]
    if len(val) < val_size:
        raise ValueError(f"only {len(val)} held-out problems are disjoint from {train_size} training problems")
    return train, val[:val_size]


@dataclass(frozen=True)
class Recipe:
    """The quickstart's default settings: what ``agl quickstart`` and ``bench/learning.py`` run.

    Chosen on the 2-core CPU this project is developed on, to show a gain within about ten minutes:
    bfloat16 weights (trainer and server share one copy), 8 problems x groups of 6 per step sampled at
    temperature 0.7, and LoRA at a high learning rate for few steps. Smaller batches (3 x 4, then 4 x 6)
    left some seeds with one or two groups holding both a success and a failure: such a run learned from
    them alone, collapsed to answering without the tool and lost held-out accuracy.
    """

    steps: int = 5
    tasks_per_step: int = 8
    group_size: int = 6
    val_size: int = 30
    learning_rate: float = 3e-4
    temperature: float = 0.7
    max_tokens: int = 64
    train_size: int = 200
    dtype: str = "bfloat16"
    train_kinds: Tuple[str, ...] = PROBLEM_KINDS

    def sampling(self) -> Dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def train_problems(self, seed: int) -> List[Dict[str, Any]]:
        return split_problems(self.train_size, self.val_size, seed=seed, train_kinds=self.train_kinds)[0]


RECIPE = Recipe()


def quiet_libraries() -> None:
    """The run prints its own progress: keep library progress bars, info logs and deprecation notices out."""
    import logging

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # peft still calls a transformers method deprecated in 5.x; nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def build_parser() -> argparse.ArgumentParser:
    r = RECIPE
    parser = argparse.ArgumentParser(description="Train a calculator agent with GRPO on the embedded default model.")
    parser.add_argument("--model", default=None, help="Model folder or hub id (default: the embedded default).")
    parser.add_argument("--steps", type=int, default=r.steps, help=f"GRPO steps (default: {r.steps}).")
    parser.add_argument("--tasks-per-step", type=int, default=r.tasks_per_step)
    parser.add_argument("--group-size", type=int, default=r.group_size)
    parser.add_argument("--val-size", type=int, default=r.val_size, help=f"Held-out problems (default: {r.val_size}).")
    parser.add_argument("--learning-rate", type=float, default=r.learning_rate, help="LoRA learning rate.")
    parser.add_argument("--temperature", type=float, default=r.temperature, help="Sampling temperature of training.")
    parser.add_argument("--max-tokens", type=int, default=r.max_tokens, help="Completion limit per model call.")
    parser.add_argument("--dtype", default=r.dtype, choices=["float32", "bfloat16"], help="Weights' dtype.")
    parser.add_argument(
        "--train-kinds",
        nargs="+",
        default=list(r.train_kinds),
        choices=PROBLEM_KINDS,
        help="Problem kinds to train on (held-out problems are of every kind).",
    )
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
    recipe: Recipe = RECIPE,
    seed: int = 0,
    val_every: int = 0,
    resume: bool = False,
    progress: bool = True,
    serving: str = "embedded",
) -> CalculatorRun:
    """The quickstart's recipe: held-out accuracy, ``recipe.steps`` GRPO steps, held-out accuracy again.

    Held-out problems are scored greedily with the same prompt before and after; the reward is 1 for
    the right number, else 0. Every held-out rollout's reward is in ``metrics.jsonl`` (``rewards``).
    """
    from .algorithm import GRPO

    algorithm = GRPO(
        model=model,
        config={
            "group_size": recipe.group_size,
            "learning_rate": recipe.learning_rate,
            "seed": seed,
            "dtype": recipe.dtype,
            # 1024 tokens per forward/backward bound the activations to about 2 GB on CPU.
            "micro_batch_tokens": 1024,
        },
        n_steps=recipe.steps,
        tasks_per_step=recipe.tasks_per_step,
        val_every=val_every,
        sampling=recipe.sampling(),
        progress=progress,
        serving=serving,
        # One step's rollouts decode together.
        max_batch_size=recipe.tasks_per_step * recipe.group_size,
    )
    train, val = split_problems(recipe.train_size, recipe.val_size, seed=seed, train_kinds=recipe.train_kinds)
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=max(recipe.tasks_per_step * recipe.group_size, len(val)))
    trainer = agl.Trainer(algorithm=algorithm, runner=runner, run_dir=run_dir)
    started = time.perf_counter()
    trainer.fit(calculator_agent, train, val_dataset=val, resume=resume)
    assert algorithm.log is not None
    validations = algorithm.log.of_kind("validation")
    return CalculatorRun(run_dir, validations[0], validations[-1], (time.perf_counter() - started) / 60)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    limit_heap_growth()
    quiet_libraries()
    console = Console()
    run_dir = Path(args.run_dir or f"agl_runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    model = args.model
    if model is None:
        from agentlightning_embedded.default_model import ensure_default_model

        console.print("[bold]Preparing the default model[/] (Qwen2.5-Coder-0.5B-Instruct; converted once, then cached)")
        model = str(ensure_default_model())
    recipe = Recipe(
        steps=args.steps,
        tasks_per_step=args.tasks_per_step,
        group_size=args.group_size,
        val_size=args.val_size,
        learning_rate=args.learning_rate,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        dtype=args.dtype,
        train_kinds=tuple(args.train_kinds),
    )
    with releasing_freed_memory():
        run = train_calculator(
            model=model, run_dir=run_dir, recipe=recipe, seed=args.seed, resume=args.resume, serving=args.serving
        )
    before, after = run.before, run.after
    delta = (after["accuracy"] - before["accuracy"]) * 100
    console.print()
    console.print(f"[bold]Held-out accuracy[/] ({before['n']} unseen problems, greedy, same prompt):")
    console.print(f"  before training: {before['accuracy']:.1%}")
    console.print(f"  after {after['step']} GRPO steps: {after['accuracy']:.1%}  ({delta:+.1f} points)")
    if "rewards" in before and "rewards" in after:
        gained, lost = paired_changes(before["rewards"], after["rewards"])
        console.print(
            f"  problems newly solved: {gained}, newly failed: {lost} "
            f"(exact sign test p = {sign_test_p_value(gained, lost):.3f})"
        )
    console.print(f"Finished in {run.minutes:.1f} min. Run folder: {run_dir}")
    console.print(f"  curve:       {run_dir / 'curve.png'}")
    console.print(f"  metrics:     {run_dir / 'metrics.jsonl'}")
    console.print(f"  rollouts:    agl store stats sqlite:///{(run_dir / 'store.db').resolve()}")
    console.print(f"  continue:    agl quickstart --run-dir {run_dir} --steps {args.steps + 3} --resume")
    return 0


def paired_changes(before: List[float], after: List[float]) -> Tuple[int, int]:
    """How many problems went from wrong to right, and from right to wrong (rewards of the same problems)."""
    if len(before) != len(after):
        raise ValueError(f"paired rewards differ in length: {len(before)} and {len(after)}")
    gained = sum(1 for b, a in zip(before, after, strict=True) if b < 1.0 <= a)
    lost = sum(1 for b, a in zip(before, after, strict=True) if a < 1.0 <= b)
    return gained, lost


def sign_test_p_value(gained: int, lost: int) -> float:
    """One-sided exact sign test (exact McNemar) on the discordant problems: the chance of at least
    ``gained`` improvements out of ``gained + lost`` changes if improving and worsening were equally likely."""
    changed = gained + lost
    if changed == 0:
        return 1.0
    tail = sum(math.comb(changed, k) for k in range(gained, changed + 1))
    return tail / float(1 << changed)


if __name__ == "__main__":
    raise SystemExit(main())
