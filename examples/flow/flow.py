"""A planner / executor / verifier flow on AgentScope where only the planner learns (Flow-GRPO style).

    python examples/flow/flow.py                    # Trainer.dev over 6 problems on the fake server (scripted agents)
    python examples/flow/flow.py --model embedded   # 4 problems on the embedded default model (CPU)

A problem is an arithmetic expression such as ``(17*3)+(120/8)``. Each turn the **planner** names the
next step (one small expression over numbers it already has) or ends with ``FINAL <number>``; the
**executor** computes the step with its calculator tool; the **verifier** checks the step and says ``OK``
or ``WRONG``. The flow stops at the planner's answer or after :data:`MAX_TURNS` turns. One reward for the
whole flow: 1.0 when the final answer is right, else 0.0.

Nothing a model says stalls the flow: the step's result is the last number of the executor's answer (a
step whose answer has no number gives no result and is not verified), the executor gets at most
:data:`EXECUTOR_ITERATIONS` reasoning-acting rounds per step, and a flow without ``FINAL <number>`` after
:data:`MAX_TURNS` turns earns 0.

All three are ordinary AgentScope agents. The AgentScope adapter names every span after its agent, so the
trace adapter ``TracerTraceToTriplet(agent_match="^Planner$", reward_match="final")`` turns a flow into the
planner's triplets only (one per planner turn), each carrying the flow's final reward: the executor and the
verifier stay fixed. Under ``Trainer.fit`` the LLM proxy adds the token ids to those triplets; in this dry
run there are none, so the adapter is told not to require them.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import operator
import re
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from agentscope.agent import Agent, ContextConfig, InjectionConfig, ModelConfig, ReActConfig
from agentscope.credential import OpenAICredential
from agentscope.message import UserMsg
from agentscope.model import OpenAIChatModel
from agentscope.permission import PermissionBehavior, PermissionDecision
from agentscope.tool import FunctionTool, Toolkit
from rich.console import Console
from rich.table import Table

import agentlightning as agl
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.adapter.triplet import TracerTraceToTriplet
from agentlightning.types import NamedResources, ProxyLLM, Rollout

PLANNER, EXECUTOR, VERIFIER = "Planner", "Executor", "Verifier"
PLANNER_MATCH = f"^{PLANNER}$"
"""``agent_match`` that selects the planner's LLM calls."""
MAX_TURNS = 5
EXECUTOR_ITERATIONS = 3
PROMPTS = {
    PLANNER: (
        "You plan arithmetic. Each turn, give the next step as one small expression over numbers you already "
        "have, or 'FINAL <number>' when you know the answer. Answer with the step only."
    ),
    EXECUTOR: "You compute the expression you are given with the calculator tool and answer with the number.",
    VERIFIER: "You check one computed step. Answer OK if the result is right, WRONG otherwise.",
}
MAX_TOKENS = {PLANNER: 24, EXECUTOR: 48, VERIFIER: 8}
"""Answer lengths per agent, unless the ``LLM`` resource sets ``max_tokens``: steps and verdicts are short."""
_OPERATORS: Dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FINAL = re.compile(r"FINAL\s+(-?\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression (numbers, + - * /, parentheses); ValueError for anything else."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return float(_OPERATORS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"not an arithmetic expression: {expression!r}")

    try:
        return walk(ast.parse(expression.strip(), mode="eval"))
    except (SyntaxError, ZeroDivisionError) as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from None


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as (17*3)+(120/8).

    Args:
        expression: the expression to evaluate.
    """
    return number(evaluate(expression))


def make_agent(name: str, llm: agl.LLM, tools: Optional[Toolkit] = None) -> Agent:
    sampling = llm.sampling_parameters
    model = OpenAIChatModel(
        credential=OpenAICredential(api_key=llm.api_key or "unused", base_url=llm.endpoint),
        model=llm.model,
        parameters=OpenAIChatModel.Parameters(
            max_tokens=sampling.get("max_tokens", MAX_TOKENS[name]), temperature=sampling.get("temperature", 0.7)
        ),
        stream=False,
        max_retries=0,
    )
    return Agent(
        name=name,
        system_prompt=PROMPTS[name],
        model=model,
        toolkit=tools,
        model_config=ModelConfig(max_retries=0),
        react_config=ReActConfig(max_iters=EXECUTOR_ITERATIONS),
        context_config=ContextConfig(compression_tool_enabled=False),
        injection_config=InjectionConfig(inject_runtime_state=False),
    )


class PlanExecuteVerify(agl.LitAgent[Dict[str, Any]]):
    """The rollout: one problem through the flow. Resources: ``llm`` (the planner's, trained) and ``fixed``
    (the executor's and the verifier's)."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: Dict[str, int] = {}  # planner turns per problem id, for reports and tests
        self.answers: Dict[str, Optional[str]] = {}  # the planner's final answer per problem id
        self.seconds: Dict[str, float] = {}  # wall-clock time per problem id

    async def rollout_async(self, task: Dict[str, Any], resources: NamedResources, rollout: Rollout) -> float:
        planner_llm, fixed_llm = resources["llm"], resources.get("fixed", resources["llm"])
        if isinstance(planner_llm, ProxyLLM):
            planner_llm = planner_llm.with_attempted_rollout(rollout)
        assert isinstance(planner_llm, agl.LLM) and isinstance(fixed_llm, agl.LLM)
        toolkit = Toolkit()
        allowed = PermissionDecision(behavior=PermissionBehavior.ALLOW, message="the calculator is always allowed")
        await toolkit.add_tool(FunctionTool(calculator, permission=allowed))
        planner = make_agent(PLANNER, planner_llm)
        executor = make_agent(EXECUTOR, fixed_llm, toolkit)
        verifier = make_agent(VERIFIER, fixed_llm)

        started = time.perf_counter()
        tag = f"[{task['id']}]"
        results: List[str] = []
        answer: Optional[str] = None
        turns = 0
        for turn in range(1, MAX_TURNS + 1):
            turns = turn
            have = ", ".join(results) if results else "none yet"
            plan = await planner.reply(
                UserMsg(name="user", content=f"{tag} Problem: {task['problem']}. Turn {turn}. Results so far: {have}.")
            )
            step = (plan.get_text_content() or "").strip()
            final = _FINAL.search(step)
            if final is not None:
                answer = final.group(1)
                break
            done = await executor.reply(UserMsg(name="user", content=f"{tag} Compute: {step}"))
            numbers = _NUMBER.findall(done.get_text_content() or "")
            if not numbers:  # nothing computed: the planner sees no new result
                continue
            result = numbers[-1]
            verdict = await verifier.reply(
                UserMsg(name="user", content=f"{tag} Step {step} gave {result}. OK or WRONG?")
            )
            if "WRONG" not in (verdict.get_text_content() or "").upper():
                results.append(result)
        self.turns[task["id"]] = turns
        self.answers[task["id"]] = answer
        self.seconds[task["id"]] = time.perf_counter() - started
        return 1.0 if answer is not None and abs(float(answer) - evaluate(task["problem"])) < 1e-6 else 0.0


def make_tasks(count: int, seed: int = 0) -> List[Dict[str, Any]]:
    """Problems of the form ``(a*b)+(c-d)``, drawn from ``seed``."""
    tasks = []
    for index in range(count):
        digest = hashlib.sha256(f"{seed}-{index}".encode()).digest()
        a, b, c, d = (2 + value % 20 for value in digest[:4])
        tasks.append({"id": f"p{seed + index}", "problem": f"({a}*{b})+({c + d}-{d})"})
    return tasks


# -- scripted agents for the fake OpenAI server --------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content or "")


def scripted_flow(body: Mapping[str, Any]) -> Optional[Any]:
    """The fake server's policy for the three agents (a ``FakeReply``, or None for other requests).

    The planner computes each parenthesised group, then combines them, then answers; in problems whose
    digest says so it answers one too high (so rewards differ). The executor calls its calculator, then
    reports the tool's result; the verifier says OK.
    """
    from agentlightning_testing.fake_openai import FakeReply

    messages = body.get("messages") or []
    system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
    question = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    if system.startswith("You plan"):
        problem = question.split("Problem: ", 1)[1].split(". Turn", 1)[0]
        have = question.split("Results so far: ", 1)[1].rstrip(".")
        results = [] if have == "none yet" else have.split(", ")
        groups = re.findall(r"\(([^()]+)\)", problem)
        if len(results) < len(groups):
            return FakeReply.text(groups[len(results)])
        if len(results) == len(groups):
            combine = re.sub(r"\([^()]+\)", "{}", problem).format(*results)
            return FakeReply.text(combine)
        sloppy = hashlib.sha256(problem.encode()).digest()[0] % 3 == 0
        return FakeReply.text(f"FINAL {number(float(results[-1]) + (1 if sloppy else 0))}")
    if system.startswith("You compute"):
        last_user = max(index for index, m in enumerate(messages) if m.get("role") == "user")
        tool_results = [m for m in messages[last_user:] if m.get("role") == "tool"]  # of this step
        if not tool_results:
            step = question.split("Compute: ", 1)[1]
            return FakeReply.tool_call("calculator", {"expression": step})
        return FakeReply.text(_text(tool_results[-1].get("content")))
    if system.startswith("You check"):
        return FakeReply.text("OK")
    return None


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["fake", "embedded"], default="fake")
    parser.add_argument("--problems", type=int, default=None, help="default: 6 on the fake server, 4 on the model")
    parser.add_argument("--concurrency", type=int, default=3, help="flows run at once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    problems = args.problems or (6 if args.model == "fake" else 4)
    console = Console()
    run_dir = Path(tempfile.mkdtemp(prefix="agl-flow-"))

    with ExitStack() as stack:
        if args.model == "fake":
            from agentlightning_testing.fake_openai import FakeOpenAIServer

            server = stack.enter_context(FakeOpenAIServer(policy=scripted_flow))
            llm = agl.LLM(endpoint=server.base_url, model="fake-model")
        else:
            from transformers.utils import logging as transformers_logging

            from agentlightning_embedded import ModelServer, ensure_default_model

            warnings.filterwarnings("ignore", category=FutureWarning)  # the model libraries' deprecations
            transformers_logging.disable_progress_bar()  # the run prints its own progress
            # An executor stopped at its round limit shows in the table (its turns and calls), not as a warning.
            logging.getLogger("as").setLevel(logging.ERROR)
            console.print("starting the embedded default model ...")
            model = stack.enter_context(
                ModelServer.from_pretrained(str(ensure_default_model()), port=0, served_model_name="default")
            )
            llm = agl.LLM(endpoint=model.base_url, model="default", sampling_parameters={"temperature": 0.7})
        baseline = agl.Baseline(max_queue_length=problems)
        trainer = agl.Trainer(
            algorithm=baseline,
            adapter=TracerTraceToTriplet(agent_match=PLANNER_MATCH, reward_match="final", require_token_ids=False),
            n_runners=1,
            runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=args.concurrency),
            run_dir=run_dir,
            initial_resources={"llm": llm, "fixed": llm.model_copy()},
        )
        flow = PlanExecuteVerify()
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.dev(flow, make_tasks(problems, args.seed))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    table = Table(title=f"Plan / execute / verify, {PLANNER} trained ({run_dir / 'store.db'})")
    for column in ("problem", "answer", "reward", "turns", "LLM calls", "planner triplets", "their rewards", "s"):
        table.add_column(column)
    reports = sorted(baseline.reports, key=lambda r: r.rollout.input["id"])
    for report in reports:
        problem = report.rollout.input["id"]
        triplets = report.adapted or []
        table.add_row(
            report.rollout.input["problem"],
            str(flow.answers.get(problem)),
            str(report.final_reward),
            str(flow.turns.get(problem)),
            str(len(find_llm_calls(report.spans))),
            str(len(triplets)),
            json.dumps(sorted({t.reward for t in triplets})),
            f"{flow.seconds.get(problem, 0.0):.0f}",
        )
    console.print(table)
    finished = [r for r in reports if r.rollout.status == "succeeded"]
    n = max(1, len(finished))
    calls = {name: sum(len(find_llm_calls(r.spans, agent_match=f"^{name}$")) for r in finished) for name in PROMPTS}
    triplets = [t for r in finished for t in (r.adapted or [])]
    summary = {
        "problems": len(reports),
        "finished": len(finished),
        "solved": sum(r.final_reward or 0.0 for r in finished),
        "mean_planner_turns": sum(flow.turns[r.rollout.input["id"]] for r in finished) / n,
        "llm_calls_per_flow": {name: count / n for name, count in calls.items()},
        "planner_triplets": len(triplets),
        "triplets_with_the_final_reward": sum(
            1 for r in finished for t in (r.adapted or []) if t.reward == r.final_reward
        ),
        "mean_flow_seconds": sum(flow.seconds[r.rollout.input["id"]] for r in finished) / n,
        "wall_seconds": elapsed,
        "cpu_seconds": cpu,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"solved {summary['solved']:.0f} of {len(reports)} ({len(finished)} finished); "
        f"training data: the planner's turns only"
    )
    per_flow = ", ".join(f"{name} {count:.1f}" for name, count in summary["llm_calls_per_flow"].items())
    console.print(
        f"per flow: {summary['mean_planner_turns']:.1f} planner turns, LLM calls {per_flow}, "
        f"{summary['mean_flow_seconds']:.0f} s; {summary['planner_triplets']} planner triplets, "
        f"{summary['triplets_with_the_final_reward']} carrying their flow's final reward"
    )
    console.print(f"{elapsed:.1f} s wall, {cpu / 60:.1f} CPU-minutes ({run_dir / 'summary.json'})")


if __name__ == "__main__":
    main()
