"""The peer's side of the store benchmark: ``agentlightning==0.3.0``'s ``InMemoryLightningStore``.

Run it with the peer's own interpreter (its own virtual environment, never this project's)::

    LITELLM_LOCAL_MODEL_COST_MAP=True <peer-venv>/bin/python bench/peer_store_bench.py --rollouts 4000

It prints one JSON object on stdout (see ``_workload.summarize``); ``store_bench.py`` runs it as a
subprocess and compares it with this project's stores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

# The peer imports litellm, which otherwise downloads a price list at import time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("AGENTOPS_API_KEY", "")

from _workload import Workload, repeat_workload, span_factory, summarize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=4000)
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--spans", type=int, default=5, help="spans per rollout")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; the summary gives best and median")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of workload per measurement, at least")
    args = parser.parse_args(argv)

    t_import = time.perf_counter()
    import agentlightning as agl  # the peer's package, from the peer's venv
    import agentlightning.types
    from agentlightning.store import InMemoryLightningStore

    import_s = time.perf_counter() - t_import

    make_span, trace_ids = span_factory(agentlightning.types)

    async def open_store(_: int) -> Any:
        trace_ids.clear()
        return InMemoryLightningStore()  # the peer's default: agl.InMemoryLightningStore()

    async def close_store(_: Any) -> None:
        return None

    workload = Workload(rollouts=args.rollouts, runners=args.runners, spans_per_rollout=args.spans)
    results = asyncio.run(repeat_workload(open_store, close_store, make_span, workload, args.repeats, args.min_time))
    summary = summarize("peer agentlightning==0.3.0 InMemoryLightningStore", results)
    summary["version"] = getattr(agl, "__version__", "0.3.0")
    summary["import_s"] = import_s
    summary["python"] = sys.version.split()[0]
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
