"""Crews shared by the CrewAI adapter tests (imported as a plain module): one agent with the calculator
tool, and two agents (a researcher with the tool and a writer) in a sequential or hierarchical crew."""

from __future__ import annotations

from typing import Any, List

from crewai import LLM, Agent, Crew, Process, Task
from crewai.events import crewai_event_bus
from crewai.tools import tool

import agentlightning_crewai
from agentlightning_crewai.instrumentor import kickoff_entry_points
from agentlightning_testing.conformance import TOOL_DESCRIPTION, TOOL_NAME, AgentRun, calculator


@tool(TOOL_NAME)
def calculator_tool(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2+2 and return the result."""
    return calculator(expression)


calculator_tool.description = TOOL_DESCRIPTION


def llm(run: AgentRun) -> LLM:
    return LLM(
        model=f"openai/{run.model}", base_url=run.base_url, api_key=run.api_key, stream=run.stream, max_retries=0
    )


def crewai_state() -> Any:
    """What CrewAIInstrumentor changes in CrewAI: the bus's handlers for its events, its emit, and the kickoffs."""
    event_types = agentlightning_crewai.INSTRUMENTOR.listener().event_types
    handlers = tuple(
        (
            event_type.__name__,
            crewai_event_bus._sync_handlers.get(event_type, frozenset()),
            crewai_event_bus._async_handlers.get(event_type, frozenset()),
        )
        for event_type in event_types
    )
    kickoffs = tuple(owner.__dict__[method] for owner, method in kickoff_entry_points())
    return handlers, kickoffs, crewai_event_bus.__dict__.get("emit")  # the adapter's wrapper while on


def calculator_agent(run: AgentRun, role: str = "Mathematician") -> Agent:
    return Agent(
        role=role,
        goal="Answer arithmetic questions with the calculator tool.",
        backstory="A careful mathematician.",
        llm=llm(run),
        tools=[calculator_tool],
        allow_delegation=False,
        max_iter=3,
    )


def one_agent_crew(run: AgentRun) -> Crew:
    task = Task(description=run.question, expected_output="The number.", agent=calculator_agent(run))
    return Crew(name="calculator_crew", agents=[task.agent], tasks=[task], process=Process.sequential)


def run_crew(run: AgentRun) -> str:
    """A one-agent crew with the calculator tool, kicked off synchronously."""
    return str(one_agent_crew(run).kickoff().raw)


async def run_crew_async(run: AgentRun) -> str:
    """The same crew through `kickoff_async` (CrewAI runs the kickoff in a worker thread)."""
    return str((await one_agent_crew(run).kickoff_async()).raw)


def two_agent_crew(run: AgentRun, process: Process) -> Crew:
    """A researcher (with the calculator) and a writer; sequential, or hierarchical under a manager."""
    researcher = calculator_agent(run, role="Researcher")
    writer = Agent(
        role="Writer",
        goal="Write one sentence with the researcher's result.",
        backstory="A concise writer.",
        llm=llm(run),
        allow_delegation=False,
        max_iter=2,
    )
    tasks: List[Task] = [
        Task(description=run.question, expected_output="The number.", agent=researcher),
        Task(description="Write one sentence with the result.", expected_output="One sentence.", agent=writer),
    ]
    if process is Process.hierarchical:
        for task in tasks:
            task.agent = None  # the manager delegates
        return Crew(
            name="hierarchical_crew",
            agents=[researcher, writer],
            tasks=tasks[:1],
            process=Process.hierarchical,
            manager_llm=llm(run),
        )
    return Crew(name="research_crew", agents=[researcher, writer], tasks=tasks, process=Process.sequential)
