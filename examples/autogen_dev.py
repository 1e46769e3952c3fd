"""Dry-run an AutoGen team with ``Trainer.dev`` and show the spans the AutoGen adapter recorded.

The agent is a plain AutoGen AgentChat team with no Agent Lightning code in it: a ``researcher``
(an ``AssistantAgent`` with a calculator tool) and a ``writer`` take turns in a
``RoundRobinGroupChat``. The runner turns the AutoGen adapter on when it starts. Each LLM and tool
span names its agent (``gen_ai.agent.name``), which is what ``agent_match`` selects on: here only the
researcher's calls would become training data. A local OpenAI-compatible fake server stands in for
the model (scripted per task, so the run is deterministic and needs no GPU).

    pip install agentlightning agentlightning-autogen agentlightning-testing \
        "autogen-agentchat>=0.7" "autogen-ext[openai]>=0.7"
    python examples/autogen_dev.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from rich.console import Console
from rich.table import Table

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
    """Evaluate an arithmetic expression such as 2 * 21."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    value = eval(expression, {"__builtins__": {}})  # only digits and operators reach here
    return str(int(value) if float(value).is_integer() else value)


def build_team(llm: agl.LLM) -> RoundRobinGroupChat:
    """An ordinary AutoGen team; nothing here knows about Agent Lightning."""
    client = OpenAIChatCompletionClient(
        model=llm.model,
        base_url=llm.endpoint,
        api_key=llm.api_key or "unused",
        max_retries=0,
        # Not a model AutoGen knows: say what it can do.
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "family": "unknown",
            "structured_output": False,
        },
    )
    researcher = AssistantAgent(
        "researcher",
        model_client=client,
        tools=[FunctionTool(calculator, description="Evaluate an arithmetic expression.")],
        system_message="Compute the answer with the calculator.",
        reflect_on_tool_use=True,
    )
    writer = AssistantAgent("writer", model_client=client, system_message="Report the result in one sentence.")
    # The task, the researcher's answer, the writer's sentence.
    return RoundRobinGroupChat([researcher, writer], termination_condition=MaxMessageTermination(3))


@agl.rollout
async def math_team(task: Dict[str, Any], llm: agl.LLM) -> float:
    result = await build_team(llm).run(task=task["question"])
    answer = result.messages[-1].to_text()
    return 1.0 if str(task["answer"]) in answer else 0.0


def adapter_spans(spans: List[Span]) -> List[Span]:
    return [span for span in spans if span.attributes.get("agentlightning.framework") == "autogen"]


def main() -> None:
    console = Console()
    with FakeOpenAIServer() as model_server:
        # The stand-in model: the researcher calls the calculator, then answers; the writer (whose
        # last message is the researcher's answer) reports it.
        for task in TASKS:
            model_server.enqueue_for(
                task["question"],
                FakeReply.tool_call("calculator", {"expression": task["expression"]}),
                FakeReply.text(f"Result: {task['answer']}"),
            )
            model_server.enqueue_for(
                f"Result: {task['answer']}",
                FakeReply.text(f"The answer to '{task['question']}' is {task['answer']}."),
            )
        run_dir = Path(tempfile.mkdtemp(prefix="agl-autogen-"))
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=2,
            run_dir=run_dir,
            initial_resources={"llm": agl.LLM(endpoint=model_server.base_url, model="fake-model")},
        )
        trainer.dev(math_team, TASKS)

    table = Table(title=f"Trainer.dev of an AutoGen team ({run_dir / 'store.db'})")
    for column in ("rollout", "question", "status", "reward", "spans", "LLM calls of the researcher", "of the writer"):
        table.add_column(column)
    for report in baseline.reports:
        table.add_row(
            report.rollout.rollout_id,
            report.rollout.input["question"],
            report.rollout.status,
            str(report.final_reward),
            str(len(report.spans)),
            str(len(find_llm_calls(report.spans, agent_match="^researcher$"))),
            str(len(find_llm_calls(report.spans, agent_match="^writer$"))),
        )
    console.print(table)

    first = baseline.reports[0]
    spans = Table(title=f"Adapter spans of {first.rollout.rollout_id} ({first.rollout.input['question']})")
    for column in ("span", "agent", "response id / tool call", "result"):
        spans.add_column(column)
    for span in adapter_spans(first.spans):
        attributes = span.attributes
        spans.add_row(
            span.name,
            str(attributes.get("gen_ai.agent.name", "")),
            str(attributes.get("gen_ai.response.id") or attributes.get("gen_ai.tool.call.arguments") or ""),
            str(attributes.get("gen_ai.tool.call.result", "")),
        )
    console.print(spans)


if __name__ == "__main__":
    main()
