"""The CrewAI adapter against the shared adapter conformance suite, with real CrewAI crews."""

from __future__ import annotations

from typing import Any

from crewai_harness import crewai_state, run_crew, run_crew_async

import agentlightning_crewai
from agentlightning.instrumentation import Instrumentor
from agentlightning_testing.conformance import AdapterConformanceSuite, AgentRun


class _CrewAISuite(AdapterConformanceSuite):
    instrumentor_name = "crewai"
    adapter_module = "agentlightning_crewai"
    framework_modules = ("crewai", "crewai_core", "crewai_tools")
    run_timeout = 120.0

    def get_instrumentor(self) -> Instrumentor:
        return agentlightning_crewai.INSTRUMENTOR

    def framework_state(self) -> Any:
        return crewai_state()


class TestCrewKickoffConformance(_CrewAISuite):
    """A one-agent crew with the calculator tool, `kickoff()` (the runner gives it a thread)."""

    def run_agent(self, run: AgentRun) -> Any:
        return run_crew(run)


class TestCrewKickoffAsyncConformance(_CrewAISuite):
    """The same crew through `kickoff_async()` in the runner's event loop."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_crew_async(run)
