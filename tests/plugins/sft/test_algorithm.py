"""The SFT algorithm end to end on the tiny model: runner -> proxy -> embedded server -> filter -> TRL -> new weights served."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from safetensors.torch import load_file

import agentlightning as agl
from agentlightning.semconv import LLMCallAttributes
from agentlightning.serving import ServingBackend, start_serving_backend
from agentlightning.store import InMemoryLightningStore
from agentlightning_grpo import loop
from agentlightning_grpo.run_log import latest_checkpoint
from agentlightning_sft import SFT, FinishedRollout

AGENT_SOURCE = '''
import agentlightning as agl
from openai import AsyncOpenAI, BadRequestError


@agl.rollout
async def echo_agent(task, llm) -> float:
    """One chat call; the reward is the task's own ("keep" tasks score 1), so the filter's choice is known.

    A task with ``refused`` also makes calls the server refuses (``max_tokens=0``): the proxy records them
    without an answer, so they make no record ("only": the refused call is the rollout's only call).
    """
    client = AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": task["q"]}]
    if task.get("refused") != "only":
        await client.chat.completions.create(model=llm.model, messages=messages, **llm.sampling_parameters)
    if task.get("refused"):
        try:
            await client.chat.completions.create(model=llm.model, messages=messages, max_tokens=0)
        except BadRequestError:
            pass
    return float(task.get("reward", 0.0))
'''

TRAIN = [{"q": "hello", "reward": 1.0}, {"q": "world", "reward": 0.0}, {"q": "tiny", "reward": 1.0}, {"q": "model"}]
VAL = [{"q": "alpha", "reward": 1.0}, {"q": "beta"}, {"q": "gamma"}]


@pytest.fixture(scope="module")
def agent_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("agent")
    (folder / "echo_agent_mod.py").write_text(AGENT_SOURCE)
    return folder


@pytest.fixture
def echo_agent(agent_module: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(agent_module))
    import echo_agent_mod  # type: ignore[import-not-found]

    return echo_agent_mod.echo_agent


def _sft(tiny_model: Path, **overrides: Any) -> SFT:
    settings: Dict[str, Any] = {
        "model": str(tiny_model),
        # A large learning rate: one round on a few records visibly moves a random tiny model.
        "config": {"learning_rate": 0.05, "lora_r": 4, "lora_alpha": 8, "epochs": 2, "batch_size": 4, "seed": 0},
        "n_rounds": 1,
        "samples_per_task": 2,
        "val_every": 0,
        "sampling": {"temperature": 1.0, "max_tokens": 10},
        "progress": False,
        "max_batch_size": 8,
    }
    settings.update(overrides)
    return SFT(**settings)


def _fit(algorithm: SFT, agent: Any, store: Any, run_dir: Path, val: Any = VAL, train: Any = TRAIN) -> None:
    runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
    trainer = agl.Trainer(algorithm=algorithm, runner=runner, store=store, run_dir=run_dir)
    trainer.fit(agent, train, val_dataset=val)


async def _val_outputs(store: Any, round_index: int) -> Dict[str, List[int]]:
    """Response token ids of the greedy validation rollouts of ``round_index``, by question."""
    outputs: Dict[str, List[int]] = {}
    for rollout in await store.query_rollouts():
        if rollout.mode == "val" and (rollout.metadata or {}).get("round") == round_index:
            spans = await store.query_spans(rollout.rollout_id)
            (call,) = [s for s in spans if LLMCallAttributes.RESPONSE_TOKEN_IDS in s.attributes]
            outputs[rollout.input["q"]] = call.attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS]
    return outputs


def _data(run_dir: Path, round_index: int) -> List[Dict[str, Any]]:
    path = run_dir / "data" / f"round-{round_index:06d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_round_trains_on_the_kept_rollouts_and_the_served_answers_change(
    tiny_model: Path, echo_agent: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: List[ServingBackend] = []

    def start_and_record(*args: Any, **kwargs: Any) -> ServingBackend:
        started.append(start_serving_backend(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(loop, "start_serving_backend", start_and_record)
    store = InMemoryLightningStore()
    algorithm = _sft(tiny_model)
    run_dir = tmp_path / "run"
    await asyncio.to_thread(_fit, algorithm, echo_agent, store, run_dir)

    assert algorithm.log is not None
    (round_record,) = algorithm.log.of_kind("round")
    # 4 tasks x 2 samples; the two rewarded tasks pass the default threshold (reward >= 1).
    assert round_record["rollouts"] == 8 and round_record["kept"] == 4 and round_record["records"] == 4
    assert not round_record["skipped"] and round_record["excluded"] == {}
    assert round_record["optimizer_steps"] == 2 and round_record["loss_tokens"] > 0
    assert round_record["weights_version"] == 1

    records = _data(run_dir, 1)
    assert sorted(r["messages"][0]["content"] for r in records) == ["hello", "hello", "tiny", "tiny"]
    assert all(r["messages"][-1]["role"] == "assistant" and r["metadata"]["reward"] == 1.0 for r in records)

    # The adapter moved (LoRA B starts at zero), and the running server answers the same greedy prompts differently.
    checkpoint = latest_checkpoint(run_dir / "checkpoints", "round")
    assert checkpoint is not None and checkpoint.name == "round-000001"
    lora_b = [t for name, t in load_file(str(checkpoint / "adapter_model.safetensors")).items() if "lora_B" in name]
    assert lora_b and any(bool(t.abs().sum() > 0) for t in lora_b)
    before, after = await _val_outputs(store, 0), await _val_outputs(store, 1)
    assert set(before) == set(after) == {"alpha", "beta", "gamma"}
    assert any(before[q] != after[q] for q in before)
    # No restart: one server answered both validations, and the new weights went into it.
    assert len(started) == 1 and started[0].weights_version == 1
    assert [r["round"] for r in algorithm.log.of_kind("validation")] == [0, 1]
    assert (run_dir / "curve.png").stat().st_size > 1000


async def test_full_fine_tuning_swaps_all_weights_into_the_server(
    tiny_model: Path, echo_agent: Any, tmp_path: Path
) -> None:
    store = InMemoryLightningStore()
    config = {"finetuning": "full", "learning_rate": 0.01, "epochs": 2, "batch_size": 4, "seed": 0}
    algorithm = _sft(tiny_model, config=config)
    run_dir = tmp_path / "run"
    await asyncio.to_thread(_fit, algorithm, echo_agent, store, run_dir)

    assert algorithm.log is not None
    (round_record,) = algorithm.log.of_kind("round")
    assert not round_record["skipped"] and round_record["weights_version"] == 1
    checkpoint = latest_checkpoint(run_dir / "checkpoints", "round")
    assert checkpoint is not None and (checkpoint / "model.safetensors").is_file()
    before, after = await _val_outputs(store, 0), await _val_outputs(store, 1)
    assert any(before[q] != after[q] for q in before)


async def test_a_round_where_nothing_passes_says_so_and_trains_nothing(
    tiny_model: Path, echo_agent: Any, tmp_path: Path
) -> None:
    store = InMemoryLightningStore()
    algorithm = _sft(tiny_model, reward_threshold=2.0)
    run_dir = tmp_path / "run"
    await asyncio.to_thread(_fit, algorithm, echo_agent, store, run_dir)

    assert algorithm.log is not None
    (round_record,) = algorithm.log.of_kind("round")
    assert round_record["skipped"] and round_record["kept"] == 0 and round_record["records"] == 0
    assert round_record["skip_reason"] == "no rollout passed the filter (0 of 8 kept)"
    assert not (run_dir / "data").exists()  # no empty dataset written
    assert await _val_outputs(store, 0) == await _val_outputs(store, 1)  # the served model did not change


async def test_calls_that_make_no_record_are_left_out_and_counted_in_the_round(
    tiny_model: Path, echo_agent: Any, tmp_path: Path
) -> None:
    store = InMemoryLightningStore()
    algorithm = _sft(tiny_model)
    run_dir = tmp_path / "run"
    train = [{"q": "hello", "reward": 1.0, "refused": True}, {"q": "world"}]
    await asyncio.to_thread(_fit, algorithm, echo_agent, store, run_dir, None, train)

    assert algorithm.log is not None
    (round_record,) = algorithm.log.of_kind("round")
    # Both "hello" rollouts are kept; each made one answered call (a record) and one refused call (none).
    assert round_record["kept"] == 2 and round_record["records"] == 2
    assert round_record["excluded"] == {"no_response": 2}
    assert not round_record["skipped"] and round_record["weights_version"] == 1
    records = _data(run_dir, 1)
    assert [r["messages"][-1]["role"] for r in records] == ["assistant", "assistant"]


async def test_a_round_whose_kept_rollouts_make_no_record_trains_nothing(
    tiny_model: Path, echo_agent: Any, tmp_path: Path
) -> None:
    store = InMemoryLightningStore()
    algorithm = _sft(tiny_model)
    run_dir = tmp_path / "run"
    train = [{"q": "hello", "reward": 1.0, "refused": "only"}]
    await asyncio.to_thread(_fit, algorithm, echo_agent, store, run_dir, None, train)

    assert algorithm.log is not None
    (round_record,) = algorithm.log.of_kind("round")
    assert round_record["skipped"] and round_record["kept"] == 2 and round_record["records"] == 0
    assert round_record["excluded"] == {"no_response": 2} and "weights_version" not in round_record
    assert round_record["skip_reason"] == (
        "no record could be built from the 2 kept rollouts (excluded: {'no_response': 2})"
    )
    assert not (run_dir / "data").exists()


async def test_a_user_filter_and_token_records(tiny_model: Path, echo_agent: Any, tmp_path: Path) -> None:
    seen: List[FinishedRollout] = []

    def only_world(finished: FinishedRollout) -> bool:
        seen.append(finished)
        return bool(finished.rollout.input["q"] == "world")

    store = InMemoryLightningStore()
    algorithm = _sft(tiny_model, rollout_filter=only_world, config={"record_format": "tokens", "lora_r": 4})
    run_dir = tmp_path / "run"
    await asyncio.to_thread(_fit, algorithm, echo_agent, store, run_dir, None)

    assert len(seen) == 8 and all(s.spans for s in seen)
    assert algorithm.log is not None
    (round_record,) = algorithm.log.of_kind("round")
    assert round_record["kept"] == 2 and round_record["records"] == 2 and not round_record["skipped"]
    for record in _data(run_dir, 1):
        assert record["metadata"]["reward"] == 0.0
        mask = record["completion_mask"]
        # The prompt is masked out, the answer the model sampled is trained on.
        assert len(mask) == len(record["input_ids"]) and mask[0] == 0 and mask[-1] == 1
        assert round_record["loss_tokens"] > 0


RESUMABLE_RUN = """
import sys
sys.path.insert(0, {agent_dir!r})
import agentlightning as agl
from agentlightning_sft import SFT
from echo_agent_mod import echo_agent

algorithm = SFT(
    model={model!r},
    config={{"learning_rate": 0.05, "lora_r": 4, "lora_alpha": 8, "seed": 0}},
    n_rounds=4, samples_per_task=1, val_every=0, sampling={{"temperature": 1.0, "max_tokens": 8}}, progress=False,
)
runner = agl.LitAgentRunner(agl.OtelTracer(), concurrency=8)
trainer = agl.Trainer(algorithm=algorithm, runner=runner, run_dir={run_dir!r})
trainer.fit(echo_agent, {train!r}, resume={resume})
"""


def _launch(tiny_model: Path, agent_module: Path, run_dir: Path, resume: bool) -> subprocess.Popen[bytes]:
    script = RESUMABLE_RUN.format(
        agent_dir=str(agent_module), model=str(tiny_model), run_dir=str(run_dir), train=TRAIN, resume=resume
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stderr=subprocess.PIPE)


def _rounds(run_dir: Path) -> List[Dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return [r for r in records if r["kind"] == "round"]


@pytest.mark.timeout(600)
def test_a_run_killed_after_round_2_resumes_at_round_3(tiny_model: Path, agent_module: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = _launch(tiny_model, agent_module, run_dir, resume=False)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len(_rounds(run_dir)) >= 2 and (run_dir / "checkpoints" / "round-000002").is_dir():
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    history = _rounds(run_dir)[:2]
    assert [r["round"] for r in history] == [1, 2]

    resumed = _launch(tiny_model, agent_module, run_dir, resume=True)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr.decode()[-3000:]
    rounds = _rounds(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[:2] == history  # the history before the kill is kept as it was
    assert sorted(p.name for p in (run_dir / "data").iterdir()) == [f"round-00000{i}.jsonl" for i in (1, 2, 3, 4)]
    # Rounds 3 and 4 started from round 2's weights: the adapter reloaded, the server got it first.
    assert rounds[2]["weights_version"] == 2
