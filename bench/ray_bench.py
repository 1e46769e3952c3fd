"""Rollouts/s of a trivial agent through runner processes (``strategy="processes"``) and Ray actors
(``strategy="ray"``, agentlightning-ray), and the time per rollout that Ray adds.

Both strategies serve the same ``memory://`` store over HTTP from the driver to ``--runners`` runners.
The algorithm enqueues ``--rollouts`` rollouts in one call and waits for all of them; that window
(enqueue to the last rollout done) gives rollouts/s, the median of ``--repeats`` runs. The run's
start (forking processes; starting Ray's local cluster, its actors and their imports) is timed apart.

    nox -s bench_ray
    python bench/ray_bench.py --rollouts 400 --runners 2 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import agentlightning as agl
from agentlightning.algorithm import Algorithm
from agentlightning.runner import LitAgentRunner
from agentlightning.tracer import OtelTracer
from agentlightning.types import EnqueueRolloutRequest


@agl.rollout
def trivial_agent(task: int) -> float:
    """The cheapest agent: the figure is the strategy's and the store's cost, not the agent's."""
    return 1.0


class EnqueueAndWait(Algorithm):
    """Once every runner has registered, enqueues ``n`` rollouts at once and times them until the last is done."""

    def __init__(self, n: int, runners: int) -> None:
        super().__init__()
        self.n = n
        self.runners = runners
        self.seconds = 0.0
        self.ready_at = 0.0
        self.done_at = 0.0

    async def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:  # type: ignore[override]
        store = self.get_store()
        deadline = time.monotonic() + 300
        while len(await store.query_workers()) < self.runners:  # a runner registers when its loop starts
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.runners} runners did not start within 300 s")
            await asyncio.sleep(0.02)
        self.ready_at = time.perf_counter()
        begin = time.perf_counter()
        queued = await store.enqueue_many_rollouts(
            [EnqueueRolloutRequest(input=i, mode="train") for i in range(self.n)]
        )
        done = await store.wait_for_rollouts(rollout_ids=[r.rollout_id for r in queued], timeout=600)
        self.done_at = time.perf_counter()
        self.seconds = self.done_at - begin
        bad = [r.status for r in done if r.status != "succeeded"]
        if len(done) != self.n or bad:
            raise RuntimeError(f"{len(done)} of {self.n} rollouts finished, not succeeded: {bad[:5]}")


def run_once(strategy: Any, rollouts: int, runners: int) -> Dict[str, float]:
    algorithm = EnqueueAndWait(rollouts, runners)
    runner = LitAgentRunner(OtelTracer(), poll_interval=0.01, interval_jitter=0.0)
    begin = time.perf_counter()
    with agl.Trainer(store="memory://", strategy=strategy, n_runners=runners, algorithm=algorithm, runner=runner) as t:
        t.fit(trivial_agent)
    end = time.perf_counter()
    return {
        "rollouts_per_s": rollouts / algorithm.seconds,
        "window_s": algorithm.seconds,
        "start_s": algorithm.ready_at - begin,  # until every runner is up and registered
        "stop_s": end - algorithm.done_at,  # until every runner is stopped and the store closed
        "total_s": end - begin,
    }


def measure(name: str, strategy: Any, args: argparse.Namespace) -> Dict[str, Any]:
    runs: List[Dict[str, float]] = []
    for i in range(args.repeats):
        result = run_once(strategy, args.rollouts, args.runners)
        runs.append(result)
        print(
            f"  {name} run {i + 1}: {result['rollouts_per_s']:.0f} rollouts/s "
            f"({args.rollouts} in {result['window_s']:.2f}s; start {result['start_s']:.2f}s, stop {result['stop_s']:.2f}s)",
            flush=True,
        )
    return {
        "runs": runs,
        "median_rollouts_per_s": statistics.median(r["rollouts_per_s"] for r in runs),
        "median_start_s": statistics.median(r["start_s"] for r in runs),
        "median_stop_s": statistics.median(r["stop_s"] for r in runs),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=400, help="rollouts per run (default 400)")
    parser.add_argument("--runners", type=int, default=2, help="runner processes / actors (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per strategy; the median is reported (3)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cpus = os.cpu_count() or 1
    print(f"{args.rollouts} rollouts of a trivial agent, {args.runners} runners, {cpus} CPUs, median of {args.repeats}")

    print("processes (fork, HTTP to the driver's store server):", flush=True)
    processes = measure("processes", "processes", args)

    import ray

    print("ray (actors on a local Ray cluster, HTTP to the driver's store server):", flush=True)
    begin = time.perf_counter()
    ray.init(num_cpus=max(cpus, args.runners), include_dashboard=False, logging_level=logging.WARNING)
    ray_start_s = time.perf_counter() - begin
    try:
        in_ray = measure("ray", {"type": "ray", "runner_num_cpus": 1.0}, args)
    finally:
        ray.shutdown()

    p_rate, r_rate = processes["median_rollouts_per_s"], in_ray["median_rollouts_per_s"]
    per_rollout_ms = (1.0 / r_rate - 1.0 / p_rate) * 1000.0
    # Each runner handles one rollout at a time: the wall time per rollout of one runner is runners / rate.
    per_runner_ms = per_rollout_ms * args.runners
    print()
    print("| strategy | rollouts/s (median) | start: runners up (median) | stop: runners gone (median) |")
    print("| --- | --- | --- | --- |")
    for name, result in (("processes", processes), ("ray", in_ray)):
        rate = result["median_rollouts_per_s"]
        vs = f" ({rate / p_rate:.2f}x)" if name == "ray" else ""
        print(f"| {name} | {rate:.0f}{vs} | {result['median_start_s']:.2f} s | {result['median_stop_s']:.2f} s |")
    print(
        f"Ray adds {per_rollout_ms:.2f} ms per rollout to the run ({per_runner_ms:.2f} ms per rollout in each of "
        f"the {args.runners} runners); its local cluster took {ray_start_s:.1f} s to start (once per driver)."
    )
    if args.json:
        document = {
            "rollouts": args.rollouts,
            "runners": args.runners,
            "cpus": cpus,
            "python": sys.version.split()[0],
            "processes": processes,
            "ray": in_ray,
            "ray_cluster_start_s": ray_start_s,
            "ray_added_ms_per_rollout": per_rollout_ms,
            "ray_added_ms_per_rollout_per_runner": per_runner_ms,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
