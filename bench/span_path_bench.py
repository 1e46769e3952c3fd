"""CPU per span on the tracer's path, from span start to the span stored: the SDK path and the scoped path.

Each block is one rollout's trace context on an in-memory store with 40 LLM-call-like spans (ten
attributes, the request and response as JSON of a short conversation) under one agent span, as an
adapter records them, written to the store when the context exits. ``sdk``: spans of the global
OpenTelemetry provider (``opentelemetry.trace.get_tracer``), through the SDK's span machinery and
Agent Lightning's span processor; ``scoped``: spans of ``agentlightning.tracer.span_tracer``, which
adapters use. The two alternate block by block; figures are medians over the blocks.

    python bench/span_path_bench.py --blocks 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Dict, List, Optional

from opentelemetry import trace as trace_api

from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer, span_tracer

SPANS_PER_BLOCK = 40
REQUEST = json.dumps(
    {
        "model": "fake-model",
        "messages": [
            {"role": "user", "content": "run 1: what is 2+2? Use the calculator."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        ],
    }
)
RESPONSE = json.dumps(
    {
        "id": "chatcmpl-1",
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The result is 4."}}],
    }
)


async def block(store: InMemoryLightningStore, tracer: OtelTracer, otel: trace_api.Tracer) -> float:
    """CPU seconds per span of one rollout's worth of spans, the store write at exit included."""
    attempted = await store.start_rollout({"bench": "span_path"})
    started = time.process_time()
    async with tracer.trace_context(rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id):
        agent = otel.start_span("invoke_agent bench", attributes={"gen_ai.operation.name": "invoke_agent"})
        parent = trace_api.set_span_in_context(agent)
        for index in range(SPANS_PER_BLOCK):
            span = otel.start_span(
                "chat fake-model",
                context=parent,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "fake-model",
                    "agentlightning.llm.request": REQUEST,
                    "agentlightning.framework": "bench",
                    "agentlightning.framework.run_id": f"run-{index}",
                    "gen_ai.agent.name": "bench",
                },
            )
            span.set_attributes(
                {
                    "gen_ai.response.id": f"chatcmpl-{index}",
                    "gen_ai.response.finish_reasons": ["stop"],
                    "gen_ai.usage.input_tokens": 30,
                    "gen_ai.usage.output_tokens": 5,
                    "agentlightning.llm.response": RESPONSE,
                }
            )
            span.end()
        agent.end()
    used = time.process_time() - started
    stored = await store.query_spans(attempted.rollout_id)
    assert len(stored) == SPANS_PER_BLOCK + 1, len(stored)
    return used / (SPANS_PER_BLOCK + 1)


async def measure(blocks: int) -> Dict[str, List[float]]:
    store = InMemoryLightningStore(watchdog=False)
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    tracers = {"sdk": trace_api.get_tracer("bench.sdk"), "scoped": span_tracer("bench.scoped")}
    samples: Dict[str, List[float]] = {name: [] for name in tracers}
    for otel in tracers.values():  # warm up
        await block(store, tracer, otel)
    for index in range(blocks):
        for name in tracers if index % 2 == 0 else reversed(list(tracers)):
            samples[name].append(await block(store, tracer, tracers[name]))
    tracer.teardown_worker(0)
    await store.close()
    return samples


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--blocks", type=int, default=200, help="blocks of 41 spans per path (default 200)")
    args = parser.parse_args(argv)
    samples = asyncio.run(measure(args.blocks))
    sdk, scoped = statistics.median(samples["sdk"]), statistics.median(samples["scoped"])
    print(f"span path, CPU per span from start to stored ({args.blocks} blocks of {SPANS_PER_BLOCK + 1} spans):")
    print(f"  SDK spans (opentelemetry.trace.get_tracer):       {sdk * 1e6:7.1f} us")
    print(f"  scoped spans (agentlightning.tracer.span_tracer): {scoped * 1e6:7.1f} us  ({sdk / scoped:.2f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
