"""The AgentScope adapter against the shared adapter conformance suite, with real AgentScope 2.x agents."""

from __future__ import annotations

from typing import Any

from agentscope_harness import agentscope_state, run_agent

import agentlightning_agentscope
from agentlightning.instrumentation import Instrumentor
from agentlightning_testing.conformance import AdapterConformanceSuite, AgentRun


class TestAgentReplyConformance(AdapterConformanceSuite):
    """An AgentScope ReAct agent with the calculator tool (`await agent.reply(...)`), streamed or not."""

    instrumentor_name = "agentscope"
    adapter_module = "agentlightning_agentscope"
    framework_modules = ("agentscope",)

    def get_instrumentor(self) -> Instrumentor:
        return agentlightning_agentscope.INSTRUMENTOR

    def framework_state(self) -> Any:
        return agentscope_state()

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_agent(run)
