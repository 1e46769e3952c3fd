"""The APO example (examples/apo/room_selector.py): its tasks, its exact reward, its agent's tool loop."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import agentlightning as agl
from agentlightning.types import Rollout
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples" / "apo"))
import room_selector  # noqa: E402


def test_every_task_has_one_best_room_and_the_reward_is_exact() -> None:
    tasks = room_selector.make_tasks(30, seed=1)
    assert tasks == room_selector.make_tasks(30, seed=1)  # seeded
    for task in tasks:
        best = room_selector.best_room(task)
        assert best is not None
        room = next(r for r in task["rooms"] if r["id"] == best)
        assert room["capacity"] >= task["people"] and task["hour"] not in room["booked"]
        assert all(room[need] for need in task["needs"])
        assert room_selector.reward(task, best) == 1.0
        others = [r for r in task["rooms"] if r["id"] != best]
        for other in others:
            expected = 0.5 if room_selector.fits(task, other) else 0.0
            assert room_selector.reward(task, other["id"]) == expected
        assert room_selector.reward(task, None) == 0.0
    assert room_selector.parse_answer("I pick R2, no wait: Room: R5") == "R5"


def test_the_agent_calls_the_tool_and_is_rewarded_for_its_answer() -> None:
    task = room_selector.make_tasks(1, seed=3)[0]
    best = room_selector.best_room(task)
    resources: Any = {
        "system_prompt": agl.PromptTemplate(template=room_selector.SYSTEM_PROMPT),
        "request_prompt": agl.PromptTemplate(template=room_selector.REQUEST_PROMPT),
    }
    rollout = Rollout(rollout_id="r", input=task, start_time=time.time())
    with FakeOpenAIServer() as server:
        server.enqueue(FakeReply.tool_call("list_rooms", {}), FakeReply.text(f"Room: {best}"))
        resources["main_llm"] = agl.LLM(endpoint=server.base_url, model="fake-model")
        reward = asyncio.run(room_selector.RoomSelector().rollout_async(task, resources, rollout))
        second = server.requests[1]["messages"]
    assert reward == 1.0
    assert second[-1]["role"] == "tool" and '"R1"' in second[-1]["content"]  # the listing went back to the model
    assert second[1]["content"] == task["request"]
