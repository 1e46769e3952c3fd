"""Tracing overhead of the framework adapters: the same agent with its adapter on and off.

For each adapter (``--adapters``, default all whose framework is installed) the agent is the
framework's own tool-calling agent with one tool, against the fake OpenAI server
(``agentlightning_testing.fake_openai``) running in a process of its own, so one run is two LLM calls
and one tool call, and the model costs nothing unless ``--model-latency-ms`` says so: the measured time
is the framework + HTTP + (with the adapter) its callbacks, span creation and the span writes to the
store. Every mode runs inside the OpenTelemetry tracer's trace context on an in-memory store, exactly
as under a runner; only the adapter differs:

* ``langchain``: LangChain 1.x ``create_agent``, called synchronously. Modes: ``off`` (no handler),
  ``noop`` (a handler that does nothing, registered the same way: LangChain's callback machinery alone,
  the floor of any callback-based adapter), ``on`` (the adapter), ``on_sdk`` (the adapter creating its
  spans through the OpenTelemetry SDK instead of ``span_tracer``: the span path before scoped spans),
  ``nodes`` (the adapter with a span per LangGraph node, ``configure(node_spans=True)``).
* ``openai_agents``: an OpenAI Agents SDK agent on the SDK's default kind of model (the Responses
  API), with ``Runner.run``. Modes: ``off`` (no trace processor: the SDK's own span bookkeeping
  alone), ``on`` (the adapter), ``on_sdk`` (its spans through the OpenTelemetry SDK).
* ``autogen``: an AutoGen ``AssistantAgent`` (``reflect_on_tool_use``) on ``OpenAIChatCompletionClient``,
  with ``run``. Modes: ``off`` (adapter off; AutoGen's own OpenTelemetry spans are recorded in every
  mode), ``on``, ``on_sdk``.
* ``agent_framework``: a Microsoft Agent Framework ``Agent`` on ``OpenAIChatClient`` (the Responses
  API, its default OpenAI client), with ``run``. Modes: ``off`` (adapter off; the framework's own
  OpenTelemetry spans, on by default, are recorded in every mode), ``noop`` (the adapter's middleware
  in the pipelines, passing every call straight on: the framework's middleware machinery alone, the floor
  of any middleware-based adapter), ``on``, ``on_sdk``.
* ``agentscope``: an AgentScope 2.x ``Agent`` (a fresh one per run) on ``OpenAIChatModel``, non-streamed,
  ``await agent.reply(...)``. Modes: ``off`` (no middleware), ``noop`` (a middleware with the adapter's hooks
  that passes everything through, placed like the adapter's: AgentScope's middleware chains alone, the floor
  of any middleware-based adapter), ``on``, ``on_sdk``.
* ``crewai``: a one-agent CrewAI crew (built per run), ``kickoff()``. Modes: ``off`` (no listener on the
  event bus), ``on`` (the adapter: its listener, and the bus flush at the end of each kickoff), ``on_sdk``.
  CrewAI needs openai 2, the others openai 3: ``nox -s bench_adapters`` runs it in a venv of its own
  (``bench_adapters_crewai``).

Modes alternate in rounds (off/.../on, then on/.../off, ...) so drifting machine load hits them alike;
figures are medians over the rounds, per LLM call: wall time, and this process's CPU time (steadier on
a shared machine). The overhead is ``on / off - 1``, paired per round (the median of the rounds'
ratios). Target: at most 3 % added time per LLM call (``--check`` exits 1 above it).

    nox -s bench_adapters                   # or, with the adapters and their frameworks installed:
    python bench/adapter_overhead.py --model-latency-ms 0 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from opentelemetry import trace as trace_api

from agentlightning.semconv import FrameworkAttributes, GenAIAttributes
from agentlightning.store.memory import InMemoryLightningStore
from agentlightning.tracer import OtelTracer, span_tracer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_OVERHEAD = 0.03
LLM_CALLS_PER_RUN = 2
QUESTION = "run {index}: what is 2+2? Use the calculator."


@dataclass
class AdapterBench:
    """One adapter's workload: its modes (``off`` first, ``on`` among them) and an agent run."""

    name: str
    description: str
    modes: Dict[str, str]  # mode -> label
    recording_modes: Sequence[str]  # modes in which every LLM call must be recorded
    set_mode: Callable[[str], None]
    # base_url -> (one agent run, what closes the agent's clients when the run ends)
    make_run: Callable[[str], Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]]


def use_sdk_spans(recorder: Any, sdk: bool, name: str) -> None:
    """Point an adapter's span tracer at the OpenTelemetry SDK (``sdk``) or back at ``span_tracer``."""
    recorder._tracer = trace_api.get_tracer(name) if sdk else span_tracer(name)


def langchain_bench() -> AdapterBench:
    from langchain.agents import create_agent
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langchain_core.tracers import context as langchain_context
    from langchain_openai import ChatOpenAI

    import agentlightning_langchain

    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 2+2."""
        return "4"

    class NoOpHandler(BaseCallbackHandler):
        run_inline = True

    # One shared handler as the default in every context, the way the adapter registers its own.
    noop_hook: ContextVar[Any] = ContextVar("bench_noop_handler", default=NoOpHandler())  # noqa: B039

    def set_mode(mode: str) -> None:
        hooks = langchain_context._configure_hooks
        hooks[:] = [hook for hook in hooks if hook[0] is not noop_hook]
        if mode in ("on", "on_sdk", "nodes"):
            agentlightning_langchain.configure(node_spans=mode == "nodes")
            agentlightning_langchain.instrument()
            use_sdk_spans(agentlightning_langchain.handler(), mode == "on_sdk", "agentlightning.langchain")
            return
        agentlightning_langchain.uninstrument()
        agentlightning_langchain.configure()
        if mode == "noop":
            langchain_context.register_configure_hook(noop_hook, inheritable=True)

    def make_run(base_url: str) -> Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
        model = ChatOpenAI(model="fake-model", base_url=base_url, api_key="unused", max_retries=0)
        agent = create_agent(model, [calculator], name="bench_agent")

        async def run(index: int) -> None:
            result = agent.invoke({"messages": [HumanMessage(QUESTION.format(index=index))]})
            assert "4" in str(result["messages"][-1].content)

        async def close() -> None:
            pass

        return run, close

    return AdapterBench(
        name="langchain",
        description="LangChain 1.x create_agent, invoke()",
        modes={
            "off": "no handler",
            "noop": "no-op handler (LangChain's callback machinery alone)",
            "on": "adapter",
            "on_sdk": "adapter, spans through the OpenTelemetry SDK",
            "nodes": "adapter, node_spans=True",
        },
        recording_modes=("on", "on_sdk", "nodes"),
        set_mode=set_mode,
        make_run=make_run,
    )


def openai_agents_bench() -> AdapterBench:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool
    from agents.tracing import set_trace_processors
    from openai import AsyncOpenAI

    import agentlightning_openai_agents

    @function_tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 2+2."""
        return "4"

    def set_mode(mode: str) -> None:
        if mode in ("on", "on_sdk"):
            agentlightning_openai_agents.instrument()
            use_sdk_spans(
                agentlightning_openai_agents.tracing_processor(), mode == "on_sdk", "agentlightning.openai_agents"
            )
        else:
            agentlightning_openai_agents.uninstrument()
            set_trace_processors([])  # not even the SDK's exporter: its own bookkeeping is the floor

    def make_run(base_url: str) -> Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
        client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        model = OpenAIResponsesModel(model="fake-model", openai_client=client)
        agent = Agent(name="bench_agent", instructions="Use the calculator.", tools=[calculator], model=model)

        async def run(index: int) -> None:
            result = await Runner.run(agent, QUESTION.format(index=index))
            assert "4" in str(result.final_output)

        return run, client.close

    return AdapterBench(
        name="openai_agents",
        description="OpenAI Agents SDK agent on a Responses model, Runner.run()",
        modes={"off": "no trace processor", "on": "adapter", "on_sdk": "adapter, spans through the OpenTelemetry SDK"},
        recording_modes=("on", "on_sdk"),
        set_mode=set_mode,
        make_run=make_run,
    )


def autogen_bench() -> AdapterBench:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.tools import FunctionTool
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    import agentlightning_autogen

    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 2+2."""
        return "4"

    def set_mode(mode: str) -> None:
        if mode in ("on", "on_sdk"):
            agentlightning_autogen.instrument()
            use_sdk_spans(agentlightning_autogen.INSTRUMENTOR.recorder(), mode == "on_sdk", "agentlightning.autogen")
        else:
            agentlightning_autogen.uninstrument()

    def make_run(base_url: str) -> Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
        client = OpenAIChatCompletionClient(
            model="fake-model",
            base_url=base_url,
            api_key="unused",
            max_retries=0,
            model_info={
                "vision": False,
                "function_calling": True,
                "json_output": False,
                "family": "unknown",
                "structured_output": False,
            },
        )
        tool = FunctionTool(calculator, description="Evaluate an arithmetic expression such as 2+2.")

        async def run(index: int) -> None:
            # A fresh agent per run, as a rollout builds it (an agent keeps its conversation).
            agent = AssistantAgent("bench_agent", model_client=client, tools=[tool], reflect_on_tool_use=True)
            result = await agent.run(task=QUESTION.format(index=index))
            assert "4" in result.messages[-1].to_text()

        return run, client.close

    return AdapterBench(
        name="autogen",
        description="AutoGen AssistantAgent on OpenAIChatCompletionClient, run()",
        modes={"off": "adapter off", "on": "adapter", "on_sdk": "adapter, spans through the OpenTelemetry SDK"},
        recording_modes=("on", "on_sdk"),
        set_mode=set_mode,
        make_run=make_run,
    )


def agent_framework_bench() -> AdapterBench:
    from agent_framework import Agent
    from agent_framework_openai import OpenAIChatClient

    import agentlightning_agent_framework

    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 2+2."""
        return "4"

    def set_mode(mode: str) -> None:
        if mode in ("on", "on_sdk", "noop"):
            agentlightning_agent_framework.instrument()
            recorder = agentlightning_agent_framework.INSTRUMENTOR.recorder()
            use_sdk_spans(recorder, mode == "on_sdk", "agentlightning.agent_framework")
            # noop: the adapter's middleware in every pipeline, passing each call straight on
            recorder.active = mode != "noop"
        else:
            agentlightning_agent_framework.uninstrument()

    def make_run(base_url: str) -> Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
        # Agent Framework's default OpenAI client: the Responses API.
        client = OpenAIChatClient(model="fake-model", base_url=base_url, api_key="unused")
        agent = Agent(client=client, name="bench_agent", instructions="Use the calculator.", tools=[calculator])

        async def run(index: int) -> None:
            response = await agent.run(QUESTION.format(index=index))
            assert "4" in response.text

        async def close() -> None:
            pass

        return run, close

    return AdapterBench(
        name="agent_framework",
        description="Agent Framework Agent on OpenAIChatClient (Responses API), run(); its own spans on",
        modes={
            "off": "adapter off",
            "noop": "pass-through middleware (Agent Framework's middleware pipelines alone)",
            "on": "adapter",
            "on_sdk": "adapter, spans through the OpenTelemetry SDK",
        },
        recording_modes=("on", "on_sdk"),
        set_mode=set_mode,
        make_run=make_run,
    )


def agentscope_bench() -> AdapterBench:
    from agentscope.agent import Agent, InjectionConfig, ModelConfig
    from agentscope.credential import OpenAICredential
    from agentscope.message import UserMsg
    from agentscope.middleware import MiddlewareBase
    from agentscope.model import OpenAIChatModel
    from agentscope.permission import PermissionBehavior, PermissionDecision
    from agentscope.tool import FunctionTool, Toolkit

    import agentlightning_agentscope
    from agentlightning_agentscope.instrumentor import MIDDLEWARE_LISTS, _WithLightning

    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 2+2.

        Args:
            expression: the expression.
        """
        return "4"

    class NoOpMiddleware(MiddlewareBase):
        """The adapter's hooks, passing everything through: AgentScope's middleware chains alone."""

        async def on_reply(self, agent: Any, input_kwargs: dict, next_handler: Any) -> Any:
            async for item in next_handler(**input_kwargs):
                yield item

        async def on_model_call(self, agent: Any, input_kwargs: dict, next_handler: Any) -> Any:
            return await next_handler(**input_kwargs)

        async def on_acting(self, agent: Any, input_kwargs: dict, next_handler: Any) -> Any:
            async for item in next_handler(**input_kwargs):
                yield item

        async def on_check_permission(self, agent: Any, input_kwargs: dict, next_handler: Any) -> Any:
            return await next_handler(**input_kwargs)

    noop = NoOpMiddleware()

    def set_mode(mode: str) -> None:
        installed = vars(Agent).get(MIDDLEWARE_LISTS[0])
        if isinstance(installed, _WithLightning) and installed.middleware is noop:
            for attribute in MIDDLEWARE_LISTS:
                delattr(Agent, attribute)
        if mode in ("on", "on_sdk"):
            agentlightning_agentscope.instrument()
            middleware = agentlightning_agentscope.INSTRUMENTOR.middleware()
            use_sdk_spans(middleware, mode == "on_sdk", "agentlightning.agentscope")
            return
        agentlightning_agentscope.uninstrument()
        if mode == "noop":  # the same placement as the adapter's middleware
            for attribute in MIDDLEWARE_LISTS:
                setattr(Agent, attribute, _WithLightning(attribute, noop))

    def make_run(base_url: str) -> Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
        model = OpenAIChatModel(
            credential=OpenAICredential(api_key="unused", base_url=base_url),
            model="fake-model",
            stream=False,
            max_retries=0,
        )
        allowed = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="allowed")

        async def run(index: int) -> None:
            # A fresh agent per run (its context would otherwise grow run after run); the model is shared.
            toolkit = Toolkit()
            await toolkit.add_tool(FunctionTool(calculator, permission=allowed))
            agent = Agent(
                name="bench_agent",
                system_prompt="Use the calculator.",
                model=model,
                toolkit=toolkit,
                model_config=ModelConfig(max_retries=0),
                injection_config=InjectionConfig(inject_runtime_state=False),
            )
            reply = await agent.reply(UserMsg(name="user", content=QUESTION.format(index=index)))
            assert "4" in reply.get_text_content()

        return run, model.client.close

    return AdapterBench(
        name="agentscope",
        description="AgentScope 2.x Agent on OpenAIChatModel, await reply()",
        modes={
            "off": "no middleware",
            "noop": "no-op middleware (AgentScope's middleware chains alone)",
            "on": "adapter",
            "on_sdk": "adapter, spans through the OpenTelemetry SDK",
        },
        recording_modes=("on", "on_sdk"),
        set_mode=set_mode,
        make_run=make_run,
    )


def crewai_bench() -> AdapterBench:
    from crewai import LLM, Agent, Crew, Process, Task
    from crewai.tools import tool

    import agentlightning_crewai

    # CrewAI warns on every call that it estimates token counts for an unknown model: not this benchmark's output.
    logging.getLogger("crewai").setLevel(logging.ERROR)

    @tool("calculator")
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as 2+2."""
        return "4"

    def set_mode(mode: str) -> None:
        if mode in ("on", "on_sdk"):
            agentlightning_crewai.instrument()
            use_sdk_spans(agentlightning_crewai.INSTRUMENTOR.listener(), mode == "on_sdk", "agentlightning.crewai")
        else:
            agentlightning_crewai.uninstrument()

    def make_run(base_url: str) -> Tuple[Callable[[int], Awaitable[None]], Callable[[], Awaitable[None]]]:
        llm = LLM(model="openai/fake-model", base_url=base_url, api_key="unused", max_retries=0)

        async def run(index: int) -> None:
            agent = Agent(
                role="bench_agent",
                goal="Answer with the calculator.",
                backstory="A calculator user.",
                llm=llm,
                tools=[calculator],
                max_iter=3,
            )
            task = Task(description=QUESTION.format(index=index), expected_output="The number.", agent=agent)
            crew = Crew(agents=[agent], tasks=[task], process=Process.sequential)
            # Synchronously in a thread, as the runner runs a sync agent (CrewAI refuses kickoff() on a
            # thread with a running event loop); the thread gets this task's context, as the runner's does.
            result = await asyncio.to_thread(crew.kickoff)
            assert "4" in str(result.raw)

        async def close() -> None:
            pass

        return run, close

    return AdapterBench(
        name="crewai",
        description="CrewAI one-agent crew, kickoff()",
        modes={"off": "no listener", "on": "adapter", "on_sdk": "adapter, spans through the OpenTelemetry SDK"},
        recording_modes=("on", "on_sdk"),
        set_mode=set_mode,
        make_run=make_run,
    )


ADAPTERS: Dict[str, Callable[[], AdapterBench]] = {
    "langchain": langchain_bench,
    "openai_agents": openai_agents_bench,
    "autogen": autogen_bench,
    "agent_framework": agent_framework_bench,
    "agentscope": agentscope_bench,
    "crewai": crewai_bench,
}
FRAMEWORK_MODULES = {
    "langchain": "langchain",
    "openai_agents": "agents",
    "autogen": "autogen_agentchat",
    "agent_framework": "agent_framework",
    "agentscope": "agentscope",
    "crewai": "crewai",
}


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


def median_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """A distribution-free confidence interval of the median (order statistics of the binomial)."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 6:
        return ordered[0], ordered[-1]
    # The largest k with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2: [x_k, x_(n-k+1)] covers the median.
    tail, k, cumulative = (1.0 - confidence) / 2, 0, 0.0
    while True:
        cumulative += math.comb(n, k) / 2**n
        if cumulative > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


async def measure(bench: AdapterBench, latency_ms: float, args: argparse.Namespace) -> Dict[str, Any]:
    store = InMemoryLightningStore(watchdog=False)
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    counter = 0
    modes = list(bench.modes)
    wall: Dict[str, List[float]] = {mode: [] for mode in modes}
    # CPU time of this process (the agent and the tracer's span writer, not the fake server) per LLM
    # call: far less sensitive than wall time to other load on a shared machine.
    cpu: Dict[str, List[float]] = {mode: [] for mode in modes}
    rollout_ids: Dict[str, List[str]] = {mode: [] for mode in modes}
    with fake_server_process(latency_ms / 1e3) as base_url:
        run, close = bench.make_run(base_url)

        async def block(mode: str, runs: int, record: bool) -> None:
            nonlocal counter
            bench.set_mode(mode)
            attempted = await store.start_rollout({"mode": mode})
            started, cpu_started = time.perf_counter(), time.process_time()
            async with tracer.trace_context(
                rollout_id=attempted.rollout_id, attempt_id=attempted.attempt.attempt_id, store=store
            ):
                for _ in range(runs):
                    counter += 1
                    await run(counter)
            elapsed = time.perf_counter() - started  # includes writing the block's spans to the store
            used = time.process_time() - cpu_started
            if record:
                wall[mode].append(elapsed / (runs * LLM_CALLS_PER_RUN))
                cpu[mode].append(used / (runs * LLM_CALLS_PER_RUN))
                rollout_ids[mode].append(attempted.rollout_id)

        for mode in modes:  # warm up imports, connections and caches
            await block(mode, args.warmup_runs, record=False)
        for round_index in range(args.rounds):
            for mode in modes if round_index % 2 == 0 else reversed(modes):
                await block(mode, args.runs_per_round, record=True)
        bench.set_mode("off")
        await close()

    # The adapter really recorded every call when on, and nothing when off.
    expected = args.runs_per_round * LLM_CALLS_PER_RUN
    for mode in modes:
        for rollout_id in rollout_ids[mode]:
            spans = await store.query_spans(rollout_id)
            recorded = sum(
                1
                for span in spans
                if span.attributes.get(FrameworkAttributes.FRAMEWORK) == bench.name
                and span.attributes.get(GenAIAttributes.OPERATION_NAME) == "chat"
            )
            wanted = expected if mode in bench.recording_modes else 0
            assert recorded == wanted, (bench.name, mode, recorded, wanted)
    tracer.teardown_worker(0)
    await store.close()

    def summary(samples: Dict[str, List[float]]) -> Dict[str, Dict[str, float]]:
        base = samples["off"]
        result: Dict[str, Dict[str, float]] = {}
        for mode, values in samples.items():
            # Paired per round: each round's ratio to off, then the median of the ratios.
            ratios = [b / a - 1.0 for a, b in zip(base, values, strict=True)]
            low, high = median_interval(ratios)
            result[mode] = {
                "ms_per_llm_call": statistics.median(values) * 1e3,
                "overhead": statistics.median(values) / statistics.median(base) - 1.0,
                "overhead_paired": statistics.median(ratios),
                # How far the paired figure can be trusted: a 95 % interval of the median.
                "overhead_paired_ci95": [low, high],
            }
        return result

    return {
        "adapter": bench.name,
        "model_latency_ms": latency_ms,
        "wall": summary(wall),
        "cpu": summary(cpu),
        "samples_ms": {mode: [value * 1e3 for value in values] for mode, values in wall.items()},
        "cpu_samples_ms": {mode: [value * 1e3 for value in values] for mode, values in cpu.items()},
        "llm_spans_checked_per_block": expected,
    }


def print_result(bench: AdapterBench, result: Dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\n{bench.description}: {LLM_CALLS_PER_RUN} LLM calls + 1 tool call per run, fake model answering in "
        f"{result['model_latency_ms']:g} ms; {args.rounds} rounds x {args.runs_per_round} runs per mode"
    )
    print(
        f"{'mode':<54} {'wall ms/call':>12} {'added':>8} {'paired':>8} {'95% CI of paired':>18} "
        f"{'CPU ms/call':>12} {'paired':>8} {'95% CI of paired':>18}"
    )

    def interval(figures: Dict[str, Any]) -> str:
        low, high = figures["overhead_paired_ci95"]
        return f"{low:+.1%}..{high:+.1%}"

    for mode, label in bench.modes.items():
        wall, cpu = result["wall"][mode], result["cpu"][mode]
        print(
            f"{label:<54} {wall['ms_per_llm_call']:>12.3f} {wall['overhead']:>+8.1%} "
            f"{wall['overhead_paired']:>+8.1%} {interval(wall):>18} {cpu['ms_per_llm_call']:>12.3f} "
            f"{cpu['overhead_paired']:>+8.1%} {interval(cpu):>18}"
        )
    added_cpu_ms = result["cpu"]["on"]["ms_per_llm_call"] - result["cpu"]["off"]["ms_per_llm_call"]
    print(
        f"{bench.name} adapter overhead per LLM call: {result['wall']['on']['overhead_paired']:+.1%} wall "
        f"(95% CI {interval(result['wall']['on'])}), "
        f"{result['cpu']['on']['overhead_paired']:+.1%} CPU ({added_cpu_ms:+.3f} ms) (paired; target <= "
        f"{TARGET_OVERHEAD:.0%}); with SDK spans: {result['wall']['on_sdk']['overhead_paired']:+.1%} wall, "
        f"{result['cpu']['on_sdk']['overhead_paired']:+.1%} CPU"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--adapters", nargs="+", choices=sorted(ADAPTERS), help="default: every adapter whose framework is installed"
    )
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        help="time the fake model takes per call (default 0 and 20; 0 is the worst case for the ratio)",
    )
    parser.add_argument("--rounds", type=int, default=21, help="rounds of the modes (default 21)")
    parser.add_argument("--runs-per-round", type=int, default=10, help="agent runs per mode and round (default 10)")
    parser.add_argument("--warmup-runs", type=int, default=10)
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH", help="also write JSON results")
    parser.add_argument("--check", action="store_true", help=f"exit 1 above {TARGET_OVERHEAD:.0%} overhead")
    args = parser.parse_args(argv)

    names = args.adapters or [
        name for name, module in FRAMEWORK_MODULES.items() if importlib.util.find_spec(module) is not None
    ]
    if not names:
        parser.error("no adapter's framework is installed; see the module docstring")
    results: List[Dict[str, Any]] = []
    for name in names:
        bench = ADAPTERS[name]()
        for latency_ms in args.model_latency_ms:
            result = asyncio.run(measure(bench, latency_ms, args))
            print_result(bench, result, args)
            results.append(result)

    if args.json is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS_DIR / f"adapter_overhead-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "adapter_overhead",
            "time": stamp,
            "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
            "workload": {
                "rounds": args.rounds,
                "runs_per_round": args.runs_per_round,
                "warmup_runs": args.warmup_runs,
            },
            "target_overhead": TARGET_OVERHEAD,
            "results": results,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {path}")
    over = [
        f"{r['adapter']} at {r['model_latency_ms']:g} ms: {r['wall']['on']['overhead_paired']:+.1%}"
        for r in results
        if r["wall"]["on"]["overhead_paired"] > TARGET_OVERHEAD
    ]
    if args.check and over:
        print(f"FAILED (> {TARGET_OVERHEAD:.0%}): {'; '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
