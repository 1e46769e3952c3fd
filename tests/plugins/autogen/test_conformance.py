"""The AutoGen adapter against the shared adapter conformance suite, with real AutoGen agents and teams."""

from __future__ import annotations

from typing import Any

from autogen_harness import autogen_state, run_agent

import agentlightning_autogen
from agentlightning.instrumentation import Instrumentor
from agentlightning_testing.conformance import AdapterConformanceSuite, AgentRun


class _AutoGenSuite(AdapterConformanceSuite):
    instrumentor_name = "autogen"
    adapter_module = "agentlightning_autogen"
    framework_modules = ("autogen_agentchat", "autogen_core", "autogen_ext")

    def get_instrumentor(self) -> Instrumentor:
        return agentlightning_autogen.INSTRUMENTOR

    def framework_state(self) -> Any:
        return autogen_state()


class TestAssistantAgentConformance(_AutoGenSuite):
    """An AssistantAgent with the calculator tool: `run`, or `run_stream` with a streaming model client."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_agent(run, "agent")


class TestRoundRobinTeamConformance(_AutoGenSuite):
    """The same agent in a RoundRobinGroupChat team (its turns run in AutoGen's agent runtime)."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_agent(run, "team")
