"""Dry-run an AgentScope agent with ``Trainer.dev`` and show the spans the AgentScope adapter recorded.

The agent is a plain AgentScope 2.x ``Agent`` (a ``Solver`` with a calculator tool) whose answer a second
agent, the ``Reviewer``, checks. There is no Agent Lightning code in them: the runner turns the AgentScope
adapter on when it starts, and the adapter adds its middleware to every agent. Each span names its agent
(``gen_ai.agent.name``), which is what ``agent_match`` selects on: here only the Solver's calls would
become training data. A local OpenAI-compatible fake server stands in for the model (scripted per task,
so the run is deterministic and needs no GPU).

    pip install agentlightning agentlightning-agentscope agentlightning-testing "agentscope>=2.0.10"
    python examples/agentscope_dev.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

from agentscope.agent import Agent, ContextConfig, InjectionConfig, ModelConfig
from agentscope.credential import OpenAICredential
from agentscope.message import UserMsg
from agentscope.model import OpenAIChatModel
from agentscope.permission import PermissionBehavior, PermissionDecision
from agentscope.tool import FunctionTool, Toolkit
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


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * 21.

    Args:
        expression: the expression to evaluate.
    """
    if not set(expression) <= set("0123456789+-*/(). "):
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    value = eval(expression, {"__builtins__": {}})  # only digits and operators reach here
    return str(int(value) if float(value).is_integer() else value)


def agent(name: str, prompt: str, llm: agl.LLM, toolkit: Toolkit | None = None) -> Agent:
    """An ordinary AgentScope agent; nothing here knows about Agent Lightning."""
    model = OpenAIChatModel(
        credential=OpenAICredential(api_key=llm.api_key or "unused", base_url=llm.endpoint),
        model=llm.model,
        max_retries=0,
    )
    return Agent(
        name=name,
        system_prompt=prompt,
        model=model,
        toolkit=toolkit,
        model_config=ModelConfig(max_retries=0),
        context_config=ContextConfig(compression_tool_enabled=False),
        injection_config=InjectionConfig(inject_runtime_state=False),
    )


@agl.rollout
async def solve_and_review(task: Dict[str, Any], llm: agl.LLM) -> float:
    toolkit = Toolkit()
    # AgentScope asks the user before each tool call unless the tool is allowed.
    allowed = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="the calculator is always allowed")
    await toolkit.add_tool(FunctionTool(calculator, permission=allowed))
    solver = agent("Solver", "Compute the answer with the calculator.", llm, toolkit)
    reviewer = agent("Reviewer", "Restate the solver's answer in one sentence.", llm)
    solved = await solver.reply(UserMsg(name="user", content=task["question"]))
    reviewed = await reviewer.reply([UserMsg(name="user", content=task["question"]), solved])
    return 1.0 if str(task["answer"]) in (reviewed.get_text_content() or "") else 0.0


def span_tree(spans: List[Span]) -> Tree:
    """The adapter's spans of one rollout as a tree: replies, model calls, tool calls."""
    children: Dict[Any, List[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    tree = Tree("spans")

    def label(span: Span) -> str:
        attributes = span.attributes
        details = [f"agent={attributes['gen_ai.agent.name']}"] if "gen_ai.agent.name" in attributes else []
        for key in (
            "gen_ai.response.id",
            "gen_ai.tool.call.id",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        ):
            if key in attributes:
                details.append(f"{key.rsplit('.', 1)[-1]}={attributes[key]}")
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
        # The stand-in model: the Solver calls the calculator, then answers; the Reviewer (whose prompt
        # holds the Solver's answer) restates it.
        for task in TASKS:
            model_server.enqueue_for(
                task["question"],
                FakeReply.tool_call("calculator", {"expression": task["expression"]}),
                FakeReply.text(str(task["answer"])),
                FakeReply.text(f"The answer to '{task['question']}' is {task['answer']}."),
            )
        run_dir = Path(tempfile.mkdtemp(prefix="agl-agentscope-"))
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=2,
            run_dir=run_dir,
            initial_resources={"llm": agl.LLM(endpoint=model_server.base_url, model="fake-model")},
        )
        trainer.dev(solve_and_review, TASKS)

    table = Table(title=f"Trainer.dev of two AgentScope agents ({run_dir / 'store.db'})")
    for column in ("rollout", "question", "status", "reward", "spans", "LLM calls of the Solver", "of the Reviewer"):
        table.add_column(column)
    for report in baseline.reports:
        table.add_row(
            report.rollout.rollout_id,
            report.rollout.input["question"],
            report.rollout.status,
            str(report.final_reward),
            str(len(report.spans)),
            str(len(find_llm_calls(report.spans, agent_match="^Solver$"))),
            str(len(find_llm_calls(report.spans, agent_match="^Reviewer$"))),
        )
    console.print(table)
    # The first task's rollout (two runners finish in either order).
    first = next(report for report in baseline.reports if report.rollout.input == TASKS[0])
    console.print(f"\nSpans of {first.rollout.rollout_id} ({first.rollout.input['question']}):")
    console.print(span_tree([span for span in first.spans if "agentlightning.framework" in span.attributes]))


if __name__ == "__main__":
    main()
