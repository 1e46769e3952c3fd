"""Dry-run Microsoft Agent Framework agents with ``Trainer.dev`` and show the spans the adapter recorded.

The agent is plain Agent Framework code with no Agent Lightning in it: a ``coordinator`` agent
delegates arithmetic to a ``math_agent`` (used as its tool, ``agent.as_tool()``), which has a
calculator tool. The runner turns the Agent Framework adapter on when it starts. Each LLM and tool
span names its agent (``gen_ai.agent.name``), which is what ``agent_match`` selects on: here only the
math agent's calls would become training data. Agent Framework's own OpenTelemetry spans land in the
rollout too, under the adapter's. A local OpenAI-compatible fake server stands in for the model
(scripted per task, so the run is deterministic and needs no GPU).

    pip install agentlightning agentlightning-agent-framework agentlightning-testing \
        "agent-framework-core>=1.23" "agent-framework-openai>=1.17"
    python examples/agent_framework_dev.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

from agent_framework import Agent
from agent_framework_openai import OpenAIChatCompletionClient
from rich.console import Console
from rich.table import Table

import agentlightning as agl
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

TASKS: List[Dict[str, Any]] = [
    {"question": "What is 17 * 3?", "expression": "17 * 3", "answer": 51},
    {"question": "What is 120 / 8?", "expression": "120 / 8", "answer": 15},
    {"question": "What is 99 - 57?", "expression": "99 - 57", "answer": 42},
]


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * 21."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    value = eval(expression, {"__builtins__": {}})  # only digits and operators reach here
    return str(int(value) if float(value).is_integer() else value)


def build_coordinator(llm: agl.LLM) -> Agent[Any]:
    """Ordinary Agent Framework agents; nothing here knows about Agent Lightning."""
    client = OpenAIChatCompletionClient(model=llm.model, base_url=llm.endpoint, api_key=llm.api_key or "unused")
    math_agent = Agent(
        client=client, name="math_agent", instructions="Compute with the calculator.", tools=[calculator]
    )
    return Agent(
        client=client,
        name="coordinator",
        instructions="Delegate arithmetic to the math agent, then answer in one sentence.",
        tools=[math_agent.as_tool(description="Solves arithmetic tasks.")],
    )


@agl.rollout
async def math_team(task: Dict[str, Any], llm: agl.LLM) -> float:
    response = await build_coordinator(llm).run(task["question"])
    return 1.0 if str(task["answer"]) in response.text else 0.0


def main() -> None:
    console = Console()
    with FakeOpenAIServer() as model_server:
        # The stand-in model: the coordinator hands the task to the math agent, which calls the
        # calculator and answers; the coordinator then reports the answer.
        for task in TASKS:
            work = f"compute {task['expression']}"
            model_server.enqueue_for(
                task["question"],
                FakeReply.tool_call("math_agent", {"task": work}),
                FakeReply.text(f"The answer to '{task['question']}' is {task['answer']}."),
            )
            model_server.enqueue_for(
                work,
                FakeReply.tool_call("calculator", {"expression": task["expression"]}),
                FakeReply.text(str(task["answer"])),
            )
        run_dir = Path(tempfile.mkdtemp(prefix="agl-agent-framework-"))
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=2,
            run_dir=run_dir,
            initial_resources={"llm": agl.LLM(endpoint=model_server.base_url, model="fake-model")},
        )
        trainer.dev(math_team, TASKS)

    table = Table(title=f"Trainer.dev of Agent Framework agents ({run_dir / 'store.db'})")
    for column in ("rollout", "question", "status", "reward", "spans", "LLM calls of math_agent", "of coordinator"):
        table.add_column(column)
    for report in baseline.reports:
        table.add_row(
            report.rollout.rollout_id,
            report.rollout.input["question"],
            report.rollout.status,
            str(report.final_reward),
            str(len(report.spans)),
            str(len(find_llm_calls(report.spans, agent_match="^math_agent$"))),
            str(len(find_llm_calls(report.spans, agent_match="^coordinator$"))),
        )
    console.print(table)

    first = baseline.reports[0]
    spans = Table(title=f"Adapter spans of {first.rollout.rollout_id} ({first.rollout.input['question']})")
    for column in ("span", "agent", "response id / tool arguments", "result"):
        spans.add_column(column)
    for span in first.spans:
        attributes = span.attributes
        if attributes.get("agentlightning.framework") != "agent_framework":
            continue  # Agent Framework's own spans
        spans.add_row(
            span.name,
            str(attributes.get("gen_ai.agent.name", "")),
            str(attributes.get("gen_ai.response.id") or attributes.get("gen_ai.tool.call.arguments") or ""),
            str(attributes.get("gen_ai.tool.call.result", "")),
        )
    console.print(spans)


if __name__ == "__main__":
    main()
