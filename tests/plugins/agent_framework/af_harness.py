"""Agent Framework agents shared by the Agent Framework adapter tests (imported as a plain module)."""

from __future__ import annotations

from typing import Any, Literal

from agent_framework import Agent, AgentMiddlewareLayer, ChatMiddlewareLayer, FunctionTool
from agent_framework_openai import OpenAIChatClient, OpenAIChatCompletionClient

from agentlightning_testing.conformance import TOOL_DESCRIPTION, TOOL_NAME, AgentRun, calculator

ClientKind = Literal["chat_completions", "responses"]

calculator_tool = FunctionTool(func=calculator, name=TOOL_NAME, description=TOOL_DESCRIPTION)


def chat_client(run: AgentRun, kind: ClientKind) -> Any:
    """``OpenAIChatCompletionClient`` (chat completions) or ``OpenAIChatClient`` (the Responses API)."""
    client_class: Any = OpenAIChatCompletionClient if kind == "chat_completions" else OpenAIChatClient
    return client_class(model=run.model, base_url=run.base_url, api_key=run.api_key)


def calculator_agent(run: AgentRun, kind: ClientKind, name: str = "calculator_agent") -> Agent[Any]:
    return Agent(
        client=chat_client(run, kind),
        name=name,
        instructions="Answer arithmetic questions with the calculator tool.",
        tools=[calculator_tool],
        default_options=_options(run, kind),
    )


def _options(run: AgentRun, kind: ClientKind) -> Any:
    if kind == "responses":
        # Every request carries the whole conversation (not a previous_response_id the fake server
        # could not resolve), so each call holds the task's marker.
        return {"store": False}
    # Streamed chat completions report usage only when asked to.
    return {"stream_options": {"include_usage": True}} if run.stream else None


async def run_agent(run: AgentRun, kind: ClientKind) -> str:
    """``agent.run(...)``, or ``agent.run(..., stream=True)`` read to the end when the run streams."""
    agent = calculator_agent(run, kind)
    if run.stream:
        stream = agent.run(run.question, stream=True)
        async for _ in stream:
            pass
        response = await stream.get_final_response()
    else:
        response = await agent.run(run.question)
    return response.text


def agent_framework_state() -> Any:
    """What the instrumentor changes in Agent Framework: the pipeline builders and FunctionTool.invoke."""
    return (
        vars(AgentMiddlewareLayer)["_get_agent_middleware_pipeline"],
        vars(ChatMiddlewareLayer)["_get_chat_middleware_pipeline"],
        vars(FunctionTool)["invoke"],
    )
