"""APO end to end with a scripted optimizer LLM: a real Trainer, runners, LLM proxy and SQLite store.

The agent (apo_test_support.TwoPromptAgent) calls a fake OpenAI server through the proxy and is
rewarded by the words its prompts contain, so every scripted edit has a known score.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from apo_test_support import SEED_SYSTEM, SEED_USER, TRAIN, VAL, TwoPromptAgent, initial_resources

import agentlightning as agl
from agentlightning.cli import main as agl_main
from agentlightning.store import open_store
from agentlightning_apo import APO, METADATA_KEY, OptimizerEndpointError, check_edited_prompt
from agentlightning_apo.prompts import EditRejected, added_instructions, appended_template, rewritten_templates
from agentlightning_testing.fake_openai import FakeOpenAIServer, FakeReply

HERE = Path(__file__).parent


@pytest.fixture
def agent_llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default_text="Here is my answer.") as server:
        yield server


@pytest.fixture
def optimizer_llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=["optimizer"]) as server:
        yield server


def _apo(optimizer: FakeOpenAIServer, **overrides: Any) -> APO:
    settings: Dict[str, Any] = {
        "optimizer": {"base_url": optimizer.base_url, "model": "optimizer"},
        "beam_width": 2,
        "branch_factor": 1,
        "rounds": 2,
        "gradient_batch_size": 2,
        "optimizer_concurrency": 1,  # the scripted replies are consumed in a known order
        "progress": False,
    }
    settings.update(overrides)
    return APO(**settings)


def _fit(algorithm: APO, agent_llm: FakeOpenAIServer, tmp_path: Path, train: Any = TRAIN) -> str:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
    with agl.Trainer(
        algorithm=algorithm,
        runner=runner,
        store=uri,
        run_dir=tmp_path,
        initial_resources=initial_resources(agent_llm.base_url),
    ) as trainer:
        trainer.fit(TwoPromptAgent(), train, val_dataset=VAL)
    return uri


def _store_view(uri: str) -> Dict[str, Any]:
    async def read() -> Dict[str, Any]:
        store = open_store(uri)
        try:
            rollouts = list(await store.query_rollouts())
            latest = await store.get_latest_resources()
            journal = [r for r in rollouts if ((r.metadata or {}).get(METADATA_KEY) or {}).get("journal")]
            records: List[Any] = []
            for rollout in journal:
                records += [
                    (s.name, json.loads(s.attributes["agentlightning.apo.record"]))
                    for s in await store.query_spans(rollout.rollout_id)
                ]
            return {"rollouts": rollouts, "latest": latest, "journal": journal, "records": records}
        finally:
            await store.close()

    return asyncio.run(read())


def _evaluation_rollouts(view: Dict[str, Any]) -> List[Any]:
    return [r for r in view["rollouts"] if ((r.metadata or {}).get(METADATA_KEY) or {}).get("prompt_key")]


CAREFUL = "You are a careful assistant."
CAREFUL_UNITS = "You are a careful assistant. Always give the units."
USER_UNITS = "Question: {question}\nState the units."


def _script_two_rounds(optimizer: FakeOpenAIServer) -> None:
    optimizer.enqueue(
        # round 1, parent seed: the system edit is good, the user edit drops {question}
        FakeReply.text("The agent is not careful."),
        FakeReply.text(f"<prompt>{CAREFUL}</prompt>"),
        FakeReply.text("<prompt>Answer now.</prompt>"),
        # round 2, parent r1-p0-b0 (0.5): units in the system prompt; an empty user edit
        FakeReply.text("The agent forgets units."),
        FakeReply.text(f"```\n{CAREFUL_UNITS}\n```"),
        FakeReply.text(""),
        # round 2, parent seed (0.0): a refusal for the system prompt, units in the user prompt
        FakeReply.text("Mention units."),
        FakeReply.text("I'm sorry, I cannot rewrite prompts."),
        FakeReply.text(f"<prompt>{USER_UNITS}</prompt>"),
    )


def test_beam_search_over_two_templates_publishes_and_exports_the_best(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _script_two_rounds(optimizer_llm)
    algorithm = _apo(optimizer_llm)
    uri = _fit(algorithm, agent_llm, tmp_path)

    assert optimizer_llm.pending == 0 and len(optimizer_llm.requests) == 9
    by_id = {c.id: c for c in algorithm.candidates}
    assert [c.id for c in algorithm.candidates] == ["seed", "r1-p0-b0", "r2-p0-b0", "r2-p1-b0"]
    assert [by_id[i].score for i in ("seed", "r1-p0-b0", "r2-p0-b0", "r2-p1-b0")] == [0.0, 0.5, 1.0, 0.5]
    assert [r["beam"] for r in algorithm.round_records] == [["seed"], ["r1-p0-b0", "seed"], ["r2-p0-b0", "r1-p0-b0"]]
    assert by_id["r2-p1-b0"].parent == "seed" and by_id["r2-p0-b0"].parent == "r1-p0-b0"
    assert by_id["r2-p1-b0"].outcome == "dropped"  # ties with r1-p0-b0 (0.5): the older one stays
    # Bad replies are discarded with their reasons; the branch keeps the parent's version.
    assert "drops placeholders" in by_id["r1-p0-b0"].rejected["user_prompt"]
    assert by_id["r1-p0-b0"].prompts == {"system_prompt": CAREFUL, "user_prompt": SEED_USER}
    assert by_id["r2-p0-b0"].rejected == {"user_prompt": "empty reply"}
    assert by_id["r2-p1-b0"].rejected["system_prompt"].startswith("not a prompt")
    assert algorithm.get_best_prompts() == {"system_prompt": CAREFUL_UNITS, "user_prompt": SEED_USER}

    # The critique saw the agent's messages (through the proxy and TraceToMessages) and rewards.
    critique_request = optimizer_llm.requests[0]["messages"][0]["content"]
    assert SEED_SYSTEM in critique_request and "Question: train" in critique_request
    assert "Here is my answer." in critique_request and "reward 0.00" in critique_request
    edit_request = optimizer_llm.requests[1]["messages"][0]["content"]
    assert "The agent is not careful." in edit_request and '"system_prompt"' in edit_request

    view = _store_view(uri)
    latest = view["latest"]
    assert latest.resources_id == algorithm.best_resources_id
    assert latest.resources["system_prompt"].template == CAREFUL_UNITS
    assert latest.resources["user_prompt"].template == SEED_USER
    assert latest.resources["main_llm"].endpoint == agent_llm.base_url  # the user's LLM, not the run's proxy
    evaluations = _evaluation_rollouts(view)
    assert len(evaluations) == algorithm.budget.rollouts
    assert all(r.status == "succeeded" for r in evaluations)
    names = [name for name, _ in view["records"]]
    assert names.count("agentlightning.apo.optimizer_call") == 9
    assert names.count("agentlightning.apo.round") == 3 and "agentlightning.apo.result" in names

    folder = tmp_path / "apo"
    best = json.loads((folder / "best_prompts.json").read_text())
    assert best["prompts"]["system_prompt"] == CAREFUL_UNITS and best["best_score"] == 1.0
    assert "r2-p0-b0" in (folder / "rounds.md").read_text()
    assert len((folder / "candidates.jsonl").read_text().splitlines()) == 4
    assert (folder / "scores.png").stat().st_size > 0

    capsys.readouterr()
    assert agl_main(["export", "--store", uri, "--what", "prompts"]) == 0
    printed = capsys.readouterr().out
    assert CAREFUL_UNITS in printed and SEED_USER in printed
    out = tmp_path / "prompts.json"
    assert agl_main(["export", "--store", uri, "--what", "prompts", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["prompts"] == {"system_prompt": CAREFUL_UNITS, "user_prompt": SEED_USER}


def test_in_turn_edits_one_template_per_round(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(
        FakeReply.text("Be careful."),
        FakeReply.text(CAREFUL),
        FakeReply.text("Give units."),
        FakeReply.text(USER_UNITS),
    )
    algorithm = _apo(optimizer_llm, mode="in_turn", beam_width=1)
    _fit(algorithm, agent_llm, tmp_path)
    assert len(optimizer_llm.requests) == 4
    edited = {c.id: c.edited for c in algorithm.candidates}
    assert edited == {"seed": [], "r1-p0-b0": ["system_prompt"], "r2-p0-b0": ["user_prompt"]}
    assert '"user_prompt"' in optimizer_llm.requests[3]["messages"][0]["content"]
    assert algorithm.get_best_prompts() == {"system_prompt": CAREFUL, "user_prompt": USER_UNITS}
    assert algorithm.best is not None and algorithm.best.score == 1.0


def test_cached_rollouts_are_not_played_twice(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(
        FakeReply.text("Be careful."),
        FakeReply.text(CAREFUL),
        FakeReply.text("Answer:"),  # drops {question}
        FakeReply.text("Be careful, really."),
        FakeReply.text(CAREFUL),  # the same prompt set as branch 0
        FakeReply.text(SEED_USER),  # unchanged
    )
    algorithm = _apo(optimizer_llm, beam_width=1, branch_factor=2, rounds=1)
    uri = _fit(algorithm, agent_llm, tmp_path, train=TRAIN[:2])
    # Both branches of the seed draw the same 2 training tasks: played once, read twice.
    evaluations = _evaluation_rollouts(_store_view(uri))
    train = [r for r in evaluations if r.mode == "train"]
    assert len(train) == 2 and algorithm.cache_hits >= 2
    by_id = {c.id: c for c in algorithm.candidates}
    assert by_id["r1-p0-b1"].outcome == "duplicate of an earlier prompt set"
    assert by_id["r1-p0-b1"].rejected == {"user_prompt": "not an edit: the prompt is unchanged"}
    assert len([r for r in evaluations if r.mode == "val"]) == 2 * len(VAL)  # seed and one candidate
    assert algorithm.budget.rollouts == len(evaluations) == 2 + 2 * len(VAL)


def test_the_rollout_budget_stops_the_run_cleanly(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    _script_two_rounds(optimizer_llm)
    # Seed validation (3) fits; round 1's one branch needs training (2) and its candidate's validation (3):
    # it does not fit, so the run stops before playing or paying the optimizer for it.
    algorithm = _apo(optimizer_llm, max_rollouts=len(VAL) + 2)
    uri = _fit(algorithm, agent_llm, tmp_path)
    assert algorithm.stop_reason is not None and "rollout budget" in algorithm.stop_reason
    view = _store_view(uri)
    assert len(_evaluation_rollouts(view)) == len(VAL)
    assert optimizer_llm.requests == []
    assert algorithm.get_best_prompts() == {"system_prompt": SEED_SYSTEM, "user_prompt": SEED_USER}
    assert view["latest"].resources["system_prompt"].template == SEED_SYSTEM
    assert [c.id for c in algorithm.candidates] == ["seed"]


def test_the_rollout_budget_trims_a_round_to_the_branches_it_can_score(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    _script_two_rounds(optimizer_llm)
    # Seed validation (3), then of round 1's two branches only one fits: training (2) + validation (3).
    algorithm = _apo(optimizer_llm, branch_factor=2, max_rollouts=len(VAL) + 2 + len(VAL))
    uri = _fit(algorithm, agent_llm, tmp_path)
    assert len(_evaluation_rollouts(_store_view(uri))) == algorithm.budget.rollouts == 2 * len(VAL) + 2
    assert [c.id for c in algorithm.candidates] == ["seed", "r1-p0-b0"]
    assert algorithm.candidates[1].score is not None
    assert len(optimizer_llm.requests) == 3  # one critique, an edit per template
    assert algorithm.stop_reason is not None and "rollout budget" in algorithm.stop_reason


def test_one_call_proposals_write_the_critique_and_the_templates_together(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(
        # round 1 (joint): both templates in one reply; the first block quotes the current system prompt
        FakeReply.text(
            f'It is not careful. Now: <prompt name="system_prompt">{SEED_SYSTEM}</prompt> Better:\n'
            f'<prompt name="system_prompt">{CAREFUL}</prompt>\n<prompt name="user_prompt">{USER_UNITS}</prompt>'
        ),
        # a reply with no block for user_prompt and a system prompt that drops nothing but changes nothing
        FakeReply.text(f'Keep it. <prompt name="system_prompt">{SEED_SYSTEM}</prompt>'),
    )
    # Budget: the seed's validation, one training batch (read by both branches) and two candidates' validation:
    # counted as paid once, the training batch leaves room for both branches.
    algorithm = _apo(
        optimizer_llm, proposal="one_call", branch_factor=2, rounds=1, max_rollouts=len(VAL) + 2 + 2 * len(VAL)
    )
    _fit(algorithm, agent_llm, tmp_path)
    assert len(optimizer_llm.requests) == 2  # one call a candidate
    request = optimizer_llm.requests[0]["messages"][0]["content"]
    assert '<prompt name="NAME">' in request and "reward 0.00" in request
    assert "Question: train" in request and "Task:" not in request  # the conversation carries the task
    by_id = {c.id: c for c in algorithm.candidates}
    assert by_id["r1-p0-b0"].prompts == {"system_prompt": CAREFUL, "user_prompt": USER_UNITS}
    assert by_id["r1-p0-b0"].score == 1.0 and by_id["r1-p0-b0"].critique.startswith("It is not careful.")
    assert by_id["r1-p0-b1"].rejected == {
        "system_prompt": "not an edit: the prompt is unchanged",
        "user_prompt": "no <prompt> block for it in the reply",
    }
    assert algorithm.budget.rollouts == len(VAL) + 2 + len(VAL)  # b1 gave no candidate: nothing to score
    assert algorithm.get_best_prompts() == {"system_prompt": CAREFUL, "user_prompt": USER_UNITS}


def test_append_proposals_add_instructions_at_the_end_of_each_template(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(
        # both templates get an addition; the user prompt's repeats the template first, as small models do
        FakeReply.text(
            'It must be careful. <add name="system_prompt">Be careful.</add>\n'
            f'<add name="user_prompt">{SEED_USER}\nState the units.</add>'
        ),
        # an addition that invents a placeholder (kept as text), and a refusal
        FakeReply.text('<add name="system_prompt">Mind the {units}.</add><add name="user_prompt">I cannot.</add>'),
    )
    algorithm = _apo(
        optimizer_llm, proposal="append", branch_factor=2, rounds=1, max_rollouts=len(VAL) + 2 + 2 * len(VAL)
    )
    _fit(algorithm, agent_llm, tmp_path)
    assert len(optimizer_llm.requests) == 2  # one call a candidate
    assert '<add name="NAME">' in optimizer_llm.requests[0]["messages"][0]["content"]
    by_id = {c.id: c for c in algorithm.candidates}
    assert by_id["r1-p0-b0"].prompts == {
        "system_prompt": f"{SEED_SYSTEM} Be careful.",
        "user_prompt": f"{SEED_USER} State the units.",
    }
    assert by_id["r1-p0-b0"].score == 1.0
    assert by_id["r1-p0-b1"].prompts["system_prompt"] == f"{SEED_SYSTEM} Mind the {{{{units}}}}."
    assert by_id["r1-p0-b1"].rejected == {"user_prompt": "not an instruction: 'I cannot.'"}
    assert algorithm.get_best_prompts()["user_prompt"] == f"{SEED_USER} State the units."


def test_candidates_written_before_the_optimizer_budget_are_still_scored(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(
        FakeReply.text(f"Be careful. <prompt>{CAREFUL}</prompt>"),
        FakeReply.text("Give units. <prompt>You are an assistant. Give units.</prompt>"),
        FakeReply.text(f"Give units. <prompt>{USER_UNITS}</prompt>"),
    )
    # In turn: round 1 edits system_prompt (2 branches, 2 calls); round 2 user_prompt with one call left.
    algorithm = _apo(
        optimizer_llm, proposal="one_call", mode="in_turn", beam_width=1, branch_factor=2, max_optimizer_calls=3
    )
    _fit(algorithm, agent_llm, tmp_path)
    assert algorithm.stop_reason is not None and "optimizer call budget" in algorithm.stop_reason
    round_two = [c for c in algorithm.candidates if c.round == 2]
    assert [(c.prompts["user_prompt"], c.score) for c in round_two] == [(USER_UNITS, 1.0)]
    assert algorithm.best is round_two[0] and algorithm.get_best_prompts()["system_prompt"] == CAREFUL


@pytest.mark.parametrize(
    ("limits", "calls", "reason"),
    [({"max_optimizer_calls": 2}, 2, "optimizer call budget"), ({"max_tokens": 1}, 1, "optimizer token budget")],
)
def test_optimizer_budgets_stop_the_run_cleanly(
    agent_llm: FakeOpenAIServer,
    optimizer_llm: FakeOpenAIServer,
    tmp_path: Path,
    limits: Dict[str, int],
    calls: int,
    reason: str,
) -> None:
    _script_two_rounds(optimizer_llm)
    algorithm = _apo(optimizer_llm, **limits)
    _fit(algorithm, agent_llm, tmp_path)
    assert len(optimizer_llm.requests) == calls
    assert algorithm.stop_reason is not None and reason in algorithm.stop_reason
    assert algorithm.best is not None and algorithm.best.id == "seed"
    assert (tmp_path / "apo" / "best_prompts.json").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_optimizer_stops_the_run_naming_it(agent_llm: FakeOpenAIServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    algorithm = APO(optimizer={"base_url": url, "model": "optimizer"}, gradient_batch_size=2, progress=False)
    with pytest.raises(OptimizerEndpointError, match="127.0.0.1") as raised:
        _fit(algorithm, agent_llm, tmp_path)
    assert url in str(raised.value) and "unreachable" in str(raised.value)
    view = _store_view(f"sqlite:///{tmp_path / 'store.db'}")
    # What was done before the failure is in the store: the seed's validation and its training batch (both
    # branches read the same 2 rollouts).
    assert len(_evaluation_rollouts(view)) == len(VAL) + 2
    assert "agentlightning.apo.stopped" in [name for name, _ in view["records"]]


def test_an_optimizer_that_does_not_answer_in_time_stops_the_run(
    agent_llm: FakeOpenAIServer, optimizer_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    optimizer_llm.enqueue(FakeReply.text("late", delay=3), FakeReply.text("late", delay=3))
    algorithm = _apo(optimizer_llm, optimizer_timeout=0.5)
    with pytest.raises(OptimizerEndpointError, match="did not answer within 0.5 s"):
        _fit(algorithm, agent_llm, tmp_path)
    assert optimizer_llm.base_url in str(algorithm.stop_reason)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="critique template must use the fields"):
        APO(critique_template="Improve {prompts}.")
    with pytest.raises(ValueError, match="unknown fields"):
        APO(edit_template="{name} {prompt} {critique} {placeholders} {extra}")
    with pytest.raises(ValueError, match="one-call template must use the fields"):
        APO(one_call_template="Improve {prompts} from {experiments}.")
    with pytest.raises(ValueError, match="append template must use the fields"):
        APO(append_template="Add to {targets}.")
    with pytest.raises(ValueError, match="proposal must be"):
        APO(proposal="three_calls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beam_width"):
        APO(beam_width=0)
    with pytest.raises(ValueError, match="http"):
        APO(optimizer={"base_url": "localhost:1", "model": "m"})


def test_apo_is_found_by_name_and_by_its_0_3_path() -> None:
    from agentlightning.algorithm.apo import APO as Legacy

    assert Legacy is APO
    assert isinstance(agl.Trainer(algorithm="apo").algorithm, APO)
    assert isinstance(agl.APO(progress=False), APO)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("   ", "empty reply"),
        ("I'm sorry, I can't.", "not a prompt"),
        ("Question {question", "not a prompt"),
        ("Tell me: {topic}", "drops placeholders"),
        ("Q: {question} " + "x" * 100, "over-long"),
        ("Q: {question}", "not an edit"),
    ],
)
def test_bad_edits_are_rejected_with_a_reason(reply: str, reason: str) -> None:
    with pytest.raises(EditRejected, match=reason):
        check_edited_prompt(reply, "Q: {question}", max_chars=60)
    assert check_edited_prompt("<prompt>\nQ: {question}\nBe brief.\n</prompt>", "Q: {question}", max_chars=60) == (
        "Q: {question}\nBe brief."
    )


@pytest.mark.parametrize(
    ("reply", "targets", "found"),
    [
        ('Now: <prompt name="a">old</prompt> Better: <prompt name="a">new</prompt>', ["a"], {"a": "new"}),
        ("Rule: be brief. <prompt>\nnew\n</prompt>", ["a"], {"a": "new"}),  # one target: any block
        ('<template name="a">A</template><b>{x} B</b>', ["a", "b"], {"a": "A", "b": "{x} B"}),
        ('<prompt name="a">A<prompt name="b">B', ["a", "b"], {"a": "A", "b": "B"}),  # unclosed
        ('<prompt name="c">C</prompt>', ["a", "b"], {}),  # several targets: only their names count
        ("No template here.", ["a"], {}),
        # unnamed blocks: after a heading naming one template, else in order for the templates left
        (
            "### System prompt:\n<prompt>S</prompt>\n### User prompt:\n<prompt>U {q}</prompt>",
            ["system_prompt", "user_prompt"],
            {"system_prompt": "S", "user_prompt": "U {q}"},
        ),
        (
            "Better: <prompt>S</prompt> <user_prompt>U</user_prompt>",
            ["system_prompt", "user_prompt"],
            {"system_prompt": "S", "user_prompt": "U"},
        ),
        ("<prompt>A</prompt> <prompt>B</prompt> <prompt>C</prompt>", ["a", "b"], {}),  # ambiguous: none taken
        ("<b>{x}\n</prompt> trailing", ["a", "b"], {"b": "{x}"}),  # a name tag closed by another tag
    ],
)
def test_one_call_replies_yield_the_last_block_of_each_template(
    reply: str, targets: List[str], found: Dict[str, str]
) -> None:
    assert rewritten_templates(reply, targets) == found


def test_the_last_block_that_changes_the_template_wins() -> None:
    reply = 'New: <prompt name="a">A2</prompt> Summary, as it was: <prompt name="a">A</prompt>'
    assert rewritten_templates(reply, ["a"], {"a": "A"}) == {"a": "A2"}
    assert rewritten_templates('<prompt name="a">A</prompt>', ["a"], {"a": "A"}) == {"a": "A"}  # no change: kept


def test_append_replies_yield_the_instructions_of_each_template() -> None:
    reply = 'Rule. <add name="a">old</add> <rule name="a">Be brief.</rule><b>Say {x}.</b><add name="c">C</add>'
    assert added_instructions(reply, ["a", "b"]) == {"a": "Be brief.", "b": "Say {x}."}
    assert added_instructions("Rule: be brief. <add>Be brief.</add>", ["a"]) == {"a": "Be brief."}


@pytest.mark.parametrize(
    ("addition", "result"),
    [
        ("Be brief.", "Q: {question} Be brief."),
        ("Q: {question}\nBe brief.", "Q: {question} Be brief."),  # the template repeated first
        ("```\nUse {units}.\n```", "Q: {question} Use {{units}}."),
        ("  ", EditRejected("nothing to add")),
        ("I'm sorry, I can't.", EditRejected("not an instruction")),
        ("Q: {question}", EditRejected("nothing to add")),
        ("{question}", EditRejected("already says it")),
        ("x" * 60, EditRejected("over-long")),
        ("Use {units", EditRejected("braces do not parse")),
    ],
)
def test_appended_templates_keep_the_original_and_check_the_addition(addition: str, result: Any) -> None:
    if isinstance(result, EditRejected):
        with pytest.raises(EditRejected, match=result.reason):
            appended_template(addition, "Q: {question}", max_chars=60)
    else:
        assert appended_template(addition, "Q: {question}", max_chars=60) == result
    assert (
        appended_template("Be brief.", "Line one.\nQ: {question}", max_chars=60)
        == "Line one.\nQ: {question}\nBe brief."
    )


def test_a_placeholder_the_agent_does_not_fill_is_kept_as_text() -> None:
    edited = check_edited_prompt("Q: {question} (mind {answer!r} and {{x}})", "Q: {question}", max_chars=80)
    assert edited == "Q: {question} (mind {{answer!r}} and {{x}})"
    assert edited.format(question="2+2?") == "Q: 2+2? (mind {answer!r} and {x})"


# -- resume after a kill ------------------------------------------------------------------------------

RESUMABLE_RUN = """
import sys
sys.path.insert(0, {here!r})
import agentlightning as agl
from agentlightning_apo import APO
from apo_test_support import TRAIN, VAL, TwoPromptAgent, initial_resources

algorithm = APO(
    optimizer={{"base_url": {optimizer!r}, "model": "optimizer"}}, beam_width=2, branch_factor=1, rounds=2,
    gradient_batch_size=2, optimizer_concurrency=1, progress=False,
)
runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
trainer = agl.Trainer(algorithm=algorithm, runner=runner, store={uri!r}, run_dir={run_dir!r},
                      initial_resources=initial_resources({agent!r}))
trainer.fit(TwoPromptAgent(), TRAIN, val_dataset=VAL, resume={resume})
trainer.close()
print("BEST", algorithm.best.id, algorithm.best.score, "HITS", algorithm.cache_hits)
"""


def _launch(uri: str, tmp_path: Path, agent: FakeOpenAIServer, optimizer: FakeOpenAIServer, resume: bool) -> Any:
    script = RESUMABLE_RUN.format(
        here=str(HERE),
        optimizer=optimizer.base_url,
        uri=uri,
        run_dir=str(tmp_path),
        agent=agent.base_url,
        resume=resume,
    )
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_run_killed_midway_resumes_from_the_store(optimizer_llm: FakeOpenAIServer, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    # A slow agent LLM keeps round 1's validation in flight after its optimizer calls: the kill lands there.
    with FakeOpenAIServer(default_text="Here is my answer.", default_delay=1.5) as agent:
        _script_two_rounds(optimizer_llm)
        process = _launch(uri, tmp_path, agent, optimizer_llm, resume=False)
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline and process.poll() is None and len(optimizer_llm.requests) < 3:
                time.sleep(0.05)
            time.sleep(0.5)  # the third reply is journaled right after it arrives
            assert process.poll() is None, process.communicate()[1].decode()[-3000:]
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        before = _store_view(uri)
        calls_before = [r for name, r in before["records"] if name == "agentlightning.apo.optimizer_call"]
        assert len(calls_before) == 3 and "agentlightning.apo.result" not in [n for n, _ in before["records"]]
        played_before = {r.rollout_id for r in _evaluation_rollouts(before) if r.status == "succeeded"}

        resumed = _launch(uri, tmp_path, agent, optimizer_llm, resume=True)
        out, err = resumed.communicate(timeout=100)
        assert resumed.returncode == 0, err.decode()[-3000:]
    # The same result as an uninterrupted run, with the 6 remaining optimizer calls and no repeated rollout.
    assert "BEST r2-p0-b0 1.0" in out.decode()
    assert len(optimizer_llm.requests) == 9 and optimizer_llm.pending == 0
    after = _store_view(uri)
    assert len(after["journal"]) == 1
    names = [name for name, _ in after["records"]]
    assert names.count("agentlightning.apo.optimizer_call") == 9 and names.count("agentlightning.apo.round") == 3
    evaluations = _evaluation_rollouts(after)
    keys = [
        (r.metadata[METADATA_KEY]["prompt_key"], r.metadata[METADATA_KEY]["task_key"], r.metadata[METADATA_KEY]["mode"])
        for r in evaluations
        if r.status == "succeeded"
    ]
    assert len(keys) == len(set(keys))  # no (prompt set, task) was played twice to success
    assert played_before <= {r.rollout_id for r in evaluations}
    assert after["latest"].resources["system_prompt"].template == CAREFUL_UNITS
