"""How long the dashboard's API calls take on a large store (target: < 300 ms each).

Builds a SQLite store of ``--rollouts`` finished rollouts (100,000 by default; one reward span each)
plus one rollout of ``--spans`` spans (1,000), serves it with the store server in this process
(the same server ``agl dashboard`` runs; its 1 s answer cache turned off, so every call is computed),
and times over real HTTP the one call each page makes:

* rollout list: ``GET /v1/agl/dashboard/rollouts?limit=50`` (newest first), and with filters;
* rollout page: ``GET /v1/agl/dashboard/rollouts/{id}`` of the 1,000-span rollout;
* overview: ``GET /v1/agl/dashboard/overview``.

Prints the median and the worst of ``--repeats`` calls. ``nox -s bench_dashboard``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import httpx

from agentlightning.server import StoreServer
from agentlightning.store.sqlite import SqliteLightningStore
from agentlightning.types import EnqueueRolloutRequest, Span
from agentlightning_dashboard import routes as dashboard

TARGET_MS = 300.0


def _span(rollout_id: str, attempt_id: str, sequence_id: int, name: str, attributes: Dict[str, object]) -> Span:
    now = time.time()
    return Span(
        rollout_id=rollout_id,
        attempt_id=attempt_id,
        sequence_id=sequence_id,
        trace_id="ab" * 16,
        span_id=f"{sequence_id:016x}",
        parent_id=None if sequence_id == 1 else f"{1:016x}",
        name=name,
        attributes=attributes,
        start_time=now,
        end_time=now + 0.01,
    )


async def build(path: Path, rollouts: int, spans: int) -> str:
    store = SqliteLightningStore(path)
    try:
        batch = 1000
        for start in range(0, rollouts, batch):
            count = min(batch, rollouts - start)
            requests = [
                EnqueueRolloutRequest(input={"question": f"{i} + {i}", "i": i}, mode="val" if i % 10 == 0 else "train")
                for i in range(start, start + count)
            ]
            await store.enqueue_many_rollouts(requests)
            dequeued = await store.dequeue_many_rollouts(limit=count, worker_id="bench-worker")
            await store.add_many_spans(
                [
                    _span(
                        r.rollout_id,
                        r.attempt.attempt_id,
                        1,
                        "agentlightning.annotation",
                        {"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1.0},
                    )
                    for r in dequeued
                ]
            )
            for r in dequeued:
                await store.update_attempt(r.rollout_id, r.attempt.attempt_id, status="succeeded")
            print(f"\r  built {start + count:,} rollouts", end="", flush=True)
        big = await store.start_rollout({"question": "the long one"}, mode="train")
        message = '{"role": "user", "content": "' + "word " * 400 + '"}'
        await store.add_many_spans(
            [
                _span(
                    big.rollout_id,
                    big.attempt.attempt_id,
                    i + 1,
                    "openai.chat.completion",
                    {
                        "gen_ai.operation.name": "chat",
                        "agentlightning.llm.request": '{"messages": [' + message + "]}",
                        "agentlightning.llm.prompt_token_ids": list(range(600)),
                    },
                )
                for i in range(spans)
            ]
        )
        print()
        return big.rollout_id
    finally:
        await store.close()


def time_calls(client: httpx.Client, path: str, repeats: int) -> List[float]:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=100_000)
    parser.add_argument("--spans", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    dashboard.CACHE_SECONDS = 0.0  # every call computes its answer: what a change costs

    with tempfile.TemporaryDirectory(prefix="agl-dashboard-bench-") as folder:
        path = Path(folder) / "store.db"
        print(f"Building a SQLite store of {args.rollouts:,} rollouts and one of {args.spans:,} spans")
        started = time.perf_counter()
        big_id = asyncio.run(build(path, args.rollouts, args.spans))
        print(f"  built in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        store = SqliteLightningStore(path, read_only=True)  # what `agl dashboard` opens
        print(f"  opened read-only in {time.perf_counter() - started:.2f} s")
        calls = {
            "rollout list (newest 50)": "/v1/agl/dashboard/rollouts?limit=50",
            "rollout list, page 100": "/v1/agl/dashboard/rollouts?limit=50&offset=4950",
            "rollout list, status=succeeded": "/v1/agl/dashboard/rollouts?limit=50&status=succeeded",
            "rollout list, mode=val (scans all)": "/v1/agl/dashboard/rollouts?limit=50&mode=val",
            "rollout list, input search (scans all)": "/v1/agl/dashboard/rollouts?limit=50&q=777%20%2B",
            f"rollout page ({args.spans:,} spans)": f"/v1/agl/dashboard/rollouts/{big_id}",
            "overview": "/v1/agl/dashboard/overview",
        }
        with StoreServer(store, port=0, close_store=True) as server, httpx.Client(base_url=server.url) as client:
            print(f"\n{'call (one per page view)':<42} {'median ms':>10} {'worst ms':>10}  target < {TARGET_MS:.0f} ms")
            for label, call in calls.items():
                timings = time_calls(client, call, args.repeats)
                median = statistics.median(timings)
                verdict = "met" if median < TARGET_MS else "NOT met"
                print(f"{label:<42} {median:>10.1f} {max(timings):>10.1f}  {verdict}")


if __name__ == "__main__":
    main()
