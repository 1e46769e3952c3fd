"""Datasets out: an SFT run's records (or a store's rewarded calls) as OpenAI chat JSONL or a `datasets` folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from datasets import load_from_disk

import agentlightning as agl
from agentlightning_sft import SFT, check_chat_record, export_dataset
from agentlightning_sft.export import ExportError
from agentlightning_sft.run_log import records_path, write_records

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
]
TOOL_RECORD = {
    "messages": [
        {"role": "system", "content": "Use the calculator."},
        {"role": "user", "content": "What is 12*7?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "12*7"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "84"},
        {"role": "assistant", "content": "Answer: 84"},
    ],
    "tools": TOOLS,
}
PLAIN_RECORD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _drop_none(value: Any) -> Any:
    """Undo what `datasets` adds when messages differ in keys: None for the keys a message lacks."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None or k == "content"}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _run_with(tmp_path: Path, records_by_round: Dict[int, List[Dict[str, Any]]]) -> Path:
    run_dir = tmp_path / "run"
    for round_index, records in records_by_round.items():
        write_records(records_path(run_dir, round_index), [{**r, "metadata": {"round": round_index}} for r in records])
    return run_dir


def test_jsonl_and_hf_round_trip(tmp_path: Path) -> None:
    run_dir = _run_with(tmp_path, {1: [TOOL_RECORD], 2: [PLAIN_RECORD, TOOL_RECORD]})

    summary = export_dataset(tmp_path / "out.jsonl", run_dir=run_dir)
    assert summary.records == 3 and summary.kind == "chat"
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    # OpenAI's chat fine-tuning format: messages (+ tools), no metadata; each line passes the checker unchanged.
    assert lines == [TOOL_RECORD, PLAIN_RECORD, TOOL_RECORD]
    assert all(check_chat_record(line) == line for line in lines)

    export_dataset(tmp_path / "out-hf", format="hf", run_dir=run_dir, rounds=[2])
    loaded = load_from_disk(str(tmp_path / "out-hf"))
    assert loaded.column_names == ["messages", "tools"] and len(loaded) == 2
    back = [
        {"messages": _drop_none(row["messages"]), **({"tools": json.loads(row["tools"])} if row["tools"] else {})}
        for row in loaded
    ]
    assert back == [PLAIN_RECORD, TOOL_RECORD]


def test_token_records_go_to_hf_only(tmp_path: Path) -> None:
    run_dir = _run_with(tmp_path, {1: [{"input_ids": [3, 4, 5], "completion_mask": [0, 1, 1]}]})
    with pytest.raises(ExportError, match="token records, which are not chat records; use --format hf"):
        export_dataset(tmp_path / "out.jsonl", run_dir=run_dir)
    assert not (tmp_path / "out.jsonl").exists()
    export_dataset(tmp_path / "out-hf", format="hf", run_dir=run_dir)
    assert load_from_disk(str(tmp_path / "out-hf"))[0] == {"input_ids": [3, 4, 5], "completion_mask": [0, 1, 1]}


def test_nothing_to_export_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(ExportError, match="no records to export from run"):
        export_dataset(tmp_path / "out.jsonl", run_dir=tmp_path / "run")
    assert not (tmp_path / "out.jsonl").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_dataset(tmp_path / "taken", run_dir=tmp_path / "run")


def test_agl_export_dataset_from_a_real_run_and_its_store(tiny_model: Path, tmp_path: Path) -> None:
    # An SFT run on the tiny model with a SQLite store; only the "hello" task is rewarded.
    @agl.rollout
    async def agent(task: Dict[str, Any], llm: agl.LLM) -> float:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=llm.endpoint, api_key="x", max_retries=0)
        await client.chat.completions.create(
            model=llm.model, messages=[{"role": "user", "content": task["q"]}], **llm.sampling_parameters
        )
        return 1.0 if task["q"] == "hello" else 0.0

    run_dir = tmp_path / "run"
    algorithm = SFT(
        model=str(tiny_model),
        config={"lora_r": 4},
        n_rounds=1,
        samples_per_task=2,
        sampling={"max_tokens": 8},
        progress=False,
        max_batch_size=8,
    )
    agl.Trainer(algorithm=algorithm, store=f"sqlite:///{run_dir / 'store.db'}", run_dir=run_dir, n_runners=1).fit(
        agent, [{"q": "hello"}, {"q": "world"}]
    )

    agl_cli = [sys.executable, "-m", "agentlightning.cli"]
    done = subprocess.run(
        [*agl_cli, "export-dataset", "--run", str(run_dir), "--out", str(tmp_path / "run.jsonl")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote 2 chat records to {tmp_path / 'run.jsonl'} (jsonl)")
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [line["messages"][0]["content"] for line in lines] == ["hello", "hello"]

    uri = f"sqlite:///{run_dir / 'store.db'}"
    args = ["export-dataset", "--store", uri, "--format", "hf", "--min-reward", "0", "--out", str(tmp_path / "all")]
    done = subprocess.run([*agl_cli, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(row[0]["content"] for row in load_from_disk(str(tmp_path / "all"))["messages"]) == [
        "hello",
        "hello",
        "world",
        "world",
    ]

    done = subprocess.run(
        [*agl_cli, "export-dataset", "--store", uri, "--min-reward", "5", "--out", str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "no records to export" in done.stderr and not (tmp_path / "none.jsonl").exists()
