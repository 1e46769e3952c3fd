"""Tracing overhead of the LangChain adapter: the same LangChain agent with the adapter on and off.

The agent is LangChain 1.x ``create_agent`` with one tool, against the fake OpenAI server
(``agentlightning_testing.fake_openai``) running in a process of its own, so one run is two LLM calls
and one tool call, and the model costs nothing unless ``--model-latency-ms`` says so: the measured
time is LangChain + HTTP + (with the adapter) our callbacks, span creation and the span writes to the
store. Every mode runs inside the OpenTelemetry tracer's trace context on an in-memory store, exactly
as under a runner; only the LangChain callback handler differs:

* ``off``: no handler;
* ``noop``: a handler that does nothing, registered the same way (what LangChain's callback machinery
  alone costs: the floor of any callback-based adapter);
* ``on``: the adapter, as configured by default;
* ``nodes``: the adapter with a span per LangGraph node as well (``configure(node_spans=True)``).

Modes alternate in rounds (off/noop/on/nodes, then nodes/on/noop/off, ...) so drifting machine load hits them
alike; figures are medians over the rounds, per LLM call: wall time, and this process's CPU time
(steadier on a shared machine). The overhead is ``(on - off) / off``. Target: at most 3 % added time
per LLM call (``--check`` exits 1 above it).

    nox -s bench_langchain                  # or, with agentlightning-langchain and its test deps installed:
    python bench/langchain_overhead.py --rounds 41 --runs-per-round 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List

from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_core.tracers import context as langchain_context
from langchain_openai import ChatOpenAI

import agentlightning_langchain
from agentlightning.semconv import FrameworkAttributes, GenAIAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_OVERHEAD = 0.03
LLM_CALLS_PER_RUN = 2
MODES = ("off", "noop", "on", "nodes")
ADAPTER_MODES = ("on", "nodes")


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
    """Turn on the handler of ``mode`` (see the module docstring) and only that one."""
    hooks = langchain_context._configure_hooks
    hooks[:] = [hook for hook in hooks if hook[0] is not NOOP_HOOK]
    if mode in ADAPTER_MODES:
        agentlightning_langchain.configure(node_spans=mode == "nodes")
        agentlightning_langchain.instrument()
        return
    agentlightning_langchain.uninstrument()
    if mode == "noop":
        langchain_context.register_configure_hook(NOOP_HOOK, inheritable=True)


def build_agent(base_url: str) -> Any:
    model = ChatOpenAI(model="fake-model", base_url=base_url, api_key="unused", max_retries=0)
    return create_agent(model, [calculator], name="bench_agent")


# The fake server runs in a process of its own, so its work neither shares this process's GIL nor
# counts in its CPU time. Its default policy answers a first call with a call of the tool and the
# second with "The result is <tool result>." It exits when this process closes its stdin.
_SERVER_SCRIPT = """
import sys
from agentlightning_testing.fake_openai import FakeOpenAIServer
with FakeOpenAIServer(default_delay=float(sys.argv[1])) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


@contextmanager
def fake_server_process(latency_seconds: float) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER_SCRIPT, str(latency_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http://"):
            raise RuntimeError(f"the fake server did not start: {base_url!r}")
        yield base_url
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def one_run(agent: Any, index: int) -> None:
    result = agent.invoke({"messages": [HumanMessage(f"run {index}: what is 2+2?")]})
    assert "4" in str(result["messages"][-1].content)


async def measure(args: argparse.Namespace) -> Dict[str, Any]:
    store = InMemoryLightningStore(watchdog=False)
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    counter = 0
    per_call: Dict[str, List[float]] = {mode: [] for mode in MODES}
    # CPU time of this process (the agent and the tracer's span writer, not the fake server) per LLM
    # call: far less sensitive than wall time to other load on a shared machine.
    cpu_per_call: Dict[str, List[float]] = {mode: [] for mode in MODES}
    rollout_ids: Dict[str, List[str]] = {mode: [] for mode in MODES}
    with fake_server_process(args.model_latency_ms / 1e3) as base_url:
        agent = build_agent(base_url)

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
                    one_run(agent, counter)
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
        agentlightning_langchain.configure()

    # The adapter really recorded every call when on, and nothing when off.
    async def llm_spans(rollout_id: str) -> int:
        spans = await store.query_spans(rollout_id)
        return sum(
            1
            for span in spans
            if span.attributes.get(FrameworkAttributes.FRAMEWORK) == "langchain"
            and span.attributes.get(GenAIAttributes.OPERATION_NAME) == "chat"
        )

    expected = args.runs_per_round * LLM_CALLS_PER_RUN
    for mode in MODES:
        recorded = [await llm_spans(rollout_id) for rollout_id in rollout_ids[mode]]
        wanted = expected if mode in ADAPTER_MODES else 0
        assert all(count == wanted for count in recorded), (mode, recorded, wanted)
    tracer.teardown_worker(0)
    await store.close()

    def summary(samples: Dict[str, List[float]]) -> Dict[str, Dict[str, float]]:
        base = samples["off"]
        return {
            mode: {
                "ms_per_llm_call": statistics.median(values) * 1e3,
                "overhead": statistics.median(values) / statistics.median(base) - 1.0,
                # Paired per round: each round's ratio to off, then the median of the ratios.
                "overhead_paired": statistics.median(b / a for a, b in zip(base, values, strict=True)) - 1.0,
            }
            for mode, values in samples.items()
        }

    return {
        "wall": summary(per_call),
        "cpu": summary(cpu_per_call),
        "samples_ms": {mode: [value * 1e3 for value in values] for mode, values in per_call.items()},
        "cpu_samples_ms": {mode: [value * 1e3 for value in values] for mode, values in cpu_per_call.items()},
        "llm_spans_checked_per_block": expected,
    }


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41, help="rounds of the modes (default 41)")
    parser.add_argument("--runs-per-round", type=int, default=10, help="agent runs per mode and round (default 10)")
    parser.add_argument("--warmup-runs", type=int, default=10)
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        default=0.0,
        help="time the fake model takes per call (default 0: the worst case for the overhead ratio)",
    )
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH", help="also write JSON results")
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {TARGET_OVERHEAD:.0%} overhead")
    args = parser.parse_args(argv)

    result = asyncio.run(measure(args))
    print(
        f"LangChain create_agent, {LLM_CALLS_PER_RUN} LLM calls + 1 tool call per run, fake OpenAI server "
        f"answering in {args.model_latency_ms:g} ms; {args.rounds} rounds x {args.runs_per_round} runs per mode"
    )
    labels = {
        "off": "no handler",
        "noop": "no-op handler (LangChain's callback machinery alone)",
        "on": "adapter",
        "nodes": "adapter, node_spans=True",
    }
    print(f"{'mode':<54} {'wall ms/call':>12} {'added':>8} {'paired':>8} {'CPU ms/call':>12} {'added':>8}")
    for mode in MODES:
        wall, cpu = result["wall"][mode], result["cpu"][mode]
        print(
            f"{labels[mode]:<54} {wall['ms_per_llm_call']:>12.3f} {wall['overhead']:>+8.1%} "
            f"{wall['overhead_paired']:>+8.1%} {cpu['ms_per_llm_call']:>12.3f} {cpu['overhead']:>+8.1%}"
        )
    overhead = result["wall"]["on"]["overhead_paired"]
    print(f"adapter overhead per LLM call: {overhead:+.1%} (paired wall time; target <= {TARGET_OVERHEAD:.0%})")
    if args.json is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS_DIR / f"langchain_overhead-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "langchain_overhead",
            "time": stamp,
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
            "workload": {
                "rounds": args.rounds,
                "runs_per_round": args.runs_per_round,
                "warmup_runs": args.warmup_runs,
                "model_latency_ms": args.model_latency_ms,
            },
            "target_overhead": TARGET_OVERHEAD,
            **result,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {path}")
    if args.check and overhead > TARGET_OVERHEAD:
        print(f"FAILED: {overhead:.1%} > {TARGET_OVERHEAD:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
