"""Store benchmark: this project's stores against the peer ``agentlightning==0.3.0``, in one run.

The workload (``_workload.py``) is the same for every system: 4 runner tasks in one event loop,
each rollout is enqueued, dequeued, given 5 spans and marked succeeded; then the algorithm side
waits for all rollouts and reads every rollout's spans back. The figure is rollouts per second.

This project's stores (``memory://``, ``sqlite:///<tmp>/bench.db`` and, with the
``agentlightning-postgres`` plugin, ``postgresql://`` on the server in ``AGL_BENCH_POSTGRES_URI``,
a fresh schema per run) run in this process; the peer's ``InMemoryLightningStore`` runs in a subprocess with the peer's own interpreter (its own
virtual environment), via ``peer_store_bench.py``. ``nox -s bench`` creates that environment and
runs this script; by hand::

    python bench/store_bench.py --peer-python .nox/_peer-agentlightning-0.3.0/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _workload import Workload, comparison_table, repeat_workload, span_factory, summarize, write_results

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_PEER_PYTHON = BENCH_DIR.parent / ".nox" / "_peer-agentlightning-0.3.0" / "bin" / "python"
RESULTS_DIR = BENCH_DIR / "results"

# Ratio of this project's rollouts/s to the peer's that each store is expected to reach.
TARGETS = {"memory": 10.0, "sqlite": 5.0}
# Stores this benchmark can measure; postgres (no target: it is the store for several hosts, and the
# peer has none) needs the plugin and a server in AGL_BENCH_POSTGRES_URI.
SYSTEMS = ("memory", "sqlite", "postgres")
POSTGRES_URI_ENV = "AGL_BENCH_POSTGRES_URI"


def _store_uri(kind: str, tmp: str, index: int) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{Path(tmp) / f'bench-{index}.db'}"
    base = os.environ[POSTGRES_URI_ENV]
    return f"{base}{'&' if '?' in base else '?'}schema=agl_bench_{os.getpid()}_{index}"


def run_ours(kind: str, workload: Workload, repeats: int, min_time: float) -> dict[str, Any]:
    """Measure one of this project's backends (``memory``, ``sqlite`` or ``postgres``) in this process."""
    import agentlightning.types
    from agentlightning.store import open_store

    make_span, trace_ids = span_factory(agentlightning.types)

    with tempfile.TemporaryDirectory(prefix="agl-store-bench-") as tmp:

        async def open_one(index: int) -> Any:
            trace_ids.clear()
            store = open_store(_store_uri(kind, tmp, index))
            if inspect.isawaitable(store):
                store = await store
            return store

        async def close_one(store: Any) -> None:
            close = getattr(store, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result

        results = asyncio.run(repeat_workload(open_one, close_one, make_span, workload, repeats, min_time))

    uri = {"memory": "memory://", "sqlite": "sqlite:///<tmp>/bench.db", "postgres": "postgresql://<server>"}[kind]
    summary = summarize(f"agentlightning (this project) {uri}", results)
    summary["kind"] = kind
    return summary


def run_peer(peer_python: Path, workload: Workload, repeats: int, min_time: float) -> dict[str, Any]:
    """Measure the peer's in-memory store in a subprocess running the peer's interpreter."""
    if not peer_python.exists():
        raise SystemExit(
            f"peer interpreter {peer_python} not found: run `nox -s bench` (it creates the peer's venv), "
            "pass --peer-python, or --skip-peer"
        )
    command = [
        str(peer_python),
        str(BENCH_DIR / "peer_store_bench.py"),
        f"--rollouts={workload.rollouts}",
        f"--runners={workload.runners}",
        f"--spans={workload.spans_per_rollout}",
        f"--repeats={repeats}",
        f"--min-time={min_time}",
    ]
    # The peer's venv must not see this project's package: drop our environment's paths.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=BENCH_DIR.parent, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"peer benchmark failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("peer benchmark printed no JSON result")
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["kind"] = "peer"
    return summary


def _table(peer: dict[str, Any] | None, ours: list[dict[str, Any]], workload: Workload) -> str:
    title = (
        f"store workload: {workload.rollouts} rollouts x {workload.spans_per_rollout} spans, "
        f"{workload.runners} runner tasks; rollouts/s over enqueue+run+wait+query"
    )
    return comparison_table(title, peer, ours, TARGETS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=4000, help="rollouts per workload run (default 4000)")
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--spans", type=int, default=5, help="spans per rollout")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per system; ratios use the median")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of workload per measurement, at least")
    parser.add_argument(
        "--systems",
        default=None,
        help="this project's stores: memory,sqlite[,postgres] (default: all, postgres when AGL_BENCH_POSTGRES_URI is set)",
    )
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON, help="the peer venv's python")
    parser.add_argument("--skip-peer", action="store_true", help="measure this project only (no ratios)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="also write the results as JSON (default path: bench/results/store_bench-<time>.json)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a store is below its target ratio")
    args = parser.parse_args(argv)

    workload = Workload(rollouts=args.rollouts, runners=args.runners, spans_per_rollout=args.spans)
    systems = args.systems or ("memory,sqlite,postgres" if os.environ.get(POSTGRES_URI_ENV) else "memory,sqlite")
    kinds = [k.strip() for k in systems.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if "postgres" in kinds and not os.environ.get(POSTGRES_URI_ENV):
        parser.error(f"the postgres system needs a server: set {POSTGRES_URI_ENV}=postgresql://...")

    peer: dict[str, Any] | None = None
    if not args.skip_peer:
        print(f"measuring the peer agentlightning==0.3.0 ({args.peer_python}) ...", flush=True)
        peer = run_peer(args.peer_python, workload, args.repeats, args.min_time)
    ours: list[dict[str, Any]] = []
    for kind in kinds:
        print(f"measuring this project's {kind} store ...", flush=True)
        ours.append(run_ours(kind, workload, args.repeats, args.min_time))

    print()
    print(_table(peer, ours, workload))

    if args.json is not None:
        write_results(args.json, RESULTS_DIR, "store", workload, args, targets=TARGETS, peer=peer, ours=ours)

    if args.check and peer is not None:
        below = [
            r["kind"]
            for r in ours
            if r["median_rollouts_per_s"] / peer["median_rollouts_per_s"] < TARGETS.get(r["kind"], 0.0)
        ]
        if below:
            print(f"below target: {', '.join(below)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
