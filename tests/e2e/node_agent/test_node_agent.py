"""A Node.js agent trains with no Python in its process: `agl store serve`, `agl proxy` and a fake
OpenAI backend, two `node runner.js` processes, and the Baseline driver (examples/node_agent/train.py)
for 8 rollouts. Then the store is read back: rewards, token ids, tool spans, triplets.

Needs Node.js and `npm ci` in examples/node_agent (the `node_agent` nox session does both).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import httpx
import pytest
from node_helpers import EXAMPLE, ROOT, Process, start_store_and_proxy

from agentlightning.adapter import TracerTraceToTriplet
from agentlightning.emitter import find_final_reward
from agentlightning.semconv import LLMCallAttributes
from agentlightning.store.client import HttpLightningStore
from agentlightning.types import Span
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

N_ROLLOUTS = 8
WORKERS = ["node-runner-1", "node-runner-2"]

pytestmark = pytest.mark.timeout(300)


def _example_tasks() -> List[Dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("node_agent_train", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tasks: List[Dict[str, Any]] = module.make_tasks(N_ROLLOUTS, seed=0)
    return tasks


@dataclass
class Run:
    store_url: str
    tasks: List[Dict[str, Any]]
    expected: Dict[str, Dict[str, Any]]  # by question: the scripted expression, its result and the reward
    driver: subprocess.CompletedProcess[str]
    runner_exit_codes: List[int]
    runner_output: str
    spans: Dict[str, List[Span]] = field(default_factory=dict)  # by rollout id
    rollouts: List[Any] = field(default_factory=list)


def _script(fake: FakeOpenAIServer, tasks: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Each task's first model call asks for the calculator; every other one gets the wrong expression
    (a sum instead of the product), so rewards differ. The second call is the fake's default answer,
    'The result is <tool result>.'."""
    expected: Dict[str, Dict[str, Any]] = {}
    for index, task in enumerate(tasks):
        a, b = re.findall(r"\d+", task["question"])
        expression = f"{a} * {b}" if index % 2 == 0 else f"{a} + {b}"
        result = int(a) * int(b) if index % 2 == 0 else int(a) + int(b)
        fake.enqueue_for(task["question"], FakeReply.tool_call("calculator", {"expression": expression}))
        expected[task["question"]] = {
            "expression": expression,
            "result": str(result),
            "reward": 1.0 if result == task["answer"] else 0.0,
        }
    return expected


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if shutil.which("node") is None or not (EXAMPLE / "node_modules").is_dir():
        pytest.fail("needs Node.js and `npm ci` in examples/node_agent: run `nox -s node_agent`")
    tasks = _example_tasks()
    assert len({t["question"] for t in tasks}) == N_ROLLOUTS  # each question is its own marker
    folder = tmp_path_factory.mktemp("node_agent")
    processes: List[Process] = []
    with FakeOpenAIServer(default_delay=0.02) as fake:
        expected = _script(fake, tasks)
        try:
            store_url, proxy_url = start_store_and_proxy(processes, fake, f"sqlite:///{folder / 'store.db'}")
            runners = [
                Process(worker, ["node", "runner.js", "--store", store_url, "--worker-id", worker], cwd=EXAMPLE)
                for worker in WORKERS
            ]
            processes.extend(runners)
            for runner in runners:
                runner.wait_for_line(r"runner ready")
            driver = subprocess.run(
                [
                    sys.executable,
                    str(EXAMPLE / "train.py"),
                    "--store",
                    store_url,
                    "--proxy",
                    proxy_url,
                    "--model",
                    "fake-model",
                    "--tasks",
                    str(N_ROLLOUTS),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=180,
            )
            exit_codes = [runner.stop() for runner in runners]
            result = Run(
                store_url=store_url,
                tasks=tasks,
                expected=expected,
                driver=driver,
                runner_exit_codes=exit_codes,
                runner_output="\n".join(runner.output for runner in runners),
            )
            asyncio.run(_read_back(result))
            yield result
        finally:
            for process in reversed(processes):
                process.stop()


async def _read_back(run: Run) -> None:
    store = HttpLightningStore(run.store_url)
    try:
        run.rollouts = list(await store.query_rollouts(sort_by="rollout_id"))
        for rollout in run.rollouts:
            run.spans[rollout.rollout_id] = list(await store.query_spans(rollout.rollout_id, "latest"))
    finally:
        await store.close()


def _by_name(spans: List[Span], name: str) -> List[Span]:
    return [span for span in spans if span.name == name]


def _llm_spans(spans: List[Span]) -> List[Span]:
    return [span for span in spans if LLMCallAttributes.PROMPT_TOKEN_IDS in span.attributes]


def test_the_driver_and_both_runners_finish_cleanly(run: Run) -> None:
    assert run.driver.returncode == 0, run.driver.stdout + run.driver.stderr
    assert f"{N_ROLLOUTS}/{N_ROLLOUTS} rollouts succeeded" in run.driver.stdout
    assert run.runner_exit_codes == [0, 0], run.runner_output
    assert all(f"[{worker}] stopped after" in run.runner_output for worker in WORKERS)
    assert "failed" not in run.runner_output and "Error" not in run.runner_output, run.runner_output


def test_each_rollout_succeeded_with_its_reward(run: Run) -> None:
    assert len(run.rollouts) == N_ROLLOUTS
    rewards: List[Optional[float]] = []
    workers = set()
    for rollout in run.rollouts:
        assert rollout.status == "succeeded"
        assert rollout.attempt.status == "succeeded" and rollout.attempt.sequence_id == 1
        workers.add(rollout.attempt.worker_id)
        reward = find_final_reward(run.spans[rollout.rollout_id])
        assert reward == run.expected[rollout.input["question"]]["reward"], rollout.input
        rewards.append(reward)
    assert sorted(rewards) == [0.0] * 4 + [1.0] * 4
    assert workers == set(WORKERS)  # both Node processes took rollouts
    # the driver's report agrees with the store
    for rollout in run.rollouts:
        expected = run.expected[rollout.input["question"]]["reward"]
        assert re.search(rf"{rollout.rollout_id} succeeded\s+reward {expected}\b", run.driver.stdout), run.driver.stdout


def test_llm_calls_carry_token_ids_from_the_proxy(run: Run) -> None:
    for rollout in run.rollouts:
        spans = run.spans[rollout.rollout_id]
        calls = _llm_spans(spans)
        assert len(calls) == 2, [s.name for s in spans]  # the tool call, then the answer
        for call in calls:
            attributes = call.attributes
            assert attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] == "engine"
            prompt_ids = attributes[LLMCallAttributes.PROMPT_TOKEN_IDS]
            request = json.loads(bytes(prompt_ids).decode())  # the fake's ids: the UTF-8 of the messages
            assert request[1] == {"role": "user", "content": rollout.input["question"]}
        answer = bytes(calls[1].attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]).decode()
        assert answer == f"The result is {run.expected[rollout.input['question']]['result']}."


def test_the_tool_span_sits_under_its_rollout(run: Run) -> None:
    for rollout in run.rollouts:
        spans = run.spans[rollout.rollout_id]
        (root,) = _by_name(spans, "agentlightning.rollout")
        (tool,) = _by_name(spans, "tool.calculator")
        (reward,) = _by_name(spans, "agentlightning.annotation")
        expected = run.expected[rollout.input["question"]]
        for span in (root, tool, reward):
            assert span.rollout_id == rollout.rollout_id and span.attempt_id == rollout.attempt.attempt_id
            assert span.attributes["agentlightning.rollout_id"] == rollout.rollout_id
            assert span.attributes["agentlightning.attempt_id"] == rollout.attempt.attempt_id
        assert tool.parent_id == root.span_id and tool.trace_id == root.trace_id
        assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"expression": expected["expression"]}
        assert tool.attributes["gen_ai.tool.call.result"] == expected["result"]
        assert reward.parent_id == root.span_id
        # the proxy's LLM spans nest under the same rollout span (W3C traceparent from the Node runner)
        for call in _llm_spans(spans):
            assert call.trace_id == root.trace_id and call.parent_id == root.span_id
        # the reward is recorded after every LLM call
        assert reward.sequence_id > max(call.sequence_id for call in _llm_spans(spans))


def test_the_adapter_turns_them_into_triplets(run: Run) -> None:
    adapter = TracerTraceToTriplet()
    for rollout in run.rollouts:
        spans = run.spans[rollout.rollout_id]
        triplets = adapter.adapt(spans)
        calls = _llm_spans(spans)
        assert len(triplets) == len(calls) == 2
        for triplet, call in zip(triplets, calls, strict=True):
            assert triplet.prompt["token_ids"] == call.attributes[LLMCallAttributes.PROMPT_TOKEN_IDS]
            assert triplet.response["token_ids"] == call.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]
        final = run.expected[rollout.input["question"]]["reward"]
        assert [t.reward for t in triplets] == [None, final]  # the reward goes to the last call before it


def test_store_server_still_healthy(run: Run) -> None:
    response = httpx.get(f"{run.store_url}/v1/agl/health", timeout=5)
    assert response.status_code == 200
