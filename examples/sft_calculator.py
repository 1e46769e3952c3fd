"""The quickstart's calculator agent trained with SFT (rejection sampling) instead of GRPO.

Each round plays training problems several times with sampling, keeps the rollouts that got the right
number (reward 1), fine-tunes a LoRA adapter on their LLM calls (the tool calls and the final answers)
with TRL's SFTTrainer, and serves the new adapter before the next round. Held-out accuracy (greedy) is
measured before and after. Run it with ``nox -s example_sft`` (installs everything) or, with the
plugins installed, ``python examples/sft_calculator.py --rounds 3``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

import agentlightning as agl
from agentlightning_grpo.quickstart import calculator_agent, make_problems
from agentlightning_sft import SFT


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder or hub id (default: the embedded default model).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks-per-round", type=int, default=6)
    parser.add_argument("--samples-per-task", type=int, default=4)
    parser.add_argument("--val-size", type=int, default=12, help="Held-out problems (default: 12).")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=float, default=2.0, help="Passes over each round's kept records.")
    parser.add_argument("--max-tokens", type=int, default=96, help="Completion limit per model call.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="Run folder (default: agl_runs/sft-calculator-<time>).")
    parser.add_argument("--resume", action="store_true", help="Continue the run in --run-dir.")
    args = parser.parse_args(argv)
    import warnings

    from transformers.utils import logging as transformers_logging

    # The run prints its own progress: no model-loading bars or deprecation notices of the libraries.
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)

    run_dir = Path(args.run_dir or f"agl_runs/sft-calculator-{time.strftime('%Y%m%d-%H%M%S')}")
    algorithm = SFT(
        model=args.model,
        config={"learning_rate": args.learning_rate, "epochs": args.epochs, "batch_size": 4, "seed": args.seed},
        n_rounds=args.rounds,
        tasks_per_round=args.tasks_per_round,
        samples_per_task=args.samples_per_task,
        reward_threshold=1.0,
        val_every=0,
        sampling={"temperature": 1.0, "max_tokens": args.max_tokens},
    )
    concurrency = max(args.tasks_per_round * args.samples_per_task, args.val_size)
    trainer = agl.Trainer(
        algorithm=algorithm, runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=concurrency), run_dir=run_dir
    )
    started = time.perf_counter()
    trainer.fit(
        calculator_agent,
        make_problems(200, seed=args.seed + 1),
        val_dataset=make_problems(args.val_size, seed=args.seed + 2),
        resume=args.resume,
    )
    assert algorithm.log is not None
    validations = algorithm.log.of_kind("validation")
    before, after = validations[0], validations[-1]
    kept = sum(r["records"] for r in algorithm.log.of_kind("round"))
    print()
    print(f"Held-out accuracy ({before['n']} problems, greedy):")
    print(f"  before training: {before['accuracy']:.1%}")
    print(
        f"  after {after['round']} SFT rounds: {after['accuracy']:.1%}  ({(after['accuracy'] - before['accuracy']) * 100:+.1f} points)"
    )
    print(
        f"Trained on {kept} records. Finished in {(time.perf_counter() - started) / 60:.1f} min. Run folder: {run_dir}"
    )
    print(f"  curve:   {run_dir / 'curve.png'}")
    print(f"  dataset: agl export-dataset --run {run_dir} --format jsonl --out {run_dir / 'sft.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
