"""Soak with faults: rollouts through a store server (SQLite or PostgreSQL) by runner processes, while
runners are killed every few seconds and the server once; at the end nothing acknowledged is missing.

The server is what users run, ``agl store serve --store URI``, in a process of its own; each runner
is a process of its own with an ``HttpLightningStore``: dequeue -> sequence ids for its spans -> the
spans in one ``add_many_spans`` -> ``update_attempt(succeeded)``, logging every acknowledged span
batch and status to its own file. The fault injector (this process) SIGKILLs a random runner every
``--kill-runner-every`` seconds (a new runner takes its place) and SIGKILLs the server once, when
``--kill-server-at`` of the rollouts have succeeded, then starts it again on the same store and port.
Rollouts carry ``timeout_seconds`` and retry on timeout: the rollout of a killed runner comes back.

Checks at the end (exit 1 if any fails):

* every rollout enqueued exactly once (inputs 0..N-1, each once) and succeeded: none lost, none duplicated;
* every span a runner logged as acknowledged is in the store, and each rollout's succeeded attempt has
  all its spans;
* retries were not applied twice: every attempt in the store was received by a runner (its log says
  so) or belongs to a runner that was killed (a dequeue applied twice leaves an attempt that no
  runner received, owned by a live runner);
* the server's memory stayed bounded: its RSS (sampled every half second, reported over time) below
  ``--max-rss-mib``.

Usage: ``python bench/soak.py --store sqlite`` (``--store postgres`` needs AGL_BENCH_POSTGRES_URI, which
``python -m agentlightning_postgres.tempserver --env AGL_BENCH_POSTGRES_URI python bench/soak.py ...``
sets); ``nox -s soak`` runs both at full size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

# Rides out a server restart (two minutes of tries): a client that gave up and called again would send a
# new idempotency key, and its dequeue could then take a second rollout.
RUNNER_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0) + (5.0,) * 23


# -- runner process -------------------------------------------------------------------------------
async def run_runner(url: str, worker_id: str, ack_path: Path, spans_per_rollout: int, tasks: int) -> None:
    from _workload import span_factory

    from agentlightning import types
    from agentlightning.errors import InvalidTransitionError
    from agentlightning.store.client import HttpLightningStore

    store = HttpLightningStore(url, retry_delays=RUNNER_RETRY_DELAYS)
    make_span, _ = span_factory(types)
    with open(ack_path, "a", buffering=1) as log:

        async def loop() -> None:
            idle = 0.0
            while True:
                attempted = await store.dequeue_rollout(worker_id=worker_id)
                if attempted is None:
                    idle = min(idle * 2 or 0.02, 0.2)
                    await asyncio.sleep(idle)
                    continue
                idle = 0.0
                rid, aid = attempted.rollout_id, attempted.attempt.attempt_id
                log.write(json.dumps({"r": rid, "a": aid, "got": True}) + "\n")
                try:
                    sequence_ids = await store.get_many_span_sequence_ids([(rid, aid)] * spans_per_rollout)
                    batch = [make_span(rid, aid, seq, i) for i, seq in enumerate(sequence_ids)]
                    await store.add_many_spans(batch)
                    log.write(json.dumps({"r": rid, "a": aid, "spans": [s.span_id for s in batch]}) + "\n")
                    await store.update_attempt(rid, aid, status="succeeded")
                    log.write(json.dumps({"r": rid, "a": aid, "done": True}) + "\n")
                except InvalidTransitionError as exc:  # the watchdog timed the attempt out meanwhile
                    log.write(json.dumps({"r": rid, "a": aid, "lost": str(exc)}) + "\n")

        await asyncio.gather(*(loop() for _ in range(tasks)))


# -- the soak ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> Optional[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Soak:
    def __init__(self, args: argparse.Namespace, uri: str, workdir: Path) -> None:
        self.args, self.uri, self.workdir = args, uri, workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Optional[subprocess.Popen[bytes]] = None
        self.runners: Dict[str, subprocess.Popen[bytes]] = {}
        self.killed: Set[str] = set()
        self.runner_count = 0
        self.rss: List[Tuple[float, float, int]] = []  # (seconds, MiB, succeeded so far)
        self.server_restarts: List[Dict[str, float]] = []

    def start_server(self) -> None:
        command = [sys.executable, "-m", "agentlightning.cli", "store", "serve", "--store", self.uri]
        command += ["--port", str(self.port), "--log-level", "warning"]
        with open(self.workdir / "server.log", "ab") as log:  # the child keeps its own copy of the file
            self.server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)

    def wait_server(self) -> float:
        started = time.monotonic()
        while time.monotonic() - started < 120:
            assert self.server is not None
            if self.server.poll() is not None:
                raise SystemExit(
                    f"store server exited:\n{(self.workdir / 'server.log').read_text(errors='replace')[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v1/agl/health", timeout=1) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except OSError:  # refused, reset or timed out while it starts (URLError is an OSError)
                pass
            time.sleep(0.05)
        raise SystemExit("store server did not come up in 120 s")

    def start_runner(self) -> None:
        self.runner_count += 1
        worker_id = f"runner-{self.runner_count}"
        command = [sys.executable, __file__, "--runner", self.url, worker_id, str(self.workdir / f"{worker_id}.jsonl")]
        command += ["--spans", str(self.args.spans), "--tasks", str(self.args.tasks)]
        with open(self.workdir / f"{worker_id}.log", "ab") as log:
            self.runners[worker_id] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def kill_runner(self) -> str:
        worker_id = random.choice(sorted(self.runners))
        process = self.runners.pop(worker_id)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.killed.add(worker_id)
        return worker_id

    def stop_all(self) -> None:
        for process in self.runners.values():
            process.kill()
        for process in self.runners.values():
            process.wait()
        self.runners.clear()
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)  # a clean stop: SQLite commits what it journaled
            try:
                self.server.wait(60)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    async def enqueue(self) -> None:
        from agentlightning.store.client import HttpLightningStore
        from agentlightning.types import EnqueueRolloutRequest, RolloutConfig

        store = HttpLightningStore(self.url, retry_delays=RUNNER_RETRY_DELAYS)
        config = RolloutConfig(timeout_seconds=self.args.rollout_timeout, max_attempts=20, retry_condition=["timeout"])
        for start in range(0, self.args.rollouts, 500):
            requests = [
                EnqueueRolloutRequest(input={"i": i}, config=config, client_request_id=f"soak-{i}")
                for i in range(start, min(start + 500, self.args.rollouts))
            ]
            await store.enqueue_many_rollouts(requests)
        await store.close()

    async def progress(self) -> int:
        from agentlightning.store.client import HttpLightningStore

        store = HttpLightningStore(self.url, retry_delays=RUNNER_RETRY_DELAYS)
        try:
            stats = await store.statistics()
            return int(stats.get("rollouts_by_status", {}).get("succeeded", 0))
        finally:
            await store.close()

    def run(self) -> Dict[str, Any]:
        try:
            return self._run()
        finally:
            self.stop_all()  # whatever happened, no runner or server outlives the soak

    def _run(self) -> Dict[str, Any]:
        args = self.args
        self.start_server()
        self.wait_server()
        asyncio.run(self.enqueue())
        for _ in range(args.runners):
            self.start_runner()
        t0 = time.monotonic()
        next_kill = t0 + args.kill_runner_every if args.kill_runner_every > 0 else float("inf")
        server_killed = args.kill_server_at >= 1
        succeeded = 0
        last_report = 0.0
        while True:
            now = time.monotonic()
            if now - t0 > args.time_limit:
                print(f"time limit of {args.time_limit} s reached with {succeeded}/{args.rollouts} succeeded")
                break
            assert self.server is not None
            rss = _rss_mib(self.server.pid)
            succeeded = asyncio.run(self.progress())
            if rss is not None:
                self.rss.append((round(now - t0, 2), round(rss, 1), succeeded))
            if succeeded >= args.rollouts:
                break
            if now - last_report >= 5:
                last_report = now
                print(f"  {now - t0:6.1f} s  {succeeded:6d}/{args.rollouts} succeeded  server RSS {rss or 0:.0f} MiB")
            if not server_killed and succeeded >= args.kill_server_at * args.rollouts:
                server_killed = True
                self.server.send_signal(signal.SIGKILL)
                self.server.wait()
                killed_at = time.monotonic()
                self.start_server()
                up = self.wait_server()
                self.server_restarts.append({"at_s": round(killed_at - t0, 2), "down_s": round(up, 2)})
                print(f"  server killed at {killed_at - t0:.1f} s ({succeeded} succeeded); back after {up:.1f} s")
            if now >= next_kill:
                victim = self.kill_runner()
                self.start_runner()
                next_kill = now + args.kill_runner_every
                print(f"  killed {victim}")
            for worker_id, process in list(self.runners.items()):  # a runner may not die on its own
                if process.poll() is not None:
                    tail = (self.workdir / f"{worker_id}.log").read_text(errors="replace")[-3000:]
                    raise SystemExit(f"{worker_id} exited with {process.returncode}:\n{tail}")
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        self.stop_all()
        result = asyncio.run(self.verify())
        result.update(
            elapsed_s=round(elapsed, 2),
            rollouts_per_s=round(args.rollouts / elapsed, 1),
            spans_per_s=round(args.rollouts * args.spans / elapsed, 1),
            runners_killed=len(self.killed),
            server_restarts=self.server_restarts,
            rss_mib=self.rss,
            rss_max_mib=max((r for _, r, _ in self.rss), default=None),
        )
        return result

    async def verify(self) -> Dict[str, Any]:
        """Read the store directly (the server is stopped) and check it against the runners' logs."""
        from agentlightning.store import open_store

        acked_spans: Dict[Tuple[str, str], Set[str]] = {}
        finished: Set[Tuple[str, str]] = set()
        received: Set[Tuple[str, str]] = set()
        for path in self.workdir.glob("runner-*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # the last line of a killed runner may be cut short
                    continue
                if entry.get("got"):
                    received.add((entry["r"], entry["a"]))
                elif "spans" in entry:
                    acked_spans.setdefault((entry["r"], entry["a"]), set()).update(entry["spans"])
                elif entry.get("done"):
                    finished.add((entry["r"], entry["a"]))
        store = open_store(self.uri)
        if asyncio.iscoroutine(store):
            store = await store
        problems: List[str] = []
        try:
            rollouts = list(await store.query_rollouts())
            inputs = sorted(r.input["i"] for r in rollouts)
            if inputs != list(range(self.args.rollouts)):
                problems.append(f"{len(rollouts)} rollouts, inputs {len(set(inputs))} distinct of {self.args.rollouts}")
            not_succeeded = [r.rollout_id for r in rollouts if r.status != "succeeded"]
            if not_succeeded:
                problems.append(f"{len(not_succeeded)} rollouts not succeeded, e.g. {not_succeeded[:3]}")
            missing_spans = 0
            incomplete = 0
            foreign_attempts: List[str] = []
            retried = 0
            semaphore = asyncio.Semaphore(16)

            async def check(rollout: Any) -> None:
                nonlocal missing_spans, incomplete, retried
                async with semaphore:
                    attempts = list(await store.query_attempts(rollout.rollout_id))
                    spans = list(await store.query_spans(rollout.rollout_id))
                stored: Dict[str, Set[str]] = {}
                for span in spans:
                    stored.setdefault(span.attempt_id, set()).add(span.span_id)
                retried += len(attempts) > 1
                for attempt in attempts:
                    have = stored.get(attempt.attempt_id, set())
                    missing_spans += len(acked_spans.get((rollout.rollout_id, attempt.attempt_id), set()) - have)
                    if attempt.status == "succeeded" and len(have) < self.args.spans:
                        incomplete += 1
                    # Every attempt was handed to a runner that logged it, or to one killed before it could.
                    key = (rollout.rollout_id, attempt.attempt_id)
                    if key not in received and attempt.worker_id not in self.killed:
                        foreign_attempts.append(
                            f"{rollout.rollout_id}/{attempt.attempt_id} {attempt.status} {attempt.worker_id}"
                        )

            await asyncio.gather(*(check(r) for r in rollouts))
            if missing_spans:
                problems.append(f"{missing_spans} acknowledged spans missing")
            if incomplete:
                problems.append(f"{incomplete} succeeded attempts without all their {self.args.spans} spans")
            if foreign_attempts:
                problems.append(
                    f"{len(foreign_attempts)} attempts no runner received, of runners never killed (a retried "
                    "dequeue applied twice?): "
                    f"{foreign_attempts[:3]}"
                )
            acked_total = sum(len(s) for s in acked_spans.values())
        finally:
            await store.close()
        rss_max = max((r for _, r, _ in self.rss), default=0.0)
        if rss_max > self.args.max_rss_mib:
            problems.append(f"server RSS reached {rss_max:.0f} MiB (limit {self.args.max_rss_mib})")
        return {
            "rollouts": len(rollouts),
            "rollouts_with_retries": retried,
            "acknowledged_spans": acked_total,
            "finished_attempts_logged": len(finished),
            "problems": problems,
        }


def _postgres_uri() -> str:
    base = os.environ.get("AGL_BENCH_POSTGRES_URI") or os.environ.get("AGL_TEST_POSTGRES_URI")
    if not base:
        raise SystemExit("--store postgres needs AGL_BENCH_POSTGRES_URI (see the module docstring)")
    return f"{base}{'&' if '?' in base else '?'}schema=agl_soak_{uuid.uuid4().hex[:12]}"


def _rss_over_time(samples: List[Tuple[float, float, int]], points: int = 10) -> str:
    if not samples:
        return "-"
    step = max(1, len(samples) // points)
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return ", ".join(f"{t:.0f}s:{mib:.0f}" for t, mib, _ in picked)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "postgres"], action="append", help="repeatable (default sqlite)")
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--spans", type=int, default=20, help="spans per rollout")
    parser.add_argument("--runners", type=int, default=8, help="runner processes")
    parser.add_argument("--tasks", type=int, default=2, help="concurrent rollouts per runner process")
    parser.add_argument("--kill-runner-every", type=float, default=5.0, help="seconds; 0: never")
    parser.add_argument("--kill-server-at", type=float, default=0.4, help="fraction succeeded; >= 1: never")
    parser.add_argument(
        "--rollout-timeout", type=float, default=20.0, help="a killed runner's rollout retries after it"
    )
    parser.add_argument("--max-rss-mib", type=float, default=1024.0)
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds per store")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH")
    parser.add_argument("--runner", nargs=3, metavar=("URL", "WORKER_ID", "ACK_LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runner:
        url, worker_id, ack = args.runner
        asyncio.run(run_runner(url, worker_id, Path(ack), args.spans, args.tasks))
        return 0

    results: Dict[str, Any] = {}
    failed = False
    for kind in args.store or ["sqlite"]:
        with tempfile.TemporaryDirectory(prefix=f"agl-soak-{kind}-") as tmp:
            workdir = Path(tmp)
            uri = f"sqlite:///{workdir / 'soak.db'}" if kind == "sqlite" else _postgres_uri()
            print(
                f"soak on {kind}: {args.rollouts} rollouts x {args.spans} spans, {args.runners} runner processes "
                f"x {args.tasks} tasks, a runner killed every {args.kill_runner_every} s, the server once at "
                f"{args.kill_server_at:.0%}"
            )
            result = Soak(args, uri, workdir).run()
        results[kind] = result
        restarts = "; ".join(f"killed at {r['at_s']} s, back in {r['down_s']} s" for r in result["server_restarts"])
        print(
            f"{kind}: {result['rollouts']} rollouts in {result['elapsed_s']} s ({result['rollouts_per_s']} rollouts/s, "
            f"{result['spans_per_s']} spans/s); {result['acknowledged_spans']} acknowledged spans; "
            f"{result['runners_killed']} runners killed; server {restarts or 'not killed'}; "
            f"{result['rollouts_with_retries']} rollouts retried"
        )
        print(f"  server RSS MiB over time: {_rss_over_time(result['rss_mib'])} (max {result['rss_max_mib']})")
        if result["problems"]:
            failed = True
            for problem in result["problems"]:
                print(f"  FAILED: {problem}")
        else:
            print("  every check passed: nothing lost, nothing duplicated, no retry applied twice")
    if args.json is not None:
        path = Path(
            args.json
            or Path(__file__).parent / "results" / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"args": {k: v for k, v in vars(args).items() if k != "runner"}, "results": results}, indent=1)
        )
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
