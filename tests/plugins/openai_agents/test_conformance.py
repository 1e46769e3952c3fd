"""The OpenAI Agents SDK adapter against the shared adapter conformance suite, with real SDK agents."""

from __future__ import annotations

from typing import Any

from agents_harness import agents_state, run_async, run_sync

import agentlightning_openai_agents
from agentlightning.instrumentation import Instrumentor
from agentlightning_testing.conformance import AdapterConformanceSuite, AgentRun


class _AgentsSuite(AdapterConformanceSuite):
    instrumentor_name = "openai_agents"
    adapter_module = "agentlightning_openai_agents"
    framework_modules = ("agents",)

    def get_instrumentor(self) -> Instrumentor:
        return agentlightning_openai_agents.INSTRUMENTOR

    def framework_state(self) -> Any:
        return agents_state()


class TestChatCompletionsAgentConformance(_AgentsSuite):
    """An agent on a chat-completions model, with `Runner.run` / `Runner.run_streamed`."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_async(run, "chat")


class TestResponsesAgentConformance(_AgentsSuite):
    """An agent on a Responses API model (the SDK's default kind), with `Runner.run_sync`."""

    def run_agent(self, run: AgentRun) -> Any:
        return run_sync(run, "responses")


class TestResponsesAgentAsyncConformance(_AgentsSuite):
    """An agent on a Responses API model, with `Runner.run` / `Runner.run_streamed`."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_async(run, "responses")
