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
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

RESULTS_DIR = Path(__file__).resolve().parent / "results"
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


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
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
