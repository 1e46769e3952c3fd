"""Rollout throughput of the embedded model server: the quickstart's agent, prefix cache off and on, one run.

The same workload runs against two servers in turn (one model loaded at a time): ``--tasks`` training
problems of the quickstart, each played ``--group-size`` times at once with the quickstart's sampling
settings, as one GRPO step plays them (the agent calls the server directly; no store or proxy). The
figure is rollouts per minute of wall time; the engine's counters show the prompt tokens prefilled and
those reused from the prefix cache. Run it with ``nox -s bench_learning -- --throughput`` or directly
(``python bench/rollout_throughput.py``) in an environment with the GRPO plugin and the model extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Model folder (default: the embedded default model).")
    parser.add_argument("--tasks", type=int, default=None, help="Problems (default: the recipe's tasks per step).")
    parser.add_argument("--group-size", type=int, default=None, help="Rollouts per problem (default: the recipe's).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="Write the result here (default: bench/results/...).")
    return parser


async def _play(server_url: str, tasks: List[Dict[str, Any]], group_size: int) -> List[float]:
    import agentlightning as agl
    from agentlightning_grpo.quickstart import RECIPE, calculator_agent

    llm = agl.LLM(endpoint=server_url, model="policy", sampling_parameters=RECIPE.sampling())
    plays = [calculator_agent(task, llm) for task in tasks for _ in range(group_size)]
    return list(await asyncio.gather(*plays))


class _PeakRSS:
    """The highest resident set size of this process while it is entered (Linux; sampled every 0.2 s)."""

    def __init__(self) -> None:
        self.peak_gb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        status = Path("/proc/self/status")
        while True:
            if status.exists():
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_gb = max(self.peak_gb, int(line.split()[1]) * 1024 / 1e9)
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> "_PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


def measure(model: str, tasks: List[Dict[str, Any]], group_size: int, prefix_cache_bytes: int) -> Dict[str, Any]:
    from agentlightning_embedded.server import ModelServer
    from agentlightning_grpo.quickstart import RECIPE

    server = ModelServer.from_pretrained(
        model,
        dtype=RECIPE.dtype,
        port=0,
        served_model_name="policy",
        max_batch_size=32,
        prefix_cache_bytes=prefix_cache_bytes,
    ).start_in_thread()
    try:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        with _PeakRSS() as rss:
            rewards = asyncio.run(_play(server.base_url, tasks, group_size))
        seconds = time.perf_counter() - started
        stats = dict(server.engine.stats)
    finally:
        server.close()
    return {
        "prefix_cache_bytes": prefix_cache_bytes,
        "rollouts": len(rewards),
        "seconds": seconds,
        "rollouts_per_min": len(rewards) / seconds * 60,
        "mean_reward": sum(rewards) / len(rewards),
        "peak_rss_gb": rss.peak_gb,
        "load_average_before": load,
        "load_average_after": os.getloadavg()[0],
        "engine": {
            k: stats[k]
            for k in ("requests", "prompt_tokens", "prefilled_tokens", "prefix_cache_tokens", "generated_tokens")
        },
    }


def main(argv: Any = None) -> int:
    args = build_parser().parse_args(argv)
    from agentlightning_embedded.engine import DEFAULT_PREFIX_CACHE_BYTES
    from agentlightning_grpo.memory import limit_heap_growth
    from agentlightning_grpo.quickstart import RECIPE, quiet_libraries

    limit_heap_growth()  # as agl quickstart does
    quiet_libraries()
    model = args.model
    if model is None:
        from agentlightning_embedded.default_model import ensure_default_model

        model = str(ensure_default_model())
    tasks = RECIPE.train_problems(args.seed)[: args.tasks or RECIPE.tasks_per_step]
    group_size = args.group_size or RECIPE.group_size
    sizes = (0, DEFAULT_PREFIX_CACHE_BYTES)
    results = [measure(model, tasks, group_size, size) for size in sizes]
    print("| prefix cache | rollouts | seconds | rollouts/min | prompt tokens | prefilled | peak RSS GB | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        engine = r["engine"]
        print(
            f"| {'on' if r['prefix_cache_bytes'] else 'off'} | {r['rollouts']} | {r['seconds']:.0f} | "
            f"{r['rollouts_per_min']:.1f} | {engine['prompt_tokens']} | {engine['prefilled_tokens']} | {r['peak_rss_gb']:.1f} | "
            f"{r['load_average_before']:.1f} -> {r['load_average_after']:.1f} |"
        )
    ratio = results[1]["rollouts_per_min"] / results[0]["rollouts_per_min"]
    print(f"prefix cache on / off: {ratio:.2f}x rollouts per minute")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(args.json or f"bench/results/rollout_throughput-{stamp}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"benchmark": "rollout_throughput", "time": stamp, "results": results, "ratio": ratio}, indent=2)
        + "\n"
    )
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
