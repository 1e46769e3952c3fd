"""Agents shared by the OpenAI Agents SDK adapter tests (imported as a plain module)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from agents import Agent, ModelSettings, Runner, function_tool
from agents import tool as tool_module
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from agents.tool_context import ToolContext
from agents.tracing import get_trace_provider
from openai import AsyncOpenAI

from agentlightning_testing.conformance import TOOL_DESCRIPTION, TOOL_NAME, AgentRun, calculator

ModelKind = Literal["chat", "responses"]

calculator_tool = function_tool(calculator, name_override=TOOL_NAME, description_override=TOOL_DESCRIPTION)


def model_for(run: AgentRun, kind: ModelKind) -> Any:
    client = AsyncOpenAI(base_url=run.base_url, api_key=run.api_key, max_retries=0)
    if kind == "chat":
        return OpenAIChatCompletionsModel(model=run.model, openai_client=client)
    return OpenAIResponsesModel(model=run.model, openai_client=client)


def calculator_agent(run: AgentRun, kind: ModelKind, name: str = "calculator_agent") -> Agent[Any]:
    # Streamed chat completions report usage only when asked to.
    return Agent(
        name=name,
        instructions="Answer arithmetic questions with the calculator tool.",
        tools=[calculator_tool],
        model=model_for(run, kind),
        model_settings=ModelSettings(include_usage=True),
    )


async def run_async(run: AgentRun, kind: ModelKind) -> str:
    """``Runner.run``, or ``Runner.run_streamed`` when the run streams."""
    agent = calculator_agent(run, kind)
    if run.stream:
        streamed = Runner.run_streamed(agent, run.question)
        async for _ in streamed.stream_events():
            pass
        return str(streamed.final_output)
    result = await Runner.run(agent, run.question)
    return str(result.final_output)


def run_sync(run: AgentRun, kind: ModelKind) -> str:
    """``Runner.run_sync``; a streamed run drives ``Runner.run_streamed`` on a loop of its own."""
    if run.stream:
        return asyncio.run(run_async(run, kind))
    result = Runner.run_sync(calculator_agent(run, kind), run.question)
    return str(result.final_output)


def agents_state() -> Any:
    """What the instrumentor changes in the SDK: its trace processors and the wrapped calls."""
    provider: Any = get_trace_provider()
    return (
        tuple(provider._multi_processor._processors),
        OpenAIChatCompletionsModel.__dict__["_fetch_response"],
        OpenAIResponsesModel.__dict__["_fetch_response"],
        tool_module.__dict__["maybe_invoke_function_tool_failure_error_function"],
        ToolContext.__dict__["from_agent_context"],
    )
