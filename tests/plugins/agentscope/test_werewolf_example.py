"""examples/werewolf: concurrent games on the fake server never mix their spans, and only the trained
player's calls become training data, each with its game's outcome."""

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

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "werewolf"
sys.path.insert(0, str(EXAMPLE))

from game import (  # noqa: E402
    PLAYERS,
    SPEECH_CHARS,
    TRAINEE,
    TRAINEE_MATCH,
    WerewolfAgent,
    make_tasks,
    scripted_moves,
)

GAMES = 8
_TAG = re.compile(r"\[(g\d+)\]")


@pytest.fixture(scope="module")
def played() -> Dict[str, Any]:
    """Eight games, four at a time in one runner, on the fake server's scripted players."""
    with FakeOpenAIServer(policy=scripted_moves) as server:
        llm = agl.LLM(endpoint=server.base_url, model="fake-model")
        baseline = agl.Baseline(max_queue_length=GAMES)
        trainer = agl.Trainer(
            algorithm=baseline,
            adapter=TracerTraceToTriplet(agent_match=TRAINEE_MATCH, reward_match="final", require_token_ids=False),
            n_runners=1,
            runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=4),
            run_dir=Path(tempfile.mkdtemp(prefix="agl-werewolf-test-")),
            initial_resources={"llm": llm, "opponents": llm.model_copy()},
        )
        agent = WerewolfAgent()
        trainer.dev(agent, make_tasks(GAMES))
        return {"reports": baseline.reports, "results": agent.results, "requests": len(server.requests)}


def test_every_game_finishes_with_its_outcome_as_reward(played: Dict[str, Any]) -> None:
    reports, results = played["reports"], played["results"]
    assert len(reports) == GAMES and all(report.rollout.status == "succeeded" for report in reports)
    for report in reports:
        result = results[report.rollout.input["game"]]
        assert result.winner in ("village", "werewolf")
        assert result.roles[TRAINEE] == report.rollout.input["trainee_role"]
        assert report.final_reward == result.reward_for(TRAINEE)
    # The scripted players make both sides win (the rewards are not constant).
    assert {report.final_reward for report in reports} == {0.0, 1.0}
    assert played["requests"] == sum(sum(result.calls.values()) for result in results.values())


def test_the_spans_of_concurrent_games_never_mix(played: Dict[str, Any]) -> None:
    for report in played["reports"]:
        game = report.rollout.input["game"]
        adapter_spans = [span for span in report.spans if span.attributes.get(FrameworkAttributes.FRAMEWORK)]
        assert adapter_spans
        for span in adapter_spans:
            tags = set(_TAG.findall(json.dumps(span.attributes)))
            assert tags <= {game}, f"{span.name} of {game} mentions {tags}"
        # Every call the game made is in its rollout, and no other.
        calls = find_llm_calls(report.spans)
        assert len(calls) == sum(played["results"][game].calls.values())
        assert {call.agent_name for call in calls} <= set(PLAYERS)


def test_only_the_trainee_calls_become_training_data(played: Dict[str, Any]) -> None:
    for report in played["reports"]:
        result = played["results"][report.rollout.input["game"]]
        triplets = report.adapted
        assert len(triplets) == result.calls[TRAINEE]
        for triplet in triplets:
            assert triplet.metadata["agent_name"] == TRAINEE
            assert triplet.reward == report.final_reward
            system = triplet.prompt["request"]["messages"][0]
            assert f"You are {TRAINEE}," in json.dumps(system)
        others = find_llm_calls(report.spans, agent_match="^(?!Player1$)")
        assert len(others) == sum(result.calls.values()) - result.calls[TRAINEE]
        assert all(f"You are {TRAINEE}," not in json.dumps(call.request) for call in others)
    assert any(report.adapted for report in played["reports"])


def _mumbling_trainee(body: Mapping[str, Any]) -> Optional[FakeReply]:
    """The scripted players, except that the trainee never names a player and makes long speeches that
    copy another game's tag (what a small model does)."""
    system = json.dumps((body.get("messages") or [{}])[0])
    if f"You are {TRAINEE}," not in system:
        return scripted_moves(body)
    return FakeReply.text("[g99] Day 5: hmm, hard to say. " + "I have more to add. " * 20)


def test_answers_that_name_nobody_get_the_default_move_and_never_stall_the_game() -> None:
    tasks = make_tasks(4, seed=20)
    with FakeOpenAIServer(policy=_mumbling_trainee) as server:
        llm = agl.LLM(endpoint=server.base_url, model="fake-model")
        baseline = agl.Baseline(max_queue_length=len(tasks))
        trainer = agl.Trainer(
            algorithm=baseline,
            n_runners=1,
            runner=agl.LitAgentRunner(agl.OtelTracer(), concurrency=4),
            run_dir=Path(tempfile.mkdtemp(prefix="agl-werewolf-test-")),
            initial_resources={"llm": llm, "opponents": llm.model_copy()},
        )
        agent = WerewolfAgent()
        trainer.dev(agent, tasks)
    assert all(report.rollout.status == "succeeded" for report in baseline.reports)
    results = [agent.results[task["game"]] for task in tasks]
    assert sum(result.moves[TRAINEE] for result in results) > 0
    for result in results:
        # Every move of the trainee was a default move, counted; nobody else's was.
        assert result.invalid_moves[TRAINEE] == result.moves[TRAINEE]
        assert sum(result.invalid_moves.values()) == result.moves[TRAINEE]
    # The others hear the trainee's first sentence only, without the foreign tag.
    heard = [
        json.dumps(call.request)
        for report in baseline.reports
        for call in find_llm_calls(report.spans, agent_match="^(?!Player1$)")
    ]
    speeches = [text for text in heard if f"{TRAINEE} says:" in text]
    assert speeches and all("g99" not in text and "more to add" not in text for text in heard)
    assert all(f"{TRAINEE} says: Day 5: hmm, hard to say." in text for text in speeches)
    assert len("Day 5: hmm, hard to say.") <= SPEECH_CHARS


# A fresh interpreter importing AgentScope: on a loaded machine it outlasts the default 120 s.
@pytest.mark.timeout(300)
def test_the_example_script_prints_the_win_rate() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "werewolf.py"), "--games", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Player1's win rate: \d+% over 4 games \(4 finished", result.stdout), result.stdout
    assert "WARNING" not in result.stdout + result.stderr
