"""The limits of this machine for the store's workloads: what the fast path is measured against.

Three figures, each the best a store could do here with nothing of the store in the way:

1. **Bare dict store**: the store benchmark's workload (``_workload.py``: enqueue, 4 runners dequeue /
   allocate sequence ids / add 5 spans / finish, wait, read the spans back) against a store of plain
   dicts and lists that checks nothing and copies nothing. The workload still builds its spans with
   this project's ``Span`` model, as in the real benchmark. Rollouts per second.
2. **SQLite batched rows**: the span table of ``sqlite://`` (same schema and pragmas: WAL,
   ``synchronous=NORMAL``), rows of the workload's spans (their JSON, about 1 KB), inserted 500 rows
   per ``executemany`` and committed per batch, in one thread. Rows per second, without and with
   encoding each span's JSON in the loop.
3. **Requests of a bare ASGI app**: uvicorn (with httptools, as ``agl store serve`` runs it) in a
   process of its own serving an ASGI app that reads the body and answers ``{}``; this process sends
   small POSTs with the store client's own transport (``agentlightning.store._http.HttpPool``, aiohttp),
   one at a time (round trips per second: the limit of a caller that awaits each call before the
   next) and from 4 tasks at once.

Usage: ``python bench/limits.py`` (this project and its ``server`` extra installed, e.g. in the
``bench_http`` session's venv); ``--json PATH`` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import types as pytypes
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from _workload import Workload, run_workload, span_factory


# -- 1. bare dict store ----------------------------------------------------------------------------
class BareDictStore:
    """The workload's store calls on plain dicts: no validation, no copies, no status machine."""

    def __init__(self) -> None:
        self.rollouts: Dict[str, Any] = {}
        self.queue: List[str] = []
        self.spans: Dict[str, List[Any]] = {}
        self.sequences: Dict[str, int] = {}
        self.ids = itertools.count()

    async def enqueue_rollout(self, input: Any, mode: str) -> Any:
        rollout = pytypes.SimpleNamespace(rollout_id=f"ro-{next(self.ids)}", input=input, mode=mode, status="queuing")
        self.rollouts[rollout.rollout_id] = rollout
        self.queue.append(rollout.rollout_id)
        return rollout

    async def dequeue_rollout(self, worker_id: str) -> Any:
        if not self.queue:
            return None
        rollout = self.rollouts[self.queue.pop(0)]
        rollout.status = "running"
        attempt = pytypes.SimpleNamespace(attempt_id=f"at-{next(self.ids)}", worker_id=worker_id)
        return pytypes.SimpleNamespace(rollout_id=rollout.rollout_id, attempt=attempt)

    async def get_many_span_sequence_ids(self, keys: List[Tuple[str, str]]) -> List[int]:
        out = []
        for rollout_id, _ in keys:
            value = self.sequences.get(rollout_id, 0) + 1
            self.sequences[rollout_id] = value
            out.append(value)
        return out

    async def add_many_spans(self, spans: List[Any]) -> List[Any]:
        for span in spans:
            self.spans.setdefault(span.rollout_id, []).append(span)
        return spans

    async def update_attempt(self, rollout_id: str, attempt_id: str, status: str) -> None:
        self.rollouts[rollout_id].status = status

    async def wait_for_rollouts(self, rollout_ids: List[str], timeout: float) -> List[Any]:
        return [self.rollouts[r] for r in rollout_ids]

    async def query_spans(self, rollout_id: str, attempt_id: str) -> List[Any]:
        return list(self.spans.get(rollout_id, ()))


def bare_dict_store(rollouts: int, min_time: float) -> Dict[str, Any]:
    from agentlightning import types

    make_span, trace_ids = span_factory(types)
    workload = Workload(rollouts=rollouts)
    total_s = 0.0
    done = 0
    while total_s < min_time:
        trace_ids.clear()
        times = asyncio.run(run_workload(BareDictStore(), make_span, workload))
        total_s += times.total_s
        done += times.rollouts
    return {"rollouts_per_s": done / total_s, "us_per_rollout": total_s / done * 1e6}


# -- 2. SQLite batched rows ------------------------------------------------------------------------
SPANS_TABLE = """CREATE TABLE spans (
    rollout_id TEXT NOT NULL, attempt_id TEXT NOT NULL, span_id TEXT NOT NULL, sequence_id INTEGER NOT NULL,
    trace_id TEXT, parent_id TEXT, name TEXT, start_time REAL, end_time REAL, data TEXT NOT NULL,
    PRIMARY KEY (rollout_id, attempt_id, span_id))"""
INSERT_SPAN = "INSERT OR IGNORE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def sqlite_rows(rows: int, batch: int) -> Dict[str, Any]:
    from agentlightning import types

    make_span, _ = span_factory(types)
    spans = [make_span(f"ro-{i // 20}", f"at-{i // 20}", i % 20 + 1, i % 20) for i in range(rows)]
    out: Dict[str, Any] = {"rows": rows, "batch": batch}
    with tempfile.TemporaryDirectory(prefix="agl-limits-") as tmp:
        for label, encode in (("insert_only", False), ("with_span_json", True)):
            conn = sqlite3.connect(Path(tmp) / f"{label}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute(SPANS_TABLE)
            encoded = [s.model_dump_json() for s in spans] if not encode else None
            started = time.perf_counter()
            for start in range(0, rows, batch):
                chunk = spans[start : start + batch]
                datas = [s.model_dump_json() for s in chunk] if encoded is None else encoded[start : start + batch]
                conn.execute("BEGIN")
                conn.executemany(
                    INSERT_SPAN,
                    [
                        (
                            s.rollout_id,
                            s.attempt_id,
                            s.span_id,
                            s.sequence_id,
                            s.trace_id,
                            s.parent_id,
                            s.name,
                            s.start_time,
                            s.end_time,
                            d,
                        )
                        for s, d in zip(chunk, datas, strict=True)
                    ],
                )
                conn.execute("COMMIT")
            elapsed = time.perf_counter() - started
            conn.close()
            out[f"{label}_rows_per_s"] = rows / elapsed
    return out


# -- 3. requests of a bare ASGI app ----------------------------------------------------------------
async def bare_asgi_app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def serve_bare_asgi(port: int) -> None:
    import uvicorn

    from agentlightning.server.serve import tune_gc_for_serving

    tune_gc_for_serving()
    config = uvicorn.Config(
        bare_asgi_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


async def _post_loop(pool: Any, count: int, body: bytes) -> None:
    for _ in range(count):
        answer = await pool.request("POST", "/v1/agl/batch", body=body, timeout=30)
        if answer.status != 200:
            raise RuntimeError(f"bare ASGI app answered {answer.status}")


async def _requests(url: str, count: int, tasks: int, body: bytes) -> float:
    from agentlightning.store._http import HttpPool

    pool = HttpPool(url, headers={"Content-Type": "application/json"}, connect_timeout=5, max_connections=100)
    try:
        await _post_loop(pool, 50, body)  # connections open, code paths warm
        started = time.perf_counter()
        await asyncio.gather(*(_post_loop(pool, count // tasks, body) for _ in range(tasks)))
        return (count // tasks * tasks) / (time.perf_counter() - started)
    finally:
        await pool.aclose()


def asgi_requests(count: int) -> Dict[str, Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = subprocess.Popen([sys.executable, __file__, "--serve-bare-asgi", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the bare ASGI server did not come up") from None
                time.sleep(0.05)
        body = json.dumps({"calls": [{"op": "statistics", "args": {}}] * 4}).encode()
        sequential = asyncio.run(_requests(url, count, 1, body))
        concurrent = asyncio.run(_requests(url, count, 4, body))
    finally:
        server.terminate()
        server.wait(30)
    return {
        "sequential_requests_per_s": sequential,
        "round_trip_us": 1e6 / sequential,
        "concurrent_4_requests_per_s": concurrent,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=2000, help="per run of the bare dict store's workload")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of the bare dict store's workload")
    parser.add_argument("--rows", type=int, default=40_000, help="span rows inserted into SQLite")
    parser.add_argument("--requests", type=int, default=4000, help="requests sent to the bare ASGI app, per mode")
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--serve-bare-asgi", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare_asgi:
        serve_bare_asgi(args.serve_bare_asgi)
        return 0
    load = os.getloadavg()
    results = {
        "load_average_before": load,
        "bare_dict_store": bare_dict_store(args.rollouts, args.min_time),
        "sqlite_rows": sqlite_rows(args.rows, 500),
        "bare_asgi": asgi_requests(args.requests),
        "load_average_after": os.getloadavg(),
    }
    dict_store, rows, asgi = results["bare_dict_store"], results["sqlite_rows"], results["bare_asgi"]
    print(f"load average before {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(
        f"bare dict store:  {dict_store['rollouts_per_s']:,.0f} rollouts/s ({dict_store['us_per_rollout']:.0f} µs each)"
    )
    print(
        f"SQLite batched:   {rows['insert_only_rows_per_s']:,.0f} rows/s insert only, "
        f"{rows['with_span_json_rows_per_s']:,.0f} rows/s with each span's JSON (batches of 500)"
    )
    print(
        f"bare ASGI app:    {asgi['sequential_requests_per_s']:,.0f} requests/s one at a time "
        f"({asgi['round_trip_us']:.0f} µs per round trip), {asgi['concurrent_4_requests_per_s']:,.0f} requests/s from 4 tasks"
    )
    after = results["load_average_after"]
    print(f"load average after {after[0]:.1f} / {after[1]:.1f} / {after[2]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
