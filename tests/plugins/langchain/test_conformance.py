"""The LangChain adapter against the shared adapter conformance suite, with two real agents."""

from __future__ import annotations

from typing import Any

from langchain_harness import langchain_state, run_create_agent, run_two_node_graph

import agentlightning_langchain
from agentlightning.instrumentation import Instrumentor
from agentlightning_testing.conformance import AdapterConformanceSuite, AgentRun


class _LangChainSuite(AdapterConformanceSuite):
    instrumentor_name = "langchain"
    adapter_module = "agentlightning_langchain"
    framework_modules = ("langchain_core", "langchain", "langgraph", "langchain_openai", "langsmith")

    def get_instrumentor(self) -> Instrumentor:
        return agentlightning_langchain.INSTRUMENTOR

    def framework_state(self) -> Any:
        return langchain_state()


class TestCreateAgentConformance(_LangChainSuite):
    """A LangChain 1.x tool-calling agent (`create_agent`), run synchronously."""

    def run_agent(self, run: AgentRun) -> Any:
        return run_create_agent(run)


class TestLangGraphConformance(_LangChainSuite):
    """A two-node LangGraph graph (`researcher` -> `tools`), run asynchronously."""

    async def run_agent(self, run: AgentRun) -> Any:
        return await run_two_node_graph(run)
