"""Where the CPU time of a benchmark goes: a py-spy profile summed into a few named buckets, per process.

Record a benchmark and the store server it starts, then summarize::

    py-spy record --subprocesses --format raw --rate 100 -o prof.raw -- \\
        python bench/http_bench.py --skip-peer --systems sqlite --ingest-spans 0
    python bench/profile_shares.py prof.raw --per 6000   # --per: rollouts (or spans) the timed part ran

A sampled stack goes to a bucket in two steps. First, "owner" rules look at the whole stack: a
span built by the workload counts as the workload's even though pydantic runs it, SQLite's
statements and commits (``_commit_batch``, run inline by the store's writers) as SQLite's, the
journal's pickling and ``write(2)`` (``_flush``) as the journal's. Otherwise the innermost frame that
matches a rule decides (looking outwards), so JSON inside the server's handler counts as JSON.
Waiting threads (an idle event loop in ``select``, a thread waiting on a condition, a lock or, with
``--native``, the GIL) are left out. Record with ``--native`` to see inside C code: pydantic-core's JSON and
validation, the garbage collector, SQLite, system calls (without it, their time goes to the Python
frame that called them, e.g. ``to_json`` to the client's ``_dump``).
Only the timed part is counted: stacks inside an event loop's ``_run_once`` (client and server),
the workload or ingest functions and the SQLite store's writer thread, without imports and the
benchmark's store opening/closing.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import Dict, List, Optional, Tuple

# (bucket, substring of a frame). Frames read "function (path:line)", e.g.
# "SqliteLightningStore._flush (agentlightning/store/sqlite.py:456)".
# Owner rules: the first rule matching any frame of the stack decides.
OWNER_RULES: List[Tuple[str, str]] = [
    ("workload: building its spans", "make_span ("),
    ("SQLite: inserts and commits", "_commit_batch (agentlightning/store/sqlite.py"),
    ("SQLite: inserts and commits", "_write_loop (agentlightning/store/sqlite.py"),
    ("SQLite store: span JSON for its row", "_span_row (agentlightning/store/sqlite.py"),
    ("store: journal (pickle + write)", "_flush (agentlightning/store/sqlite.py"),
    ("store: packed span copies (cache)", "pack_span (agentlightning/store/memory.py"),
]
# Innermost rules: tried from the innermost frame outwards; the first frame matching any rule decides.
RULES: List[Tuple[str, str]] = [
    ("store: logic (engine, memory/sqlite/postgres)", "agentlightning/store/engine.py"),
    ("store: logic (engine, memory/sqlite/postgres)", "agentlightning/store/memory.py"),
    ("store: logic (engine, memory/sqlite/postgres)", "agentlightning/store/sqlite.py"),
    ("store: logic (engine, memory/sqlite/postgres)", "agentlightning_postgres"),
    ("PostgreSQL driver", "asyncpg"),
    ("PostgreSQL driver", "psycopg"),
    ("JSON + models (pydantic)", "pydantic"),
    ("JSON + models (pydantic)", "json/"),
    ("wire format (agentlightning/store/wire.py)", "agentlightning/store/wire.py"),
    ("server: batch handler, app", "agentlightning/server/"),
    ("client: HttpLightningStore (coalescing)", "agentlightning/store/client.py"),
    ("client: HttpLightningStore (coalescing)", "agentlightning/store/_http.py"),
    ("HTTP client (aiohttp)", "aiohttp"),
    ("HTTP server (uvicorn, httptools)", "uvicorn"),
    ("HTTP server (uvicorn, httptools)", "httptools"),
    ("sockets: send/recv system calls", "_SelectorSocketTransport.write"),
    ("sockets: send/recv system calls", "_read_ready__"),
    ("sockets: send/recv system calls", "sock_sendall"),
    ("garbage collector", "gc_collect"),
    ("SQLite: inserts and commits", "libsqlite3"),
    ("SQLite: inserts and commits", "_sqlite3"),
    ("JSON + models (pydantic)", "_json.cpython"),
    ("HTTP client (aiohttp)", "yarl"),
    ("HTTP client (aiohttp)", "multidict"),
    ("HTTP client (aiohttp)", "propcache"),
    ("sockets: send/recv system calls", "send (libc"),
    ("sockets: send/recv system calls", "sendmsg (libc"),
    ("sockets: send/recv system calls", "recv (libc"),
    ("sockets: send/recv system calls", "read (libc"),
    ("sockets: send/recv system calls", "write (libc"),
    ("event loop (asyncio: callbacks, tasks, futures)", "asyncio/"),
    ("event loop (asyncio: callbacks, tasks, futures)", "_asyncio.cpython"),
    ("event loop (asyncio: callbacks, tasks, futures)", "selectors.py"),
    ("workload: its own code", "_workload.py"),
    ("workload: its own code", "http_bench.py"),
    ("workload: its own code", "limits.py"),
]
TIMED = ("run_workload", "ingest_once", "_run_once", "_write_loop")
UNTIMED = ("importlib", "open_one", "close_one")
# Innermost frames of a thread that waits (py-spy here samples waiting threads too): not CPU time.
WAITING = ("EpollSelector.select", "Condition.wait", "Event.wait", "watchdog", "read_stdin", "ServerProcess._read")
# Native frames (``--native``) of a wait, anywhere in the stack: in epoll, sleeping, or blocked on a lock,
# a condition or the GIL (a thread that waits to take the GIL back is not running either).
NATIVE_WAITING = (
    "select_epoll_poll",
    "epoll_wait (",
    "clock_nanosleep (",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "sem_clockwait",
    "sem_timedwait",
    "take_gil",
)


def bucket_of(frames: List[str]) -> str:
    for bucket, needle in OWNER_RULES:
        if any(needle in frame for frame in frames):
            return bucket
    for frame in reversed(frames):
        for bucket, needle in RULES:
            if needle in frame:
                return bucket
    return "other"


def parse(path: str) -> Dict[str, Dict[str, int]]:
    """{process label: {bucket: samples}} for the timed stacks of a py-spy ``--format raw`` file."""
    shares: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
    with open(path) as raw:
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            processes = [f for f in frames if f.startswith("process ")]
            frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
            if not frames or any(w in frames[-1] for w in WAITING):
                continue
            if any(w in frame for frame in frames for w in NATIVE_WAITING):
                continue
            if not any(t in f for f in frames for t in TIMED) or any(u in f for f in frames for u in UNTIMED):
                continue
            label = processes[-1] if processes else "process"
            match = re.search(r'"(.*)"', label)
            command = match.group(1) if match else label
            who = "server" if ("--serve" in command or "store serve" in command) else "client"
            shares[who][bucket_of(frames)] += int(count)
    return shares


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", help="a py-spy --format raw file")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's sampling rate (samples per second)")
    parser.add_argument("--per", type=float, default=0.0, help="units the timed part ran: prints µs of CPU per unit")
    args = parser.parse_args(argv)
    shares = parse(args.raw)
    for who in sorted(shares):
        total = sum(shares[who].values())
        cpu_s = total / args.rate
        per = f", {cpu_s / args.per * 1e6:.0f} µs per unit" if args.per else ""
        print(f"{who}: {total} samples ({cpu_s:.1f} s of CPU{per})")
        for bucket, samples in sorted(shares[who].items(), key=lambda item: -item[1]):
            us = f"{samples / args.rate / args.per * 1e6:8.1f} µs" if args.per else ""
            print(f"  {samples / total:6.1%} {us}  {bucket}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
