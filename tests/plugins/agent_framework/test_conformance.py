"""The Agent Framework adapter against the shared adapter conformance suite, with real Agent Framework agents."""

from __future__ import annotations

from typing import Any

from af_harness import agent_framework_state, run_agent

import agentlightning_agent_framework
from agentlightning.instrumentation import Instrumentor
from agentlightning_testing.conformance import AdapterConformanceSuite, AgentRun


class _AgentFrameworkSuite(AdapterConformanceSuite):
    instrumentor_name = "agent_framework"
    adapter_module = "agentlightning_agent_framework"
    framework_modules = ("agent_framework", "agent_framework_openai")

    def get_instrumentor(self) -> Instrumentor:
        return agentlightning_agent_framework.INSTRUMENTOR

    def framework_state(self) -> Any:
        return agent_framework_state()


class TestChatCompletionsAgentConformance(_AgentFrameworkSuite):
    """An Agent on `OpenAIChatCompletionClient` (chat completions), `agent.run` streamed or not."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_agent(run, "chat_completions")


class TestResponsesAgentConformance(_AgentFrameworkSuite):
    """An Agent on `OpenAIChatClient`, the Responses API (`/v1/responses`), streamed or not."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_agent(run, "responses")
