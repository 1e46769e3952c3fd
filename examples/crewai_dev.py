"""Dry-run a CrewAI crew with ``Trainer.dev`` and show the spans the CrewAI adapter recorded.

The agent is a plain two-agent crew (a ``Researcher`` with a calculator tool, then a ``Writer``)
with no Agent Lightning code in it: the runner turns the CrewAI adapter on when it starts. Each LLM
and tool span names its agent's role (``gen_ai.agent.name``), which is what ``agent_match`` selects
on: here only the Researcher's calls would become training data. A local OpenAI-compatible fake
server stands in for the model (scripted per task, so the run is deterministic and needs no GPU).

    pip install agentlightning agentlightning-crewai agentlightning-testing "crewai>=1.15"
    python examples/crewai_dev.py
"""

from __future__ import annotations

import os

# CrewAI's telemetry cannot reach its server from here and would delay the exit by about 10 s.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

import logging  # noqa: E402 -- after the environment above, which CrewAI reads when imported
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

from crewai import LLM, Agent, Crew, Process, Task  # noqa: E402
from crewai.tools import tool  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.tree import Tree  # noqa: E402

import agentlightning as agl  # noqa: E402
from agentlightning.adapter.llm_calls import find_llm_calls  # noqa: E402
from agentlightning.types import Span  # noqa: E402
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply  # noqa: E402

TASKS: List[Dict[str, Any]] = [
    {"question": "What is 17 * 3?", "expression": "17 * 3", "answer": 51},
    {"question": "What is 120 / 8?", "expression": "120 / 8", "answer": 15},
    {"question": "What is 99 - 57?", "expression": "99 - 57", "answer": 42},
]


@tool("calculator")
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * 21."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    value = eval(expression, {"__builtins__": {}})  # only digits and operators reach here
    return str(int(value) if float(value).is_integer() else value)


def build_crew(llm: agl.LLM, question: str) -> Crew:
    """An ordinary CrewAI crew; nothing here knows about Agent Lightning."""
    model = LLM(model=f"openai/{llm.model}", base_url=llm.endpoint, api_key=llm.api_key or "unused", max_retries=0)
    researcher = Agent(
        role="Researcher",
        goal="Compute the answer with the calculator.",
        backstory="A careful mathematician.",
        llm=model,
        tools=[calculator],
        max_iter=3,
    )
    writer = Agent(role="Writer", goal="Report the result in one sentence.", backstory="A concise writer.", llm=model)
    research = Task(description=question, expected_output="The number.", agent=researcher)
    report = Task(description="Report the result in one sentence.", expected_output="One sentence.", agent=writer)
    return Crew(name="math_crew", agents=[researcher, writer], tasks=[research, report], process=Process.sequential)


@agl.rollout
def math_crew(task: Dict[str, Any], llm: agl.LLM) -> float:
    answer = str(build_crew(llm, task["question"]).kickoff().raw)
    return 1.0 if str(task["answer"]) in answer else 0.0


def span_tree(spans: List[Span]) -> Tree:
    """The adapter's spans of one rollout as a tree: crew, agents, LLM calls, tool calls."""
    children: Dict[Any, List[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    tree = Tree("spans")

    def label(span: Span) -> str:
        attributes = span.attributes
        details = [f"agent={attributes['gen_ai.agent.name']}"] if "gen_ai.agent.name" in attributes else []
        if "agentlightning.step.index" in attributes:
            details.append(f"step={attributes['agentlightning.step.index']}")
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
    # CrewAI warns on every call that it cannot count the fake model's tokens exactly.
    logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)
    with FakeOpenAIServer() as model_server:
        # The stand-in model: the Researcher calls the calculator, then answers; the Writer (whose
        # prompt holds the Researcher's answer) reports it.
        for task in TASKS:
            model_server.enqueue_for(
                task["question"],
                FakeReply.tool_call("calculator", {"expression": task["expression"]}),
                FakeReply.text(str(task["answer"])),
            )
        for task in TASKS:
            model_server.enqueue_for(
                f"{task['answer']}", FakeReply.text(f"The answer to '{task['question']}' is {task['answer']}.")
            )
        run_dir = Path(tempfile.mkdtemp(prefix="agl-crewai-"))
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=2,
            run_dir=run_dir,
            initial_resources={"llm": agl.LLM(endpoint=model_server.base_url, model="fake-model")},
        )
        trainer.dev(math_crew, TASKS)

    table = Table(title=f"Trainer.dev of a CrewAI crew ({run_dir / 'store.db'})")
    for column in ("rollout", "question", "status", "reward", "spans", "LLM calls of the Researcher", "of the Writer"):
        table.add_column(column)
    for report in baseline.reports:
        table.add_row(
            report.rollout.rollout_id,
            report.rollout.input["question"],
            report.rollout.status,
            str(report.final_reward),
            str(len(report.spans)),
            str(len(find_llm_calls(report.spans, agent_match="^Researcher$"))),
            str(len(find_llm_calls(report.spans, agent_match="^Writer$"))),
        )
    console.print(table)
    first = baseline.reports[0]
    console.print(f"\nSpans of {first.rollout.rollout_id} ({first.rollout.input['question']}):")
    console.print(span_tree([span for span in first.spans if "agentlightning.framework" in span.attributes]))


if __name__ == "__main__":
    main()
