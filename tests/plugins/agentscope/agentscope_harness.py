"""Agents shared by the AgentScope adapter tests (imported as a plain module): one agent with the calculator
tool, built the way an AgentScope user builds it (no Agent Lightning code)."""

from __future__ import annotations

from typing import Any, Optional

from agentscope.agent import Agent, InjectionConfig, ModelConfig
from agentscope.credential import OpenAICredential
from agentscope.message import Msg, UserMsg
from agentscope.model import OpenAIChatModel
from agentscope.permission import PermissionBehavior, PermissionDecision
from agentscope.tool import FunctionTool, Toolkit

from agentlightning_agentscope.instrumentor import MIDDLEWARE_LISTS
from agentlightning_testing.conformance import TOOL_DESCRIPTION, TOOL_NAME, AgentRun, calculator

ALLOWED = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="the calculator is always allowed")


def agentscope_state() -> Any:
    """What AgentScopeInstrumentor changes in AgentScope: the Agent class's middleware-list attributes."""
    return tuple(repr(Agent.__dict__.get(attribute)) for attribute in MIDDLEWARE_LISTS)


def calculator_tool(permission: Optional[PermissionDecision] = ALLOWED) -> FunctionTool:
    def tool(expression: str) -> str:
        return calculator(expression)

    # A plain function tool; AgentScope asks for permission before each call unless told otherwise.
    return FunctionTool(
        tool,
        name=TOOL_NAME,
        description=TOOL_DESCRIPTION,
        input_schema={
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "The expression, e.g. 2+2."}},
            "required": ["expression"],
        },
        permission=permission,
    )


async def calculator_agent(
    run: AgentRun, name: str = "Mathematician", permission: Optional[PermissionDecision] = ALLOWED
) -> Agent:
    toolkit = Toolkit()
    await toolkit.add_tool(calculator_tool(permission))
    model = OpenAIChatModel(
        credential=OpenAICredential(api_key=run.api_key, base_url=run.base_url),
        model=run.model,
        stream=run.stream,
        max_retries=0,
    )
    return Agent(
        name=name,
        system_prompt="You answer arithmetic questions with the calculator tool.",
        model=model,
        toolkit=toolkit,
        model_config=ModelConfig(max_retries=0),
        # No time stamps injected as user messages: the question stays the last user message.
        injection_config=InjectionConfig(inject_runtime_state=False),
    )


async def run_agent(run: AgentRun, **options: Any) -> Msg:
    agent = await calculator_agent(run, **options)
    return await agent.reply(UserMsg(name="user", content=run.question))
