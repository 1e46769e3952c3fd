"""Learning benchmark: the quickstart's recipe run longer, held-out accuracy before and after, per seed.

Target: at least +15 points of held-out accuracy, with the spread across seeds reported. Run it with
``nox -s bench_learning`` (arguments after ``--`` replace the defaults below). Each seed is a separate
run folder under ``--out``; a run that was interrupted continues with ``--resume``.

On the 2-core CPU machines this project is developed on, one step of the default recipe takes minutes
(prefill and backward of a 0.5B-parameter model in float32), so the default recipe is hours per seed;
on a GPU it is minutes. ``--steps``/``--val-size`` trade fidelity for time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

TARGET_POINTS = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder (default: the embedded default model).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tasks-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--val-size", type=int, default=30)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", default="bench/results/learning", help="Folder of the runs and the JSON result.")
    parser.add_argument("--resume", action="store_true", help="Continue interrupted runs in --out.")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    from agentlightning_grpo.quickstart import train_calculator

    model = args.model
    if model is None:
        from agentlightning_embedded.default_model import ensure_default_model

        model = str(ensure_default_model())
    out = Path(args.out)
    results: List[Dict[str, Any]] = []
    for seed in args.seeds:
        run = train_calculator(
            model=model,
            run_dir=out / f"seed-{seed}",
            steps=args.steps,
            tasks_per_step=args.tasks_per_step,
            group_size=args.group_size,
            val_size=args.val_size,
            learning_rate=args.learning_rate,
            max_tokens=args.max_tokens,
            seed=seed,
            val_every=args.val_every,
            resume=args.resume,
        )
        points = (run.after["accuracy"] - run.before["accuracy"]) * 100
        results.append(
            {
                "seed": seed,
                "before": run.before["accuracy"],
                "after": run.after["accuracy"],
                "points": points,
                "minutes": run.minutes,
            }
        )
        print(
            f"seed {seed}: {run.before['accuracy']:.1%} -> {run.after['accuracy']:.1%} "
            f"({points:+.1f} points, {run.minutes:.1f} min)",
            flush=True,
        )

    gains = [r["points"] for r in results]
    mean = statistics.fmean(gains)
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    print()
    print("| seed | before | after | points | minutes |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['seed']} | {r['before']:.1%} | {r['after']:.1%} | {r['points']:+.1f} | {r['minutes']:.1f} |")
    verdict = "met" if mean >= TARGET_POINTS else "NOT met"
    print(
        f"\nmean gain {mean:+.1f} points (std {spread:.1f} across {len(gains)} seeds); target +{TARGET_POINTS:.0f}: {verdict}"
    )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "benchmark": "learning",
        "time": stamp,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "recipe": {k: v for k, v in vars(args).items() if k not in ("out", "resume")},
        "results": results,
        "mean_points": mean,
        "std_points": spread,
        "target_points": TARGET_POINTS,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"learning-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path} (load average at the end: {os.getloadavg()[0]:.2f}; {time.strftime('%H:%M')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
