"""HTTP store benchmark: the store cycle over HTTP, this project against the peer ``agentlightning==0.3.0``.

Two workloads, each with the store server in a process of its own and the clients in this one:

1. **Store cycle over HTTP**: the workload of ``_workload.py`` (the in-process store benchmark's:
   enqueue, 4 runner tasks dequeue / allocate sequence ids / add 5 spans / finish, wait, read the
   spans back), talking to the server through the HTTP client: this project's
   ``HttpLightningStore`` against a ``StoreServer`` on ``memory://``, on a SQLite file and, with the
   ``agentlightning-postgres`` plugin, on PostgreSQL (the server in ``AGL_BENCH_POSTGRES_URI``, a
   fresh schema per run); the peer's ``LightningStoreClient`` against 0.3's ``LightningStoreServer`` (``peer_http_bench.py``,
   run with the peer's interpreter). The figure is rollouts per second.
2. **Span ingest into SQLite**: this project's server on a SQLite file; a set of running attempts;
   concurrent tasks here send spans with ``add_many_spans`` in batches (500 spans each). The figure
   is spans per second, from the first batch sent to the last one acknowledged.

``nox -s bench_http`` creates the peer's environment and runs this script; by hand::

    python bench/http_bench.py --peer-python .nox/_peer-agentlightning-0.3.0/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _server_process import ServerProcess, exit_after, serve_commands
from _workload import Workload, comparison_table, repeat_workload, span_factory, summarize, write_results

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_PEER_PYTHON = BENCH_DIR.parent / ".nox" / "_peer-agentlightning-0.3.0" / "bin" / "python"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"  # loopback only

# Ratio of this project's rollouts/s over HTTP to the peer's that each store is expected to reach.
TARGETS = {"memory": 20.0, "sqlite": 20.0}
# Stores the server can run on; postgres (no target, see store_bench.py) needs AGL_BENCH_POSTGRES_URI.
SYSTEMS = ("memory", "sqlite", "postgres")
POSTGRES_URI_ENV = "AGL_BENCH_POSTGRES_URI"
URI_LABELS = {"memory": "memory://", "sqlite": "sqlite:///<tmp>/bench.db", "postgres": "postgresql://<server>"}
# Spans per second that batched ingest into SQLite through the server is expected to reach.
INGEST_TARGET = 20_000.0


# ----------------------------------------------------------------------------------------------
# the server process (this script with --serve KIND)
async def serve(kind: str) -> None:
    """Serve a fresh store on every ``open`` (see ``_server_process``): what ``agl store serve --store URI``
    does (``open_store(URI)`` behind a ``StoreServer``), without re-importing the stack for every run."""
    from agentlightning.server.serve import StoreServer, tune_gc_for_serving
    from agentlightning.store import open_store

    tune_gc_for_serving()  # as `agl store serve` does: this process only serves stores

    with tempfile.TemporaryDirectory(prefix="agl-http-bench-") as tmp:
        counter = itertools.count()
        current: list[tuple[Any, Path | None]] = []

        async def open_one() -> str:
            index = next(counter)
            path = Path(tmp) / f"bench-{index}.db" if kind == "sqlite" else None
            if kind == "postgres":
                base = os.environ[POSTGRES_URI_ENV]
                uri = f"{base}{'&' if '?' in base else '?'}schema=agl_http_bench_{os.getpid()}_{index}"
            else:
                uri = "memory://" if path is None else f"sqlite:///{path}"
            store = open_store(uri)
            server = StoreServer(store, host=HOST, port=0, close_store=True)
            try:
                server.start()
            except BaseException:
                await store.close()
                raise
            current.append((server, path))
            return server.url

        async def close_one() -> None:
            while current:
                server, path = current.pop()
                server.stop()
                if path is not None:  # every run starts from an empty file; keep the disk clean
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
            gc.collect()

        await serve_commands(open_one, close_one)


def _server_command(kind: str, time_limit: float) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve", kind, f"--time-limit={time_limit}"]


# ----------------------------------------------------------------------------------------------
# workload 1: the store cycle over HTTP
def run_ours(kind: str, workload: Workload, repeats: int, min_time: float, time_limit: float) -> dict[str, Any]:
    """Measure this project's server on ``kind`` (memory, sqlite or postgres), server in its own process."""
    import agentlightning.types
    from agentlightning.store.client import HttpLightningStore

    make_span, trace_ids = span_factory(agentlightning.types)
    with ServerProcess(_server_command(kind, time_limit), cwd=BENCH_DIR.parent) as server:

        async def open_one(_: int) -> Any:
            trace_ids.clear()
            return HttpLightningStore(server.open())

        async def close_one(store: Any) -> None:
            try:
                await store.close()
            finally:
                server.close()

        async def measure() -> Any:
            return await asyncio.wait_for(
                repeat_workload(open_one, close_one, make_span, workload, repeats, min_time), timeout=time_limit
            )

        results = asyncio.run(measure())

    summary = summarize(f"agentlightning (this project) over HTTP, {URI_LABELS[kind]}", results)
    summary["kind"] = kind
    return summary


def run_peer(
    peer_python: Path, workload: Workload, repeats: int, min_time: float, time_limit: float, server_mode: str
) -> dict[str, Any]:
    """Measure the peer over HTTP in a subprocess running the peer's interpreter (it starts its own server process)."""
    if not peer_python.exists():
        raise SystemExit(
            f"peer interpreter {peer_python} not found: run `nox -s bench_http` (it creates the peer's venv), "
            "pass --peer-python, or --skip-peer"
        )
    command = [
        str(peer_python),
        str(BENCH_DIR / "peer_http_bench.py"),
        f"--rollouts={workload.rollouts}",
        f"--runners={workload.runners}",
        f"--spans={workload.spans_per_rollout}",
        f"--repeats={repeats}",
        f"--min-time={min_time}",
        f"--time-limit={time_limit}",
        f"--server-mode={server_mode}",
    ]
    # The peer's venv must not see this project's package: drop our environment's paths.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    try:
        proc = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            cwd=BENCH_DIR.parent,
            timeout=time_limit + 120.0,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # run() killed it; its server process exits when its stdin closes
        raise SystemExit(f"peer benchmark did not finish within {exc.timeout:g} s") from None
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


# ----------------------------------------------------------------------------------------------
# workload 2: span ingest through the server into SQLite
async def ingest_once(url: str, spans: int, batch: int, tasks: int, attempts: int) -> dict[str, Any]:
    """One ingest run against a fresh store at ``url``; returns its timings and counts."""
    import agentlightning.types
    from agentlightning.store.client import HttpLightningStore

    make_span, _ = span_factory(agentlightning.types)
    store = HttpLightningStore(url)
    try:
        for i in range(attempts):
            await store.enqueue_rollout(input={"task_id": i}, mode="train")
        running: list[tuple[str, str]] = []
        for _ in range(attempts):
            attempted = await store.dequeue_rollout(worker_id="bench-ingest")
            if attempted is None:
                raise RuntimeError("the queue ran empty before every ingest attempt was started")
            running.append((attempted.rollout_id, attempted.attempt.attempt_id))

        # Task t owns the attempts t, t + tasks, ... and numbers their spans itself (sequence ids 1, 2, ...),
        # so that only add_many_spans requests are sent while timed. Every batch holds spans of one attempt.
        sizes = [batch] * (spans // batch) + ([spans % batch] if spans % batch else [])
        sent = [0] * tasks
        build_s = [0.0] * tasks

        async def sender(t: int) -> None:
            owned = running[t::tasks] or running
            next_seq = {pair: 1 for pair in owned}
            for b, size in enumerate(sizes[t::tasks]):
                pair = owned[b % len(owned)]
                t0 = time.perf_counter()
                first = next_seq[pair]
                items = [make_span(pair[0], pair[1], first + j, first + j) for j in range(size)]
                next_seq[pair] = first + size
                build_s[t] += time.perf_counter() - t0
                added = await store.add_many_spans(items)
                if len(added) != size:
                    raise RuntimeError(f"add_many_spans stored {len(added)} of {size} spans")
                sent[t] += size

        gc.collect()
        start = time.perf_counter()
        await asyncio.gather(*(sender(t) for t in range(tasks)))
        elapsed = time.perf_counter() - start
        total = sum(sent)
        stats = await store.statistics()
        stored = stats.get("total_spans", total)
        if total != spans or stored != spans:
            raise RuntimeError(f"ingest sent {total} spans and the store holds {stored}, expected {spans}")
        return {
            "spans": total,
            "batch": batch,
            "tasks": tasks,
            "attempts": attempts,
            "seconds": elapsed,
            "client_build_s": sum(build_s),
            "spans_per_s": total / elapsed if elapsed > 0 else float("inf"),
        }
    finally:
        await store.close()


def run_ingest(spans: int, batch: int, tasks: int, attempts: int, repeats: int, time_limit: float) -> dict[str, Any]:
    """Measure batched span ingest into this project's server on a SQLite file, server in its own process."""
    runs: list[dict[str, Any]] = []
    with ServerProcess(_server_command("sqlite", time_limit), cwd=BENCH_DIR.parent) as server:

        async def measure() -> None:
            for _ in range(repeats):
                url = server.open()
                try:
                    runs.append(await ingest_once(url, spans, batch, tasks, attempts))
                finally:
                    server.close()

        asyncio.run(asyncio.wait_for(measure(), timeout=time_limit))
    rates = [r["spans_per_s"] for r in runs]
    return {
        "system": "agentlightning (this project): add_many_spans over HTTP into sqlite:///<tmp>/bench.db",
        "repeats": len(runs),
        "best_spans_per_s": max(rates),
        "median_spans_per_s": statistics.median(rates),
        "runs": runs,
    }


# ----------------------------------------------------------------------------------------------
def _cycle_table(peer: dict[str, Any] | None, ours: list[dict[str, Any]], workload: Workload) -> str:
    title = (
        f"store cycle over HTTP: {workload.rollouts} rollouts x {workload.spans_per_rollout} spans, "
        f"{workload.runners} runner tasks; server in its own process; rollouts/s over enqueue+run+wait+query"
    )
    return comparison_table(title, peer, ours, TARGETS)


def _ingest_table(ingest: dict[str, Any]) -> str:
    run = ingest["runs"][0]
    width = len(ingest["system"])
    header = f"{'system':<{width}} {'median spans/s':>15} {'best spans/s':>13} {'target':>9}  verdict"
    verdict = "ok" if ingest["median_spans_per_s"] >= INGEST_TARGET else "BELOW TARGET"
    return "\n".join(
        [
            f"span ingest over HTTP: {run['spans']} spans per run in batches of {run['batch']} (add_many_spans), "
            f"{run['tasks']} concurrent tasks, {run['attempts']} running attempts; server in its own process",
            header,
            "-" * len(header),
            f"{ingest['system']:<{width}} {ingest['median_spans_per_s']:>15.0f} {ingest['best_spans_per_s']:>13.0f} "
            f"{f'>={INGEST_TARGET:g}':>9}  {verdict}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=500, help="rollouts per workload run (default 500)")
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--spans", type=int, default=5, help="spans per rollout")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per system; ratios use the median")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of workload per measurement, at least")
    parser.add_argument(
        "--systems",
        default=None,
        help="this project's stores behind the server: memory,sqlite[,postgres] (default: all, postgres when "
        "AGL_BENCH_POSTGRES_URI is set)",
    )
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON, help="the peer venv's python")
    parser.add_argument(
        "--peer-server-mode",
        choices=("cli", "thread"),
        default="cli",
        help="cli: like 0.3's `agl store` (default); thread: LightningStoreServer's default launch mode",
    )
    parser.add_argument("--skip-peer", action="store_true", help="measure this project only (no ratios)")
    parser.add_argument("--ingest-spans", type=int, default=100_000, help="spans per ingest run (0 skips ingest)")
    parser.add_argument("--ingest-batch", type=int, default=500, help="spans per add_many_spans call")
    parser.add_argument("--ingest-tasks", type=int, default=4, help="concurrent sending tasks")
    parser.add_argument("--ingest-attempts", type=int, default=32, help="running attempts the spans belong to")
    parser.add_argument("--skip-cycle", action="store_true", help="run the span ingest workload only")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds one system may take, at most")
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="also write the results as JSON (default path: bench/results/http_bench-<time>.json)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure is below its target")
    parser.add_argument("--serve", choices=SYSTEMS, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)

    if args.serve:
        exit_after(args.time_limit + 60.0)
        try:
            asyncio.run(serve(args.serve))
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the benchmark reports it
            return 130
        return 0

    workload = Workload(rollouts=args.rollouts, runners=args.runners, spans_per_rollout=args.spans)
    systems = args.systems or ("memory,sqlite,postgres" if os.environ.get(POSTGRES_URI_ENV) else "memory,sqlite")
    kinds = [k.strip() for k in systems.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if "postgres" in kinds and not os.environ.get(POSTGRES_URI_ENV):
        parser.error(f"the postgres system needs a server: set {POSTGRES_URI_ENV}=postgresql://...")
    if args.ingest_spans < 0 or args.ingest_batch < 1 or args.ingest_tasks < 1 or args.ingest_attempts < 1:
        parser.error("--ingest-spans must be >= 0 and --ingest-batch, --ingest-tasks, --ingest-attempts >= 1")

    peer: dict[str, Any] | None = None
    ours: list[dict[str, Any]] = []
    if not args.skip_cycle:
        if not args.skip_peer:
            print(f"measuring the peer agentlightning==0.3.0 over HTTP ({args.peer_python}) ...", flush=True)
            peer = run_peer(
                args.peer_python, workload, args.repeats, args.min_time, args.time_limit, args.peer_server_mode
            )
        for kind in kinds:
            print(f"measuring this project's server on {kind} ...", flush=True)
            ours.append(run_ours(kind, workload, args.repeats, args.min_time, args.time_limit))
    ingest: dict[str, Any] | None = None
    if args.ingest_spans:
        print("measuring span ingest into sqlite through this project's server ...", flush=True)
        ingest = run_ingest(
            args.ingest_spans, args.ingest_batch, args.ingest_tasks, args.ingest_attempts, args.repeats, args.time_limit
        )

    if not args.skip_cycle:
        print()
        print(_cycle_table(peer, ours, workload))
    if ingest is not None:
        print()
        print(_ingest_table(ingest))

    if args.json is not None:
        write_results(
            args.json,
            RESULTS_DIR,
            "http",
            workload,
            args,
            peer_server_mode=args.peer_server_mode,
            targets={"vs_peer": TARGETS, "ingest_spans_per_s": INGEST_TARGET},
            peer=peer,
            ours=ours,
            ingest=ingest,
        )

    if args.check:
        below = []
        if peer is not None:
            peer_rate = peer["median_rollouts_per_s"]
            below += [r["kind"] for r in ours if r["median_rollouts_per_s"] / peer_rate < TARGETS.get(r["kind"], 0.0)]
        if ingest is not None and ingest["median_spans_per_s"] < INGEST_TARGET:
            below.append("ingest")
        if below:
            print(f"below target: {', '.join(below)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
