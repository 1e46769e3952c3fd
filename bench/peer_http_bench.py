"""The peer's side of the HTTP store benchmark: ``agentlightning==0.3.0`` over HTTP.

The server, 0.3's ``LightningStoreServer`` around an ``InMemoryLightningStore``, runs in a process
of its own (this script with ``--serve``); the workload of ``_workload.py`` runs here and talks to
it through 0.3's ``LightningStoreClient``. Run it with the peer's own interpreter (its own virtual
environment, never this project's)::

    LITELLM_LOCAL_MODEL_COST_MAP=True <peer-venv>/bin/python bench/peer_http_bench.py --rollouts 1000

It prints one JSON object on stdout (see ``_workload.summarize``); ``http_bench.py`` runs it as a
subprocess and compares it with this project's server.

One difference from this project's side, and only one: 0.3's client refuses a
``wait_for_rollouts`` timeout above 0.1 s ("to avoid blocking the event loop"), so here the
algorithm side polls it with ``timeout=0.1`` until every rollout has finished or the workload's
timeout has passed, which is how 0.3 documents its use. By the time the workload waits, the
runners have finished every rollout, so the first poll already returns all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# The peer imports litellm, which otherwise downloads a price list at import time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("AGENTOPS_API_KEY", "")

from _server_process import ServerProcess, exit_after, serve_commands  # noqa: E402
from _workload import Workload, repeat_workload, span_factory, summarize  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # loopback only

# How the server process runs 0.3's server:
# * "cli": like 0.3's own `agl store` command (the peer's way to run a store server in a process
#   of its own): InMemoryLightningStore(thread_safe=True), uvicorn in the process's event loop;
# * "thread": LightningStoreServer(InMemoryLightningStore(), host, port), its constructor's default
#   launch mode, uvicorn in a thread of its own.
SERVER_MODES = ("cli", "thread")


def _quiet_logging() -> None:
    """0.3 logs every server start and stop at INFO; keep its warnings and errors only."""
    logging.basicConfig(level=logging.WARNING)
    for name in ("agentlightning", "uvicorn", "uvicorn.error", "uvicorn.access", "LiteLLM", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def serve(mode: str) -> None:
    """The server process: serve a fresh 0.3 in-memory store on every ``open`` (see ``_server_process``)."""
    from portpicker import pick_unused_port  # what 0.3 itself uses to pick a port

    from agentlightning.store.client_server import API_V1_AGL_PREFIX, LightningStoreServer
    from agentlightning.store.memory import InMemoryLightningStore
    from agentlightning.utils.server_launcher import PythonServerLauncherArgs

    _quiet_logging()
    current: list[Any] = []

    async def open_store() -> str:
        if mode == "cli":
            store = InMemoryLightningStore(thread_safe=True)
            launch_mode = "asyncio"
        else:
            store = InMemoryLightningStore()
            launch_mode = "thread"
        args = PythonServerLauncherArgs(
            host=HOST,
            port=pick_unused_port(),
            access_host=HOST,
            launch_mode=launch_mode,
            healthcheck_url=API_V1_AGL_PREFIX + "/health",
            log_level=logging.WARNING,
        )
        server = LightningStoreServer(store, launcher_args=args)
        await server.start()
        current.append(server)
        return str(server.endpoint)

    async def close_store() -> None:
        while current:
            await current.pop().stop()
        gc.collect()

    await serve_commands(open_store, close_store)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--spans", type=int, default=5, help="spans per rollout")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; the summary gives best and median")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of workload per measurement, at least")
    parser.add_argument("--server-mode", choices=SERVER_MODES, default="cli", help="how 0.3's server runs")
    parser.add_argument("--time-limit", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)

    if args.serve:
        exit_after(args.time_limit + 60.0)
        try:
            asyncio.run(serve(args.server_mode))
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the benchmark reports it
            return 130
        return 0

    t_import = time.perf_counter()
    import agentlightning as agl  # the peer's package, from the peer's venv
    import agentlightning.types
    from agentlightning.store.client_server import LightningStoreClient

    import_s = time.perf_counter() - t_import
    _quiet_logging()

    class PollingClient(LightningStoreClient):
        """0.3's client, with ``wait_for_rollouts`` polled in 0.1 s steps as 0.3 requires."""

        async def wait_for_rollouts(self, *, rollout_ids: list[str], timeout: float | None = None) -> Any:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            wanted = len(set(rollout_ids))
            while True:
                finished = await super().wait_for_rollouts(rollout_ids=rollout_ids, timeout=0.1)
                if len(finished) >= wanted or (deadline is not None and loop.time() >= deadline):
                    return finished

    make_span, trace_ids = span_factory(agentlightning.types)
    workload = Workload(rollouts=args.rollouts, runners=args.runners, spans_per_rollout=args.spans)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", f"--server-mode={args.server_mode}"]
    command.append(f"--time-limit={args.time_limit}")

    with ServerProcess(command, cwd=BENCH_DIR.parent) as server:

        async def open_store(_: int) -> Any:
            trace_ids.clear()
            return PollingClient(server.open())

        async def close_store(store: Any) -> None:
            try:
                await store.close()
            finally:
                server.close()

        async def measure() -> Any:
            return await asyncio.wait_for(
                repeat_workload(open_store, close_store, make_span, workload, args.repeats, args.min_time),
                timeout=args.time_limit,
            )

        results = asyncio.run(measure())

    summary = summarize(f"peer agentlightning==0.3.0 over HTTP ({args.server_mode} server)", results)
    summary["version"] = getattr(agl, "__version__", "0.3.0")
    summary["server_mode"] = args.server_mode
    summary["import_s"] = import_s
    summary["python"] = sys.version.split()[0]
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
