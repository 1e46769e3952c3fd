"""Learning benchmark: ``agl quickstart`` with its defaults, over several seeds, held-out accuracy before and after.

Each seed runs the user's command (``agl quickstart --seed N --run-dir <out>/seed-N``) in a process of
its own, so its wall time and peak RSS are the run's own. Per seed the benchmark reads the run's
``metrics.jsonl``: held-out accuracy before and after (greedy, the same problems and prompt), the
problems that went from wrong to right and back, and the rollout throughput of its steps.

Targets (issue 12): median gain >= 15 points over the seeds, the gain beyond noise (a one-sided exact
sign test, i.e. exact McNemar, over the problems whose outcome changed, pooled over seeds), each run
<= 10 minutes and <= 8 GB peak RSS. Run it with ``nox -s bench_learning`` (arguments after ``--``
replace the defaults; extra arguments after ``--`` of this script go to every ``agl quickstart`` run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

TARGET_POINTS = 15.0
TARGET_MINUTES = 10.0
TARGET_RSS_GB = 8.0
TARGET_P_VALUE = 0.05


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="Folder of the runs and the JSON result (default: a new one).")
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")
    parser.add_argument(
        "--parallel", action="store_true", help="Run the seeds at the same time (their minutes then overlap)."
    )
    parser.add_argument(
        "--autogroup-nice",
        type=int,
        default=None,
        help="Linux: run each seed in its own session at this autogroup nice (-20..19), e.g. -15 to rank the "
        "runs above other sessions' work on a shared machine (root to go below 0).",
    )
    return parser


def start_seed(seed: int, run_dir: Path, extra: List[str], autogroup_nice: Optional[int] = None) -> Dict[str, Any]:
    """Start one ``agl quickstart`` run in a child process (in its own session, so its own autogroup)."""
    command = [sys.executable, "-m", "agentlightning.cli", "quickstart", "--seed", str(seed), "--run-dir", str(run_dir)]
    started = {"seed": seed, "run_dir": run_dir, "load": os.getloadavg()[0], "time": time.perf_counter()}
    process = subprocess.Popen([*command, *extra], start_new_session=autogroup_nice is not None)
    if autogroup_nice is not None:
        # With the kernel's autogroups, `nice` only ranks processes within one session; this ranks the
        # run's session against the other sessions sharing the machine.
        Path(f"/proc/{process.pid}/autogroup").write_text(str(autogroup_nice))
    started["process"] = process
    return started


def finish_seed(started: Dict[str, Any]) -> Dict[str, Any]:
    """Wait for a run started by :func:`start_seed`; its figures."""
    seed, run_dir, process = started["seed"], started["run_dir"], started["process"]
    _, status, usage = os.wait4(process.pid, 0)
    minutes = (time.perf_counter() - started["time"]) / 60
    if status != 0:
        raise RuntimeError(f"seed {seed}: agl quickstart failed with status {status}")
    from agentlightning_grpo.quickstart import paired_changes, sign_test_p_value

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    validations = [r for r in records if r["kind"] == "validation"]
    train = [r for r in records if r["kind"] == "train"]
    before, after = validations[0], validations[-1]
    gained, lost = paired_changes(before["rewards"], after["rewards"])
    train_rollouts = sum(r["rollouts"] for r in train)
    train_seconds = sum(r["rollout_seconds"] for r in train)
    return {
        "seed": seed,
        "problems": before["n"],
        "before": before["accuracy"],
        "after": after["accuracy"],
        "points": (after["accuracy"] - before["accuracy"]) * 100,
        "gained": gained,
        "lost": lost,
        "p_value": sign_test_p_value(gained, lost),
        "steps": after["step"],
        "train_reward_by_step": [r["reward_mean"] for r in train],
        "minutes": minutes,
        "cpu_minutes": (usage.ru_utime + usage.ru_stime) / 60,
        "validation_seconds": [r["seconds"] for r in validations],
        "rollout_seconds": [r["rollout_seconds"] for r in train],
        # Linux reports ru_maxrss in KiB.
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "train_rollouts_per_min": train_rollouts / train_seconds * 60 if train_seconds else None,
        "validation_rollouts_per_min": [r["n"] / r["seconds"] * 60 for r in validations],
        "update_seconds": [r["step_seconds"] - r["rollout_seconds"] for r in train],
        "load_average": [started["load"], os.getloadavg()[0]],
    }


def _report(result: Dict[str, Any]) -> None:
    print(
        f"seed {result['seed']}: {result['before']:.1%} -> {result['after']:.1%} ({result['points']:+.1f} points, "
        f"+{result['gained']}/-{result['lost']} problems, p = {result['p_value']:.3f}), "
        f"{result['minutes']:.1f} min ({result['cpu_minutes']:.1f} CPU min), peak RSS {result['peak_rss_gb']:.1f} GB",
        flush=True,
    )


def main() -> int:
    argv = sys.argv[1:]
    extra: List[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = build_parser().parse_args(argv)
    from agentlightning_grpo.quickstart import RECIPE, sign_test_p_value

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or f"bench/results/learning-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    results: List[Dict[str, Any]] = []
    if args.parallel:
        runs = [start_seed(seed, out / f"seed-{seed}", extra, args.autogroup_nice) for seed in args.seeds]
        for run in runs:
            results.append(finish_seed(run))
            _report(results[-1])
    else:
        for seed in args.seeds:
            results.append(finish_seed(start_seed(seed, out / f"seed-{seed}", extra, args.autogroup_nice)))
            _report(results[-1])

    gains = [r["points"] for r in results]
    median = statistics.median(gains)
    gained, lost = sum(r["gained"] for r in results), sum(r["lost"] for r in results)
    pooled_p = sign_test_p_value(gained, lost)
    print()
    print(
        "| seed | problems | before | after | points | newly solved / failed | p (sign test) | minutes | CPU minutes "
        "| peak RSS GB | train rollouts/min | load avg |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        rate = r["train_rollouts_per_min"]
        print(
            f"| {r['seed']} | {r['problems']} | {r['before']:.1%} | {r['after']:.1%} | {r['points']:+.1f} | "
            f"{r['gained']} / {r['lost']} | {r['p_value']:.3f} | {r['minutes']:.1f} | {r['cpu_minutes']:.1f} | "
            f"{r['peak_rss_gb']:.1f} | "
            f"{'-' if rate is None else f'{rate:.1f}'} | {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f} |"
        )
    checks = {
        f"median gain >= {TARGET_POINTS:.0f} points": median >= TARGET_POINTS,
        f"pooled sign test p < {TARGET_P_VALUE}": pooled_p < TARGET_P_VALUE,
        f"every run <= {TARGET_MINUTES:.0f} min": all(r["minutes"] <= TARGET_MINUTES for r in results),
        f"every run <= {TARGET_RSS_GB:.0f} GB peak RSS": all(r["peak_rss_gb"] <= TARGET_RSS_GB for r in results),
    }
    spread = (min(gains), max(gains))
    print(
        f"\nmedian gain {median:+.1f} points (range {spread[0]:+.1f} to {spread[1]:+.1f} over {len(gains)} seeds); "
        f"pooled: {gained} problems newly solved, {lost} newly failed, exact sign test p = {pooled_p:.4f}"
    )
    for name, met in checks.items():
        print(f"  {'met' if met else 'NOT met'}: {name}")
    document = {
        "benchmark": "learning",
        "time": stamp,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "recipe": {**RECIPE.__dict__, "extra_arguments": extra},
        "parallel": args.parallel,
        "autogroup_nice": args.autogroup_nice,
        "results": results,
        "median_points": median,
        "range_points": list(spread),
        "pooled": {"gained": gained, "lost": lost, "p_value": pooled_p},
        "targets": checks,
    }
    path = out / "learning.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {path} (load average at the end: {os.getloadavg()[0]:.2f}; {time.strftime('%H:%M')})")
    return 1 if args.check and not all(checks.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
