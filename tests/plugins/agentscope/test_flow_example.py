"""examples/flow: concurrent flows never mix their spans, and the adapter turns each flow into the planner's
triplets only, every one carrying the flow's final reward."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import pytest

import agentlightning as agl
from agentlightning.adapter.llm_calls import find_llm_calls
from agentlightning.adapter.triplet import TracerTraceToTriplet
from agentlightning.semconv import FrameworkAttributes
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flow"
sys.path.insert(0, str(EXAMPLE))

from flow import (  # noqa: E402
    EXECUTOR,
    MAX_TURNS,
    PLANNER,
    PLANNER_MATCH,
    PROMPTS,
    PlanExecuteVerify,
    make_tasks,
    scripted_flow,
)

PROBLEMS = 6
_TAG = re.compile(r"\[(p\d+)\]")


@pytest.fixture(scope="module")
def ran() -> Dict[str, Any]:
    with FakeOpenAIServer(policy=scripted_flow) as server:
        llm = agl.LLM(endpoint=server.base_url, model="fake-model")
        baseline = agl.Baseline(max_queue_length=PROBLEMS)
        trainer = agl.Trainer(
            algorithm=baseline,
            adapter=TracerTraceToTriplet(agent_match=PLANNER_MATCH, reward_match="final", require_token_ids=False),
            n_runners=1,
            runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=3),
            run_dir=Path(tempfile.mkdtemp(prefix="agl-flow-test-")),
            initial_resources={"llm": llm, "fixed": llm.model_copy()},
        )
        flow = PlanExecuteVerify()
        trainer.dev(flow, make_tasks(PROBLEMS))
        return {"reports": baseline.reports, "turns": flow.turns}


def test_each_flow_gives_only_planner_triplets_with_the_final_reward(ran: Dict[str, Any]) -> None:
    reports = ran["reports"]
    assert len(reports) == PROBLEMS and all(report.rollout.status == "succeeded" for report in reports)
    assert {report.final_reward for report in reports} == {0.0, 1.0}
    for report in reports:
        turns = ran["turns"][report.rollout.input["id"]]
        triplets = report.adapted
        assert len(triplets) == turns >= 2
        for triplet in triplets:
            assert triplet.metadata["agent_name"] == PLANNER
            assert triplet.reward == report.final_reward
            assert triplet.prompt["request"]["messages"][0]["content"][0]["text"] == PROMPTS[PLANNER]
        # The fixed agents ran (the executor twice per step: its tool call, then its answer) but give no triplet.
        steps = turns - 1
        assert len(find_llm_calls(report.spans, agent_match="^Executor$")) == 2 * steps
        assert len(find_llm_calls(report.spans, agent_match="^Verifier$")) == steps
        assert len(find_llm_calls(report.spans)) == turns + 3 * steps


def test_the_spans_of_concurrent_flows_never_mix(ran: Dict[str, Any]) -> None:
    for report in ran["reports"]:
        problem = report.rollout.input["id"]
        spans = [span for span in report.spans if span.attributes.get(FrameworkAttributes.FRAMEWORK)]
        assert spans
        for span in spans:
            tags = set(_TAG.findall(json.dumps(span.attributes)))
            assert tags <= {problem}, f"{span.name} of {problem} mentions {tags}"


def _executor_without_numbers(body: Mapping[str, Any]) -> Optional[FakeReply]:
    """The scripted agents, except that the executor never uses its tool and answers without a number."""
    if json.dumps(body.get("messages") or []).find(PROMPTS[EXECUTOR]) >= 0:
        return FakeReply.text("I would rather not compute that.")
    return scripted_flow(body)


def test_a_step_without_a_number_is_not_verified_and_the_flow_ends_after_its_turns() -> None:
    with FakeOpenAIServer(policy=_executor_without_numbers) as server:
        llm = agl.LLM(endpoint=server.base_url, model="fake-model")
        baseline = agl.Baseline(max_queue_length=2)
        trainer = agl.Trainer(
            algorithm=baseline,
            adapter=TracerTraceToTriplet(agent_match=PLANNER_MATCH, reward_match="final", require_token_ids=False),
            n_runners=1,
            runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=2),
            run_dir=Path(tempfile.mkdtemp(prefix="agl-flow-test-")),
            initial_resources={"llm": llm, "fixed": llm.model_copy()},
        )
        flow = PlanExecuteVerify()
        trainer.dev(flow, make_tasks(2, seed=5))
    for report in baseline.reports:
        assert report.rollout.status == "succeeded" and report.final_reward == 0.0
        assert flow.turns[report.rollout.input["id"]] == MAX_TURNS
        assert flow.answers[report.rollout.input["id"]] is None
        assert find_llm_calls(report.spans, agent_match="^Verifier$") == []
        assert len(find_llm_calls(report.spans, agent_match="^Executor$")) == MAX_TURNS
        assert [t.reward for t in report.adapted] == [0.0] * MAX_TURNS


# A fresh interpreter importing AgentScope: on a loaded machine it outlasts the default 120 s.
@pytest.mark.timeout(300)
def test_the_example_script_runs() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "flow.py"), "--problems", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"solved \d of 3 \(3 finished\); training data: the planner's turns only", result.stdout)
    assert re.search(r"(\d+) planner triplets, \1 carrying their flow's final reward", result.stdout), result.stdout
    assert "WARNING" not in result.stdout + result.stderr
