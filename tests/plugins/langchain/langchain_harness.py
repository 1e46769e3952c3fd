"""Agents shared by the LangChain adapter tests (imported as a plain module): a create_agent agent and a two-node LangGraph graph."""

from __future__ import annotations

from typing import Any, Dict, List

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import BaseTool, tool
from langchain_core.tracers import context as langchain_context
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from agentlightning_testing.conformance import TOOL_DESCRIPTION, TOOL_NAME, AgentRun, calculator


@tool(TOOL_NAME, description=TOOL_DESCRIPTION)
def calculator_tool(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return calculator(expression)


TOOLS: List[BaseTool] = [calculator_tool]


def chat_model(run: AgentRun) -> ChatOpenAI:
    return ChatOpenAI(
        model=run.model,
        base_url=run.base_url,
        api_key=run.api_key,
        max_retries=0,
        streaming=run.stream,
        stream_usage=True,
    )


def langchain_state() -> Any:
    """What LangChainInstrumentor changes in LangChain: the configure hooks and the stream-chunk converter."""
    hooks = tuple(id(hook[0]) for hook in langchain_context._configure_hooks)
    return hooks, BaseChatOpenAI.__dict__.get("_convert_chunk_to_generation_chunk")


def run_create_agent(run: AgentRun) -> str:
    """LangChain 1.x `create_agent` (a LangGraph graph with `model` and `tools` nodes), called synchronously."""
    agent = create_agent(chat_model(run), TOOLS, name="calculator_agent")
    inputs: Any = {"messages": [HumanMessage(run.question)]}
    if run.stream:
        for _ in agent.stream(inputs, stream_mode="messages"):
            pass
        return ""
    result = agent.invoke(inputs)
    return str(result["messages"][-1].content)


def build_two_node_graph(run: AgentRun) -> Any:
    """A hand-written LangGraph graph: a `researcher` node (the LLM with tools) and a `tools` node."""
    model = chat_model(run).bind_tools(TOOLS)

    async def researcher(state: MessagesState) -> Dict[str, List[AnyMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("researcher", researcher)
    graph.add_node("tools", ToolNode(TOOLS))
    graph.add_edge(START, "researcher")
    graph.add_conditional_edges("researcher", route, ["tools", END])
    graph.add_edge("tools", "researcher")
    return graph.compile(name="research_graph")


async def run_two_node_graph(run: AgentRun) -> str:
    graph = build_two_node_graph(run)
    inputs: Any = {"messages": [HumanMessage(run.question)]}
    if run.stream:
        async for _ in graph.astream(inputs, stream_mode="messages"):
            pass
        return ""
    result = await graph.ainvoke(inputs)
    return str(result["messages"][-1].content)
