"""AutoGen agents shared by the AutoGen adapter tests (imported as a plain module)."""

from __future__ import annotations

import logging
from typing import Any, List, Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import EVENT_LOGGER_NAME
from autogen_core.tools import BaseTool, FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.openai._openai_client import BaseOpenAIChatCompletionClient

from agentlightning_autogen.instrumentor import agent_classes
from agentlightning_testing.conformance import TOOL_DESCRIPTION, TOOL_NAME, AgentRun, calculator

Shape = Literal["agent", "team"]

# The fake model is not an OpenAI model AutoGen knows: it must be told what the model can do.
MODEL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def model_client(run: AgentRun) -> OpenAIChatCompletionClient:
    extra: Any = {"stream_options": {"include_usage": True}} if run.stream else {}
    return OpenAIChatCompletionClient(
        model=run.model,
        base_url=run.base_url,
        api_key=run.api_key,
        max_retries=0,
        model_info=MODEL_INFO,
        **extra,
    )


def calculator_agent(run: AgentRun, name: str = "calculator_agent") -> AssistantAgent:
    tool = FunctionTool(calculator, name=TOOL_NAME, description=TOOL_DESCRIPTION)
    return AssistantAgent(
        name,
        model_client=model_client(run),
        tools=[tool],
        system_message="Answer arithmetic questions with the calculator tool.",
        reflect_on_tool_use=True,  # a second LLM call turns the tool's result into the answer
        model_client_stream=run.stream,
    )


async def run_agent(run: AgentRun, shape: Shape) -> str:
    """One AssistantAgent (``run`` / ``run_stream``), or a RoundRobinGroupChat team of it."""
    agent = calculator_agent(run)
    runner: Any = agent
    if shape == "team":
        runner = RoundRobinGroupChat([agent], termination_condition=MaxMessageTermination(2))
    try:
        if run.stream:
            result: Any = None
            async for item in runner.run_stream(task=run.question):
                result = item
        else:
            result = await runner.run(task=run.question)
        assert isinstance(result, TaskResult), result
        return str(result.messages[-1].to_text())
    finally:
        await agent._model_client.close()


def autogen_state() -> Any:
    """What the instrumentor changes in AutoGen: the wrapped methods and the event logger."""
    events = logging.getLogger(EVENT_LOGGER_NAME)
    methods: List[Any] = [vars(klass)["on_messages_stream"] for klass in agent_classes()]
    methods.append(vars(BaseTool)["run_json"])
    for name in ("create", "create_stream", "_process_create_args", "_create_stream_chunks"):
        methods.append(vars(BaseOpenAIChatCompletionClient)[name])
    return (tuple(methods), events.level, tuple(events.filters))
