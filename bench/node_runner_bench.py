"""Runner benchmark: the cost per rollout of a Node.js runner (REST + OTLP/HTTP) against the Python runner.

Both runners run the same agent (two chat calls through the LLM proxy, one calculator tool call
traced as a span, a returned reward) against the same servers, each in a process of its own:

* ``agl store serve --store memory://`` (the store server), ``agl proxy --token-ids`` in front of a
  fake OpenAI backend (``agentlightning_testing.fake_openai``, no model latency) and the runner;
* **Node.js**: ``node examples/node_agent/runner.js`` (the example: dequeue, resources, heartbeat,
  OTLP/HTTP export of its spans, the reward as a span, forceFlush, the attempt's status by REST);
* **Python**: ``LitAgentRunner`` with the ``OtelTracer`` on ``HttpLightningStore`` (this script with
  ``--python-runner URL``), running ``python_agent`` below, the same agent written with ``openai``.

This process is the algorithm: it enqueues a batch of rollouts at once and waits for all of them;
the figure is the batch's wall time divided by its size, with one runner at concurrency 1, so it is
the time one rollout takes end to end. The model answers at once, so the figure is almost all
overhead: the runner's calls to the store, the proxy's hop and recording, span export, and the
agent's own work. The systems alternate in rounds (each round starts a fresh runner process and
warms it up) and the median round counts. Every measured rollout must have succeeded with a reward
and the same LLM spans.

    python bench/node_runner_bench.py            # needs node and `npm ci` in examples/node_agent
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "node_agent"
AGL = Path(sys.executable).with_name("agl")
READY = "runner ready"

SYSTEM_PROMPT = "You solve arithmetic word problems. Use the calculator tool, then reply with 'Answer: <number>'."
CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


# -- the Python runner (this script with --python-runner URL) ------------------------------------------
def _python_agent() -> Any:
    """The example's agent in Python: the same calls, the same tool span, the same reward."""
    from openai import AsyncOpenAI
    from opentelemetry import trace

    import agentlightning as agl

    tracer = trace.get_tracer("python-calculator-agent")

    def calculate(expression: str) -> str:
        if not re.fullmatch(r"[\d\s+\-*/().]+", expression):
            raise ValueError(f"unexpected characters in {expression!r}")
        return str(eval(expression, {"__builtins__": {}}))  # checked above: digits and operators only

    @agl.rollout
    async def python_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
        client = AsyncOpenAI(base_url=llm.endpoint, api_key="unused", max_retries=0)
        messages: List[Any] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": task["question"]},
        ]
        final = ""
        for _ in range(4):
            completion = await client.chat.completions.create(
                model=llm.model, messages=messages, tools=[CALCULATOR_TOOL]
            )  # type: ignore[call-overload]
            message = completion.choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            final = message.content or ""
            if not message.tool_calls:
                break
            for call in message.tool_calls:
                with tracer.start_as_current_span("tool.calculator") as span:
                    span.set_attribute("gen_ai.tool.name", call.function.name)
                    span.set_attribute("gen_ai.tool.call.arguments", call.function.arguments)
                    try:
                        result = calculate(json.loads(call.function.arguments).get("expression", ""))
                    except Exception as exc:  # the tool's error goes back to the model, as in agent.js
                        span.record_exception(exc)
                        span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                        result = f"error: {exc}"
                    span.set_attribute("gen_ai.tool.call.result", result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        numbers = re.findall(r"-?\d+(?:\.\d+)?", final)
        return 1.0 if numbers and float(numbers[-1]) == float(task["answer"]) else 0.0

    return python_agent


def serve_python_runner(store_url: str, worker_id: str) -> None:
    from agentlightning.runner import LitAgentRunner
    from agentlightning.store.client import HttpLightningStore
    from agentlightning.tracer import OtelTracer

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        store = HttpLightningStore(store_url)
        # The same polling and heartbeat intervals as runner.js's defaults.
        runner = LitAgentRunner(OtelTracer(), poll_interval=0.2, heartbeat_interval=5.0, worker_id=worker_id)
        runner.init(_python_agent())
        runner.init_worker(0, store)
        print(READY, flush=True)
        try:
            await runner.iter(event=stop)  # type: ignore[arg-type]
        finally:
            runner.teardown_worker(0)
            runner.teardown()
            await store.close()

    asyncio.run(main())


# -- processes ----------------------------------------------------------------------------------------
class Child:
    def __init__(self, args: List[str], cwd: Path = ROOT) -> None:
        self.lines: List[str] = []
        self.popen = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> "re.Match[str]":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.popen.poll() is None:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.02)
        raise RuntimeError(f"no line matching {pattern!r} from {self.popen.args}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


FAKE_BACKEND = """
import sys, time
from agentlightning_testing.fake_openai import FakeOpenAIServer
server = FakeOpenAIServer().start()
print("listening:", server.url, flush=True)
for line in sys.stdin: pass
"""


def _runner_process(system: str, store_url: str, worker_id: str) -> Child:
    if system == "node":
        return Child(["node", "runner.js", "--store", store_url, "--worker-id", worker_id], cwd=EXAMPLE)
    return Child([sys.executable, __file__, "--python-runner", store_url, "--worker-id", worker_id])


# -- the measurement ----------------------------------------------------------------------------------
def _tasks(n: int, offset: int) -> List[Dict[str, Any]]:
    return [{"question": f"What is {100 + i} * 7?", "answer": (100 + i) * 7} for i in range(offset, offset + n)]


async def _batch(store: Any, tasks: List[Dict[str, Any]]) -> float:
    """Seconds from enqueueing ``tasks`` at once to the last one finished; checks every rollout."""
    from agentlightning.emitter import find_final_reward
    from agentlightning.semconv import LLMCallAttributes
    from agentlightning.types import EnqueueRolloutRequest

    started = time.perf_counter()
    rollouts = await store.enqueue_many_rollouts([EnqueueRolloutRequest(input=task) for task in tasks])
    ids = [r.rollout_id for r in rollouts]
    finished: List[Any] = []
    while len(finished) < len(ids):
        finished = await store.wait_for_rollouts(rollout_ids=ids, timeout=60)
    elapsed = time.perf_counter() - started
    for rollout in finished:
        if rollout.status != "succeeded":
            raise RuntimeError(f"rollout {rollout.rollout_id} {rollout.status}")
        spans = await store.query_spans(rollout.rollout_id, "latest")
        llm_calls = [s for s in spans if LLMCallAttributes.PROMPT_TOKEN_IDS in s.attributes]
        tools = [s for s in spans if s.name == "tool.calculator"]
        if len(llm_calls) != 2 or len(tools) != 1 or find_final_reward(spans) is None:
            raise RuntimeError(f"rollout {rollout.rollout_id}: spans {[s.name for s in spans]}")
    return elapsed


async def _measure(args: argparse.Namespace, store_url: str, proxy_url: str) -> Dict[str, List[float]]:
    from agentlightning.store.client import HttpLightningStore
    from agentlightning.types import ProxyLLM

    store = HttpLightningStore(store_url)
    await store.add_resources({"main_llm": ProxyLLM(endpoint=f"{proxy_url}/v1", model="fake-model")})
    per_rollout: Dict[str, List[float]] = {"python": [], "node": []}
    offset = 0
    try:
        for round_index in range(args.rounds):
            for system in ("python", "node"):
                runner = _runner_process(system, store_url, f"bench-{system}-{round_index}")
                try:
                    runner.wait_for(READY)
                    await _batch(store, _tasks(args.warmup, offset))  # imports, connections, JIT
                    offset += args.warmup
                    seconds = await _batch(store, _tasks(args.rollouts, offset))
                    offset += args.rollouts
                finally:
                    runner.stop()
                per_rollout[system].append(seconds / args.rollouts * 1000)
                print(f"round {round_index + 1} {system:<6} {per_rollout[system][-1]:7.1f} ms/rollout", flush=True)
    finally:
        await store.close()
    return per_rollout


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=40, help="Measured rollouts per round and system.")
    parser.add_argument("--warmup", type=int, default=5, help="Rollouts run before each measurement.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds; systems alternate within each.")
    parser.add_argument("--json", nargs="?", const="", default=None, help="Also write the figures as JSON.")
    parser.add_argument("--python-runner", metavar="STORE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", default="bench-python", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.python_runner:
        serve_python_runner(args.python_runner, args.worker_id)
        return 0
    if shutil.which("node") is None or not (EXAMPLE / "node_modules").is_dir():
        sys.exit("needs node and `npm ci` in examples/node_agent (or run: nox -s node_agent)")

    children: List[Child] = []
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_BACKEND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().split()[-1]
        server = Child([str(AGL), "store", "serve", "--store", "memory://", "--port", "0"])
        children.append(server)
        store_url = server.wait_for(r"listening:\s+(http://\S+)").group(1)
        proxy = Child(
            [str(AGL), "proxy", "--backend", f"{fake_url}/v1", "--store", store_url, "--port", "0", "--token-ids"]
        )
        children.append(proxy)
        proxy_url = proxy.wait_for(r"listening:\s+(http://\S+)").group(1)
        per_rollout = asyncio.run(_measure(args, store_url, proxy_url))
    finally:
        for child in reversed(children):
            child.stop()
        fake.kill()
        fake.wait()

    python_ms = statistics.median(per_rollout["python"])
    node_ms = statistics.median(per_rollout["node"])
    python_best, node_best = min(per_rollout["python"]), min(per_rollout["node"])
    print()
    print(f"one runner, concurrency 1, {args.rollouts} rollouts x {args.rounds} rounds; ms per rollout, median (best)")
    print(f"  Python runner (LitAgentRunner, HttpLightningStore): {python_ms:7.1f} ({python_best:.1f})")
    print(f"  Node.js runner (REST + OTLP/HTTP, runner.js):      {node_ms:7.1f} ({node_best:.1f})")
    print(f"  Node.js / Python: {node_ms / python_ms:.2f}x ({node_best / python_best:.2f}x)")
    if args.json is not None:
        path = (
            Path(args.json) if args.json else ROOT / "bench" / "results" / f"node_runner_bench-{int(time.time())}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "per_rollout_ms": per_rollout,
            "median_ms": {"python": python_ms, "node": node_ms},
            "best_ms": {"python": python_best, "node": node_best},
            "ratio_node_over_python": node_ms / python_ms,
            "rollouts": args.rollouts,
            "rounds": args.rounds,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        }
        path.write_text(json.dumps(document, indent=2))
        print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
