"""Dry-run an OpenAI Agents SDK agent with ``Trainer.dev`` and show the spans the adapter recorded.

A triage agent hands arithmetic over to a math agent, which uses a calculator tool: plain Agents SDK
code with nothing of Agent Lightning in it. The runner turns the adapter on when it starts; each LLM
and tool span names its agent (``gen_ai.agent.name``), which is what ``agent_match`` selects on. The
agents use the SDK's default kind of model (the Responses API). A local OpenAI-compatible fake
server stands in for the model (scripted per task, so the run is deterministic and needs no GPU).

    pip install agentlightning agentlightning-openai-agents openai-agents
    python examples/openai_agents_dev.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List

from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from openai import AsyncOpenAI
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


@function_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as 2 * 21."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    value = eval(expression, {"__builtins__": {}})  # only digits and operators reach here
    return str(int(value) if float(value).is_integer() else value)


def build_agents(llm: agl.LLM) -> Agent[Any]:
    """Ordinary Agents SDK agents; nothing here knows about Agent Lightning."""
    client = AsyncOpenAI(base_url=llm.endpoint, api_key=llm.api_key or "unused", max_retries=0)
    model = OpenAIResponsesModel(model=llm.model, openai_client=client)
    math_agent = Agent(name="math_agent", instructions="Compute with the calculator.", tools=[calculator], model=model)
    return Agent(
        name="triage_agent", instructions="Hand arithmetic to the math agent.", handoffs=[math_agent], model=model
    )


@agl.rollout
async def math_agent(task: Dict[str, Any], llm: agl.LLM) -> float:
    result = await Runner.run(build_agents(llm), task["question"])
    return 1.0 if str(task["answer"]) in str(result.final_output) else 0.0


def main() -> None:
    console = Console()
    with FakeOpenAIServer() as model_server:
        # The stand-in model: hand over, call the calculator, then answer with its result.
        for task in TASKS:
            model_server.enqueue_for(
                task["question"],
                FakeReply.tool_call("transfer_to_math_agent", {}),
                FakeReply.tool_call("calculator", {"expression": task["expression"]}),
                FakeReply.text(f"The answer is {task['answer']}."),
            )
        run_dir = Path(tempfile.mkdtemp(prefix="agl-openai-agents-"))
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=2,
            run_dir=run_dir,
            initial_resources={"llm": agl.LLM(endpoint=model_server.base_url, model="fake-model")},
        )
        trainer.dev(math_agent, TASKS)

    table = Table(title=f"Trainer.dev of an OpenAI Agents SDK agent ({run_dir / 'store.db'})")
    for column in ("rollout", "question", "status", "reward", "spans", "LLM calls of 'math_agent'"):
        table.add_column(column)
    for report in baseline.reports:
        calls = find_llm_calls(report.spans, agent_match="^math_agent$")
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
    spans = Table(title=f"Adapter spans of {first.rollout.rollout_id} ({first.rollout.input['question']})")
    for column in ("span", "agent", "turn", "response id / tool call"):
        spans.add_column(column)
    for span in first.spans:
        attributes = span.attributes
        if "agentlightning.framework" not in attributes:
            continue
        spans.add_row(
            span.name,
            str(attributes.get("gen_ai.agent.name", "")),
            str(attributes.get("agentlightning.step.index", "")),
            str(attributes.get("gen_ai.response.id") or attributes.get("gen_ai.tool.call.arguments") or ""),
        )
    console.print(spans)


if __name__ == "__main__":
    main()
