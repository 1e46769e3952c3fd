"""The store workload shared by ``store_bench.py`` (this project) and ``peer_store_bench.py`` (the peer).

This module imports nothing from ``agentlightning`` so that both sides, each in its own virtual
environment, run exactly the same code path. Each side supplies only its store object and a
function that builds one span with its own ``Span`` model.

One run of the workload:

1. the algorithm side enqueues ``rollouts`` rollouts, one ``enqueue_rollout`` call each;
2. ``runners`` asyncio tasks (one process, one event loop) repeatedly dequeue a rollout, allocate
   sequence ids for ``spans_per_rollout`` spans, store them with ``add_many_spans`` and mark the
   attempt ``succeeded``, until the queue is empty;
3. the algorithm side waits for every rollout (``wait_for_rollouts``) and reads all spans back
   (``query_spans(rollout_id, "latest")`` per rollout), checking the counts.

The figure of merit is rollouts per second over the whole run (all three phases).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "PhaseTimes",
    "Workload",
    "SpanFactory",
    "span_factory",
    "span_payload",
    "run_workload",
    "summarize",
    "comparison_table",
]

# Builds one span: (rollout_id, attempt_id, sequence_id, index_in_rollout) -> a span object of the side's model.
SpanFactory = Callable[[str, str, int, int], Any]

_PROMPT = "You are a careful assistant. Answer the question using the tools you have. " * 3
_COMPLETION = "The answer is 42 because the question asked for the meaning of everything. " * 2
_SPAN_NAMES = ("agent.step", "openai.chat.completion", "tool.call", "openai.chat.completion", "agentlightning.reward")


@dataclass(frozen=True)
class Workload:
    rollouts: int
    runners: int = 4
    spans_per_rollout: int = 5
    wait_timeout: float = 120.0


@dataclass
class PhaseTimes:
    rollouts: int
    spans: int
    stores: int
    enqueue_s: float
    run_s: float
    wait_s: float
    query_s: float
    total_s: float

    @property
    def rollouts_per_s(self) -> float:
        return self.rollouts / self.total_s if self.total_s > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rollouts_per_s"] = self.rollouts_per_s
        return data


def span_payload(rollout_id: str, index: int) -> tuple[str, dict[str, Any]]:
    """The name and attributes of the ``index``-th span of a rollout (same on both sides)."""
    name = _SPAN_NAMES[index % len(_SPAN_NAMES)]
    attributes: dict[str, Any] = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "bench-model",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": _PROMPT,
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": _COMPLETION,
        "gen_ai.usage.prompt_tokens": 64,
        "gen_ai.usage.completion_tokens": 32,
        "bench.rollout": rollout_id,
        "bench.index": index,
    }
    return name, attributes


def span_factory(types: Any) -> tuple[SpanFactory, dict[str, str]]:
    """A ``SpanFactory`` building spans with the ``Span`` model of ``types`` (either side's
    ``agentlightning.types`` module), and the per-rollout trace ids it hands out (clear between runs)."""
    resource = types.OtelResource(attributes={"service.name": "bench"}, schema_url="")
    ok = types.TraceStatus(status_code="OK")
    trace_ids: dict[str, str] = {}

    def make_span(rollout_id: str, attempt_id: str, sequence_id: int, index: int) -> Any:
        trace_id = trace_ids.setdefault(rollout_id, os.urandom(16).hex())
        span_id = os.urandom(8).hex()
        name, attributes = span_payload(rollout_id, index)
        now = time.time()
        return types.Span(
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            trace_id=trace_id,
            span_id=span_id,
            parent_id=None,
            name=name,
            status=ok,
            attributes=attributes,
            events=[],
            links=[],
            start_time=now,
            end_time=now,
            context=types.SpanContext(trace_id=trace_id, span_id=span_id, is_remote=False, trace_state={}),
            parent=None,
            resource=resource,
        )

    return make_span, trace_ids


async def run_workload(store: Any, make_span: SpanFactory, workload: Workload) -> PhaseTimes:
    """Run the workload once against ``store`` and return the phase timings."""
    n = workload.rollouts
    start = time.perf_counter()

    rollout_ids: list[str] = []
    for i in range(n):
        rollout = await store.enqueue_rollout(input={"task_id": i, "question": f"question {i}"}, mode="train")
        rollout_ids.append(rollout.rollout_id)
    t_enqueued = time.perf_counter()

    processed = [0] * workload.runners

    async def runner(index: int) -> None:
        worker_id = f"bench-runner-{index}"
        k = workload.spans_per_rollout
        while True:
            attempted = await store.dequeue_rollout(worker_id=worker_id)
            if attempted is None:
                return
            rollout_id = attempted.rollout_id
            attempt_id = attempted.attempt.attempt_id
            sequence_ids = await store.get_many_span_sequence_ids([(rollout_id, attempt_id)] * k)
            spans = [make_span(rollout_id, attempt_id, seq, j) for j, seq in enumerate(sequence_ids)]
            await store.add_many_spans(spans)
            await store.update_attempt(rollout_id, attempt_id, status="succeeded")
            processed[index] += 1

    await asyncio.gather(*(runner(i) for i in range(workload.runners)))
    t_ran = time.perf_counter()
    if sum(processed) != n:
        raise RuntimeError(f"runners processed {sum(processed)} rollouts, expected {n}")

    finished = await store.wait_for_rollouts(rollout_ids=rollout_ids, timeout=workload.wait_timeout)
    t_waited = time.perf_counter()
    if len(finished) != n:
        raise RuntimeError(f"wait_for_rollouts returned {len(finished)} rollouts, expected {n}")
    not_succeeded = [r.rollout_id for r in finished if r.status != "succeeded"]
    if not_succeeded:
        raise RuntimeError(f"{len(not_succeeded)} rollouts did not succeed, e.g. {not_succeeded[0]}")

    total_spans = 0
    for rollout_id in rollout_ids:
        spans = await store.query_spans(rollout_id, "latest")
        total_spans += len(spans)
    t_queried = time.perf_counter()
    expected_spans = n * workload.spans_per_rollout
    if total_spans != expected_spans:
        raise RuntimeError(f"query_spans returned {total_spans} spans, expected {expected_spans}")

    return PhaseTimes(
        rollouts=n,
        spans=total_spans,
        stores=1,
        enqueue_s=t_enqueued - start,
        run_s=t_ran - t_enqueued,
        wait_s=t_waited - t_ran,
        query_s=t_queried - t_waited,
        total_s=t_queried - start,
    )


def _add(a: PhaseTimes, b: PhaseTimes) -> PhaseTimes:
    return PhaseTimes(
        rollouts=a.rollouts + b.rollouts,
        spans=a.spans + b.spans,
        stores=a.stores + b.stores,
        enqueue_s=a.enqueue_s + b.enqueue_s,
        run_s=a.run_s + b.run_s,
        wait_s=a.wait_s + b.wait_s,
        query_s=a.query_s + b.query_s,
        total_s=a.total_s + b.total_s,
    )


async def repeat_workload(
    open_store: Callable[[int], Awaitable[Any]],
    close_store: Callable[[Any], Awaitable[None]],
    make_span: SpanFactory,
    workload: Workload,
    repeats: int,
    min_time: float = 2.0,
) -> list[PhaseTimes]:
    """Take ``repeats`` measurements of the workload.

    Every run of the workload gets a fresh store from ``open_store(run_index)``, so each run sees the
    same store size. One measurement runs the workload again and again until it has spent at least
    ``min_time`` seconds inside the workload, so that a fast system is timed over as long a window
    as a slow one; its figures are the sums over those runs. Opening and closing stores is not timed.
    """
    results: list[PhaseTimes] = []
    run_index = 0
    for _ in range(repeats):
        measured: PhaseTimes | None = None
        while measured is None or measured.total_s < min_time:
            store = await open_store(run_index)
            run_index += 1
            gc.collect()
            try:
                times = await run_workload(store, make_span, workload)
            finally:
                await close_store(store)
            measured = times if measured is None else _add(measured, times)
        results.append(measured)
    return results


def summarize(system: str, results: list[PhaseTimes]) -> dict[str, Any]:
    """Best and median rollouts/s over the repeats, plus the raw per-run timings."""
    rates = [r.rollouts_per_s for r in results]
    return {
        "system": system,
        "repeats": len(results),
        "best_rollouts_per_s": max(rates),
        "median_rollouts_per_s": statistics.median(rates),
        "runs": [r.as_dict() for r in results],
    }


def comparison_table(
    title: str, peer: dict[str, Any] | None, ours: list[dict[str, Any]], targets: dict[str, float]
) -> str:
    """Rollouts/s of the peer and each of our systems, with the ratio to the peer and the target."""
    width = max([len(r["system"]) for r in ([peer] if peer else []) + ours] + [6])
    header = f"{'system':<{width}} {'median r/s':>11} {'best r/s':>10} {'vs peer':>9} {'target':>8}  verdict"
    rows = [title, header, "-" * len(header)]
    peer_rate = peer["median_rollouts_per_s"] if peer else None
    if peer:
        rows.append(
            f"{peer['system']:<{width}} {peer['median_rollouts_per_s']:>11.1f} {peer['best_rollouts_per_s']:>10.1f} "
            f"{'1.00x':>9} {'':>8}"
        )
    for result in ours:
        ratio = result["median_rollouts_per_s"] / peer_rate if peer_rate else None
        target = targets.get(result["kind"])
        ratio_s = f"{ratio:.2f}x" if ratio is not None else "-"
        target_s = f">={target:g}x" if target is not None else ""
        verdict = ""
        if ratio is not None and target is not None:
            verdict = "ok" if ratio >= target else "BELOW TARGET"
        rows.append(
            f"{result['system']:<{width}} {result['median_rollouts_per_s']:>11.1f} "
            f"{result['best_rollouts_per_s']:>10.1f} {ratio_s:>9} {target_s:>8}  {verdict}"
        )
    return "\n".join(rows)


def write_results(
    json_arg: str, results_dir: Path, benchmark: str, workload: Workload, args: Any, **sections: Any
) -> None:
    """Write a run's figures as JSON (to ``json_arg``, or a timestamped file in ``results_dir``)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = Path(json_arg) if json_arg else results_dir / f"{benchmark}_bench-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": benchmark,
        "time": stamp,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "workload": {
            "rollouts": workload.rollouts,
            "runners": workload.runners,
            "spans_per_rollout": workload.spans_per_rollout,
            "repeats": args.repeats,
            "min_time_s": args.min_time,
        },
        **sections,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {path}")
