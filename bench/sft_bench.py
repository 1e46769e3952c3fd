"""SFT round throughput: ``agentlightning_sft``'s training round against TRL's ``SFTTrainer`` used directly.

Both sides fine-tune the same tiny Qwen2 (the test kit's model, built locally, same initial weights,
LoRA r=16 on q/k/v/o, float32) on the same chat records (a system prompt, a user question, a tool call,
its result and a final answer, with the tool's schema: ``--records`` of them), with the same TRL
arguments (learning rate, batch size, epochs, max length, completion-only loss, seed).

What is timed, from records in hand to a trained model:

- **ours**: ``SFTLearner.train(records, ...)``: validating nothing (records are already canonical),
  turning them into a ``datasets.Dataset``, building ``SFTTrainer`` (which tokenizes and masks) and
  ``train()``;
- **TRL**: ``Dataset.from_list`` of the same prompt-completion examples, ``SFTTrainer(...)`` and
  ``train()``, written as a user of TRL would.

The figure is tokens per second (every token the model reads, prompt and answer, over all epochs:
the same count on both sides). Sides alternate (ours, TRL, ours, ...) so a change in machine load hits
both alike; the first pair is a warm-up; figures are medians. On a shared 2-core machine compare
figures only within one run. Target: ours / TRL >= 0.95 (we add nothing but data preparation).

    nox -s bench_sft                    # installs torch (pip), core and plugins/sft; --json
    python bench/sft_bench.py --records 64 --repeats 5

**Learning per CPU-minute** (``--learning``): SFT against GRPO on the calculator task at the embedded
default model's edge (``examples/sft_calculator.py``: the same problems, prompt, sampling, LoRA, learning
rate and training rollouts for both), one child process per seed and algorithm. From each it takes the
held-out accuracy before and after (greedy, the same problems), the problems newly solved and newly
failed (exact sign test per run and pooled), and the process's CPU minutes (``getrusage``: every thread,
serving included), with and without the validations; the figure is held-out points gained per CPU-minute
of training. A child's summary already in ``--out`` is reused, so a killed run continues.

    nox -s bench_sft_learning           # seeds 0 1 2, the example's defaults
    python bench/sft_bench.py --learning --seeds 0 --out /tmp/learning -- --iterations 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sft_calculator.py"
ALGORITHMS = ("sft", "grpo")
TARGET_RATIO = 0.95

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    }
]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=64, help="chat records per round")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per side (after one warm-up pair)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both sides)")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH", help="write results as JSON")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when ours/TRL < {TARGET_RATIO}")
    learning = parser.add_argument_group("learning per CPU-minute (--learning)")
    learning.add_argument("--learning", action="store_true", help="SFT vs GRPO held-out gain per CPU-minute")
    learning.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    learning.add_argument("--out", default=None, help="folder of the runs and summaries (default: under results/)")
    learning.add_argument("--collect", action="store_true", help="only summarize the runs already in --out")
    learning.add_argument("--run-timeout", type=float, default=3600.0, help="seconds one child run may take")
    learning.add_argument(
        "example_args", nargs="*", help="after --: arguments for every examples/sft_calculator.py run"
    )
    return parser.parse_args(argv)


def make_records(count: int) -> List[Dict[str, Any]]:
    records = []
    for index in range(count):
        a, b = 101 + 7 * index, 11 + index % 80
        records.append(
            {
                "messages": [
                    {"role": "system", "content": "Use the calculator tool for arithmetic."},
                    {"role": "user", "content": f"A farmer plants {a} rows of {b} trees. How many trees are planted?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": f"call_{index}",
                                "type": "function",
                                "function": {
                                    "name": "calculator",
                                    "arguments": json.dumps({"expression": f"{a} * {b}"}),
                                },
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": f"call_{index}", "content": str(a * b)},
                    {"role": "assistant", "content": f"The farmer plants {a * b} trees. Answer: {a * b}"},
                ],
                "tools": TOOLS,
            }
        )
    return records


def learning(args: argparse.Namespace) -> int:
    """Run the example for every seed and algorithm (or reuse its summary), then print and save the comparison."""
    sys.path.insert(0, str(EXAMPLE.parent))
    from sft_calculator import sign_test_p_value

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else RESULTS_DIR / f"sft_learning-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    runs: List[Dict[str, Any]] = []
    load_before = os.getloadavg()
    for seed in args.seeds:
        for algorithm in ALGORITHMS:
            summary_path = out / f"{algorithm}-seed{seed}.json"
            if not summary_path.exists() and not args.collect:
                command = [sys.executable, str(EXAMPLE), "--algorithm", algorithm, "--seed", str(seed), "--quiet"]
                command += ["--run-dir", str(out / f"{algorithm}-seed{seed}"), "--summary", str(summary_path)]
                print(f"running {algorithm} seed {seed} ...", flush=True)
                with (out / f"{algorithm}-seed{seed}.log").open("w") as log:
                    try:
                        subprocess.run(
                            command + args.example_args, stdout=log, stderr=subprocess.STDOUT, timeout=args.run_timeout
                        )
                    except subprocess.TimeoutExpired:
                        print(f"  {algorithm} seed {seed} ran past {args.run_timeout:.0f} s; left out")
            if not summary_path.exists():
                print(f"  {algorithm} seed {seed}: no summary (see {out / f'{algorithm}-seed{seed}.log'})")
                continue
            runs.append(json.loads(summary_path.read_text()))
    load_after = os.getloadavg()
    print()
    print("Held-out accuracy gain per CPU-minute, SFT vs GRPO (examples/sft_calculator.py, greedy held-out)")
    print(
        "| algorithm | seed | held-out | before | after | points | solved / failed | p | CPU min (training) | "
        "points per training CPU-min | wall min | peak RSS GB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        run["points_per_training_cpu_minute"] = run["gain_points"] / run["training_cpu_minutes"]
        print(
            f"| {run['algorithm']} | {run['seed']} | {run['held_out']} | {run['before']:.1%} | {run['after']:.1%} | "
            f"{run['gain_points']:+.1f} | {run['newly_solved']} / {run['newly_failed']} | {run['p_value']:.4f} | "
            f"{run['cpu_minutes']:.1f} ({run['training_cpu_minutes']:.1f}) | "
            f"{run['points_per_training_cpu_minute']:+.2f} | {run['wall_minutes']:.1f} | {run['peak_rss_gb']:.1f} |"
        )
    pooled: Dict[str, Dict[str, Any]] = {}
    for algorithm in ALGORITHMS:
        mine = [r for r in runs if r["algorithm"] == algorithm]
        if not mine:
            continue
        solved, failed = sum(r["newly_solved"] for r in mine), sum(r["newly_failed"] for r in mine)
        pooled[algorithm] = {
            "runs": len(mine),
            "median_gain_points": statistics.median(r["gain_points"] for r in mine),
            "newly_solved": solved,
            "newly_failed": failed,
            "pooled_p_value": sign_test_p_value(solved, failed),
            "training_cpu_minutes": sum(r["training_cpu_minutes"] for r in mine),
            "points_per_training_cpu_minute": statistics.median(r["points_per_training_cpu_minute"] for r in mine),
        }
        row = pooled[algorithm]
        print(
            f"{algorithm}: {row['runs']} seed(s), median gain {row['median_gain_points']:+.1f} points, pooled "
            f"{solved} newly solved / {failed} newly failed (sign test p = {row['pooled_p_value']:.2g}), "
            f"median {row['points_per_training_cpu_minute']:+.2f} points per training CPU-minute"
        )
    if len(pooled) == len(ALGORITHMS) and pooled["grpo"]["points_per_training_cpu_minute"]:
        ratio = pooled["sft"]["points_per_training_cpu_minute"] / pooled["grpo"]["points_per_training_cpu_minute"]
        print(f"SFT / GRPO, points per training CPU-minute (medians): {ratio:.2f}x")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; runs and summaries in {out}")
    document = {"benchmark": "sft_learning", "time": stamp, "runs": runs, "pooled": pooled}
    document["load_average"] = {"before": load_before, "after": load_after}
    (out / "learning.json").write_text(json.dumps(document, indent=2, default=float) + "\n")
    return 0 if runs else 1


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.learning:
        return learning(args)
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    from agentlightning_sft import SFTConfig, SFTLearner
    from agentlightning_sft.learner import _quiet
    from agentlightning_sft.records import check_chat_record, to_trl_example
    from agentlightning_testing.tiny_model import create_tiny_model

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    model_path = create_tiny_model(work / "model", hidden_size=args.hidden, num_layers=args.layers)
    base = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    records = [check_chat_record(r) for r in make_records(args.records)]
    config = SFTConfig(learning_rate=1e-4, epochs=args.epochs, batch_size=args.batch, seed=0)

    def ours() -> float:
        learner = SFTLearner(copy.deepcopy(base), tokenizer, config)
        started = time.perf_counter()
        result = learner.train(records, 1, work / "ours")
        elapsed = time.perf_counter() - started
        return result.tokens / elapsed

    def trl_direct() -> float:
        lora = LoraConfig(
            r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"
        )
        with _quiet():  # the same silenced logging as ours
            model = get_peft_model(copy.deepcopy(base), lora)
            arguments = SFTLearner(copy.deepcopy(base), tokenizer, config).trl_arguments(work / "trl", 1)
            started = time.perf_counter()
            dataset = Dataset.from_list([to_trl_example(r) for r in records])
            trainer = SFTTrainer(model=model, args=arguments, train_dataset=dataset, processing_class=tokenizer)
            trainer.remove_callback(PrinterCallback)  # ours does not print the metrics dict either
            trainer.train()
            elapsed = time.perf_counter() - started
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * args.epochs
        return tokens / elapsed

    load_before = os.getloadavg()
    ours(), trl_direct()  # warm-up pair
    ours_rates: List[float] = []
    trl_rates: List[float] = []
    for _ in range(args.repeats):
        ours_rates.append(ours())
        trl_rates.append(trl_direct())
    load_after = os.getloadavg()
    ours_median, trl_median = statistics.median(ours_rates), statistics.median(trl_rates)
    ratio = ours_median / trl_median
    print(
        f"SFT round throughput: {args.records} chat records with tool calls, tiny Qwen2 hidden {args.hidden} x {args.layers}, LoRA r=16, {args.threads} thread(s)"
    )
    print(
        f"  ours (SFTLearner.train):      {ours_median:8.0f} tok/s  (runs: {', '.join(f'{r:.0f}' for r in ours_rates)})"
    )
    print(
        f"  TRL SFTTrainer directly:      {trl_median:8.0f} tok/s  (runs: {', '.join(f'{r:.0f}' for r in trl_rates)})"
    )
    print(f"  ours / TRL: {ratio:.3f}x  (target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'not met'})")
    print(f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    if args.json is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS_DIR / f"sft_bench-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "sft_bench",
            "time": stamp,
            "python": platform.python_version(),
            "settings": vars(args),
            "ours_tokens_per_s": ours_rates,
            "trl_tokens_per_s": trl_rates,
            "ours_median": ours_median,
            "trl_median": trl_median,
            "ratio": ratio,
            "target": TARGET_RATIO,
            "load_average": {"before": load_before, "after": load_after},
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"  results: {path}")
    return 1 if args.check and ratio < TARGET_RATIO else 0


if __name__ == "__main__":
    raise SystemExit(main())
