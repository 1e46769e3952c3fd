"""Dry-run a LangGraph agent with ``Trainer.dev`` and show the spans the LangChain adapter recorded.

The agent is a plain two-node LangGraph graph (``researcher`` -> ``tools``) with no Agent Lightning
code in it: the runner turns the LangChain adapter on when it starts. Each LLM and tool span names
its graph node (``gen_ai.agent.name``), which is what ``agent_match`` selects on. A local OpenAI-compatible fake
server stands in for the model (scripted per task, so the run is deterministic and needs no GPU).

    pip install agentlightning agentlightning-langchain langgraph langchain-openai
    python examples/langgraph_dev.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

import agentlightning as agl
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.types import Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

TASKS: List[Dict[str, Any]] = [
    {"question": "What is 17 * 3?", "expression": "17 * 3", "answer": 51},
    {"question": "What is 120 / 8?", "expression": "120 / 8", "answer": 15},
    {"question": "What is 99 - 57?", "expression": "99 - 57", "answer": 42},
]


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * 21."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    value = eval(expression, {"__builtins__": {}})  # only digits and operators reach here
    return str(int(value) if float(value).is_integer() else value)


def build_graph(llm: agl.LLM) -> Any:
    """An ordinary LangGraph ReAct loop; nothing here knows about Agent Lightning."""
    model = ChatOpenAI(model=llm.model, base_url=llm.endpoint, api_key=llm.api_key or "unused", max_retries=0)
    model_with_tools = model.bind_tools([calculator])

    def researcher(state: MessagesState) -> Dict[str, List[AnyMessage]]:
        return {"messages": [model_with_tools.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("researcher", researcher)
    graph.add_node("tools", ToolNode([calculator]))
    graph.add_edge(START, "researcher")
    graph.add_conditional_edges("researcher", route, ["tools", END])
    graph.add_edge("tools", "researcher")
    return graph.compile(name="math_graph")


@agl.rollout
def math_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    result = build_graph(llm).invoke({"messages": [HumanMessage(task["question"])]})
    answer = str(result["messages"][-1].content)
    return 1.0 if str(task["answer"]) in answer else 0.0


def span_tree(spans: List[Span]) -> Tree:
    """The adapter's spans of one rollout as a tree: agents and nodes, LLM calls, tool calls."""
    children: Dict[Any, List[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    tree = Tree("spans")

    def label(span: Span) -> str:
        attributes = span.attributes
        details = [f"agent={attributes['gen_ai.agent.name']}"] if "gen_ai.agent.name" in attributes else []
        if "agentlightning.step.index" in attributes:
            details.append(f"step={attributes['agentlightning.step.index']}")
        for key in ("gen_ai.response.id", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"):
            if key in attributes:
                details.append(f"{key.rsplit('.', 1)[-1]}={attributes[key]}")
        if "gen_ai.usage.input_tokens" in attributes:
            details.append(
                f"tokens={attributes['gen_ai.usage.input_tokens']}+{attributes['gen_ai.usage.output_tokens']}"
            )
        return f"[bold]{span.name}[/bold] " + " ".join(details)

    def add(node: Tree, parent_id: Any) -> None:
        for span in children.get(parent_id, []):
            add(node.add(label(span)), span.span_id)

    known = {span.span_id for span in spans}
    for root_parent in [parent for parent in children if parent is None or parent not in known]:
        add(tree, root_parent)
    return tree


def main() -> None:
    console = Console()
    with FakeOpenAIServer() as model_server:
        # The stand-in model: for each task, call the calculator, then answer with its result.
        for task in TASKS:
            model_server.enqueue_for(
                task["question"],
                FakeReply.tool_call("calculator", {"expression": task["expression"]}),
                FakeReply.text(f"The answer is {task['answer']}."),
            )
        run_dir = Path(tempfile.mkdtemp(prefix="agl-langgraph-"))
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=2,
            run_dir=run_dir,
            initial_resources={"llm": agl.LLM(endpoint=model_server.base_url, model="fake-model")},
        )
        trainer.dev(math_agent, TASKS)

    table = Table(title=f"Trainer.dev of a LangGraph agent ({run_dir / 'store.db'})")
    for column in ("rollout", "question", "status", "reward", "spans", "LLM calls of node 'researcher'"):
        table.add_column(column)
    for report in baseline.reports:
        calls = find_llm_calls(report.spans, agent_match="^researcher$")
        table.add_row(
            report.rollout.rollout_id,
            report.rollout.input["question"],
            report.rollout.status,
            str(report.final_reward),
            str(len(report.spans)),
            str(len(calls)),
        )
    console.print(table)
    first = baseline.reports[0]
    console.print(f"\nSpans of {first.rollout.rollout_id} ({first.rollout.input['question']}):")
    console.print(span_tree([span for span in first.spans if "agentlightning.framework" in span.attributes]))


if __name__ == "__main__":
    main()
