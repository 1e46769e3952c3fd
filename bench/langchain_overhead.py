"""Tracing overhead of the LangChain adapter: the same LangChain agent with the adapter on and off.

The agent is LangChain 1.x ``create_agent`` with one tool, against the local fake OpenAI server
(``agentlightning.testing.fake_openai``), so one run is two LLM calls and one tool call and the model
itself costs almost nothing: the measured time is LangChain + HTTP + (with the adapter) our callbacks,
span creation and the span writes to the store. Both modes run inside the OpenTelemetry tracer's trace
context on an in-memory store, exactly as under a runner; only the adapter differs.

Modes alternate in rounds (off/on, then on/off, ...) so drifting machine load hits both alike; the
figure is the median time per LLM call of each mode over the rounds, and the overhead is
``(on - off) / off``. Target: at most 3 % added time per LLM call (``--check`` exits 1 above it).

    nox -s bench_langchain                  # or, with agentlightning-langchain and its test deps installed:
    python bench/langchain_overhead.py --rounds 21 --runs-per-round 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

import agentlightning_langchain
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_core.tracers import context as langchain_context
from langchain_openai import ChatOpenAI

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.testing.fake_openai import FakeOpenAIServer, FakeReply
from agentlightning.tracer import OtelTracer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_OVERHEAD = 0.03
LLM_CALLS_PER_RUN = 2
MODES = ("off", "noop", "on")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2+2."""
    return "4"


class NoOpHandler(BaseCallbackHandler):
    """Does nothing: what LangChain's callback machinery alone costs, the floor of any callback adapter."""

    run_inline = True


# One shared handler as the default in every context, the way the adapter registers its own.
NOOP_HOOK: ContextVar[Any] = ContextVar("bench_noop_handler", default=NoOpHandler())  # noqa: B039


def set_mode(mode: str) -> None:
    """``off``: no handler; ``noop``: a do-nothing handler through the same hook; ``on``: the adapter."""
    hooks = langchain_context._configure_hooks
    hooks[:] = [hook for hook in hooks if hook[0] is not NOOP_HOOK]
    if mode == "on":
        agentlightning_langchain.instrument()
        return
    agentlightning_langchain.uninstrument()
    if mode == "noop":
        langchain_context.register_configure_hook(NOOP_HOOK, inheritable=True)


def build_agent(base_url: str) -> Any:
    model = ChatOpenAI(model="fake-model", base_url=base_url, api_key="unused", max_retries=0)  # type: ignore[arg-type]
    return create_agent(model, [calculator], name="bench_agent")


def one_run(agent: Any, server: FakeOpenAIServer, index: int) -> None:
    marker = f"run-{index}"
    server.enqueue_for(marker, FakeReply.tool_call("calculator", {"expression": "2+2"}), FakeReply.text("It is 4."))
    result = agent.invoke({"messages": [HumanMessage(f"{marker}: what is 2+2?")]})
    assert "4" in str(result["messages"][-1].content)


async def measure(args: argparse.Namespace) -> Dict[str, Any]:
    store = InMemoryLightningStore(watchdog=False)
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    counter = 0
    per_call: Dict[str, List[float]] = {"off": [], "noop": [], "on": []}
    # CPU time of the whole process (every thread: agent, fake server, span writer) per LLM call:
    # far less sensitive than wall time to other load on a shared machine.
    cpu_per_call: Dict[str, List[float]] = {"off": [], "noop": [], "on": []}
    rollout_ids: Dict[str, List[str]] = {"off": [], "noop": [], "on": []}
    with FakeOpenAIServer() as server:
        agent = build_agent(server.base_url)

        async def block(mode: str, runs: int, record: bool) -> None:
            nonlocal counter
            set_mode(mode)
            attempted = await store.start_rollout({"mode": mode})
            started, cpu_started = time.perf_counter(), time.process_time()
            async with tracer.trace_context(
                rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
            ):
                for _ in range(runs):
                    counter += 1
                    one_run(agent, server, counter)
            elapsed = time.perf_counter() - started  # includes writing the block's spans to the store
            cpu = time.process_time() - cpu_started
            if record:
                per_call[mode].append(elapsed / (runs * LLM_CALLS_PER_RUN))
                cpu_per_call[mode].append(cpu / (runs * LLM_CALLS_PER_RUN))
                rollout_ids[mode].append(attempted.rollout_id)

        for mode in MODES:  # warm up imports, connections and caches
            await block(mode, args.warmup_runs, record=False)
        for round_index in range(args.rounds):
            order = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                await block(mode, args.runs_per_round, record=True)
        set_mode("off")

    # The adapter really recorded every call when on, and nothing when off.
    async def llm_spans(rollout_id: str) -> int:
        spans = await store.query_spans(rollout_id)
        return sum(
            1
            for span in spans
            if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "langchain"
            and span.attributes.get(GenAIAttributes.OPERATION_NAME) == "chat"
        )

    recorded_on = [await llm_spans(rollout_id) for rollout_id in rollout_ids["on"]]
    recorded_off = [await llm_spans(rollout_id) for rollout_id in rollout_ids["off"]]
    expected = args.runs_per_round * LLM_CALLS_PER_RUN
    assert all(count == expected for count in recorded_on), (recorded_on, expected)
    assert not any(recorded_off), recorded_off
    tracer.teardown_worker(0)
    await store.close()

    off, on = statistics.median(per_call["off"]), statistics.median(per_call["on"])
    # Paired per round as well: each round's on/off ratio, then the median of the ratios.
    paired = statistics.median(b / a for a, b in zip(per_call["off"], per_call["on"], strict=True)) - 1.0
    cpu_off, cpu_on = statistics.median(cpu_per_call["off"]), statistics.median(cpu_per_call["on"])
    noop, cpu_noop = statistics.median(per_call["noop"]), statistics.median(cpu_per_call["noop"])
    return {
        "per_llm_call_ms": {"off": off * 1e3, "noop": noop * 1e3, "on": on * 1e3},
        "noop_handler_overhead": noop / off - 1.0,
        "added_per_llm_call_ms": (on - off) * 1e3,
        "overhead": on / off - 1.0,
        "overhead_paired": paired,
        "cpu_per_llm_call_ms": {"off": cpu_off * 1e3, "noop": cpu_noop * 1e3, "on": cpu_on * 1e3},
        "cpu_overhead": cpu_on / cpu_off - 1.0,
        "samples_ms": {mode: [value * 1e3 for value in values] for mode, values in per_call.items()},
        "cpu_samples_ms": {mode: [value * 1e3 for value in values] for mode, values in cpu_per_call.items()},
        "spans_checked": {"llm_spans_per_block_on": expected, "blocks": len(recorded_on)},
    }


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="off/on rounds (default 21)")
    parser.add_argument("--runs-per-round", type=int, default=20, help="agent runs per mode and round (default 20)")
    parser.add_argument("--warmup-runs", type=int, default=10)
    parser.add_argument(
        "--no-node-spans", action="store_true", help="the adapter without a span per LangGraph node (cheaper)"
    )
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH", help="also write JSON results")
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {TARGET_OVERHEAD:.0%} overhead")
    args = parser.parse_args(argv)

    agentlightning_langchain.configure(node_spans=not args.no_node_spans)
    result = asyncio.run(measure(args))
    per_call = result["per_llm_call_ms"]
    print(f"LangChain create_agent, {LLM_CALLS_PER_RUN} LLM calls + 1 tool call per run, fake OpenAI server")
    print(f"rounds: {args.rounds} x {args.runs_per_round} runs per mode (alternating order), medians:")
    print(f"  adapter off : {per_call['off']:.3f} ms per LLM call")
    print(
        f"  no-op handler: {per_call['noop']:.3f} ms per LLM call "
        f"({result['noop_handler_overhead']:+.1%}: LangChain's callback machinery alone)"
    )
    print(f"  adapter on  : {per_call['on']:.3f} ms per LLM call")
    print(
        f"  added       : {result['added_per_llm_call_ms']:.3f} ms per LLM call = {result['overhead']:+.1%} "
        f"(paired per round: {result['overhead_paired']:+.1%}; target <= {TARGET_OVERHEAD:.0%})"
    )
    cpu = result["cpu_per_llm_call_ms"]
    print(
        f"  CPU time    : off {cpu['off']:.3f}, no-op {cpu['noop']:.3f}, on {cpu['on']:.3f} ms per LLM call; "
        f"on = {result['cpu_overhead']:+.1%} "
        "(all threads of the process)"
    )
    if args.json is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS_DIR / f"langchain_overhead-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "langchain_overhead",
            "time": stamp,
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
            "workload": {"rounds": args.rounds, "runs_per_round": args.runs_per_round, "warmup_runs": args.warmup_runs},
            "target_overhead": TARGET_OVERHEAD,
            **result,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {path}")
    if args.check and result["overhead"] > TARGET_OVERHEAD:
        print(f"FAILED: {result['overhead']:.1%} > {TARGET_OVERHEAD:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
