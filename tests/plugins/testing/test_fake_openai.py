"""The fake OpenAI-compatible server used by the proxy and adapter tests."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Iterator, List

import httpx
import pytest

from agentlightning_testing.fake_openai import DEFAULT_TEXT, FakeOpenAIServer, FakeReply

CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}, "precision": {"type": "integer"}},
            "required": ["expression"],
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAIServer) -> FakeOpenAIServer:
    server.reset()
    return server


def chat(fake: FakeOpenAIServer, **body: Any) -> httpx.Response:
    body.setdefault("model", "fake-model")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return httpx.post(f"{fake.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer x"})


def sse_chunks(response: httpx.Response) -> List[Dict[str, Any]]:
    lines = [line for line in response.text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


def test_base_url_and_models(fake: FakeOpenAIServer) -> None:
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    models = httpx.get(f"{fake.base_url}/models").json()
    assert [model["id"] for model in models["data"]] == ["fake-model"]


def test_scripted_replies_in_order_and_requests_recorded(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.text("hello"), FakeReply.tool_call("calculator", {"expression": "2+2"}))
    first = chat(fake).json()
    second = chat(fake, model="other").json()
    assert first["choices"][0]["message"]["content"] == "hello"
    assert first["choices"][0]["finish_reason"] == "stop"
    call = second["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "calculator", "arguments": '{"expression": "2+2"}'}
    assert call["id"].startswith("call_")
    assert second["choices"][0]["finish_reason"] == "tool_calls"
    assert second["model"] == "other"
    assert first["id"] != second["id"]
    assert first["usage"]["total_tokens"] == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert [body["model"] for body in fake.requests] == ["fake-model", "other"]
    assert fake.received[0].path == "/v1/chat/completions"
    assert fake.received[0].headers["authorization"] == "Bearer x"
    assert fake.pending == 0


def test_default_policy_calls_first_tool_then_reports_result(fake: FakeOpenAIServer) -> None:
    call = chat(fake, tools=[CALCULATOR_TOOL]).json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "Paris", "precision": 2}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "4"},
    ]
    answer = chat(fake, tools=[CALCULATOR_TOOL], messages=messages).json()
    assert answer["choices"][0]["message"]["content"] == "The result is 4."
    assert chat(fake).json()["choices"][0]["message"]["content"] == DEFAULT_TEXT


def test_error_reply_and_bad_model(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.error(500, "boom"), FakeReply.text("after"))
    failed = chat(fake)
    assert failed.status_code == 500
    assert failed.json()["error"]["message"] == "boom"
    assert failed.json()["error"]["type"] == "server_error"
    bad = chat(fake, model="bad-model")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "model_not_found"
    # The bad-model request did not consume the scripted reply.
    assert chat(fake).json()["choices"][0]["message"]["content"] == "after"
    assert chat(fake, stream=True, model="bad-model").status_code == 400


def test_token_ids_and_logprobs(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.text("hey"), FakeReply.text("forced", token_ids=[7, 8, 9]))
    messages = [{"role": "user", "content": "hi"}]
    response = chat(fake, messages=messages, return_token_ids=True, logprobs=True, top_logprobs=2).json()
    expected_prompt = list(json.dumps(messages, sort_keys=True, separators=(",", ":")).encode())
    assert response["prompt_token_ids"] == expected_prompt
    choice = response["choices"][0]
    assert choice["token_ids"] == list(b"hey")
    assert [entry["token"] for entry in choice["logprobs"]["content"]] == ["h", "e", "y"]
    assert all(len(entry["top_logprobs"]) == 2 for entry in choice["logprobs"]["content"])
    assert response["usage"]["prompt_tokens"] == len(expected_prompt)
    forced = chat(fake, return_token_ids=True).json()
    assert forced["choices"][0]["token_ids"] == [7, 8, 9]
    assert forced["usage"]["completion_tokens"] == 3
    plain = chat(fake).json()
    assert "prompt_token_ids" not in plain and plain["choices"][0]["logprobs"] is None


def test_stream_text_with_usage_and_token_ids(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.text("the quick brown fox"))
    response = chat(fake, stream=True, stream_options={"include_usage": True}, return_token_ids=True, logprobs=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(response)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert "prompt_token_ids" in chunks[0]
    deltas = [chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]]
    assert "".join(deltas) == "the quick brown fox"
    assert sum(1 for delta in deltas if delta) >= 4
    ids = [token for chunk in chunks if chunk["choices"] for token in chunk["choices"][0]["token_ids"]]
    assert ids == list(b"the quick brown fox")
    logprob_tokens = [
        entry
        for chunk in chunks
        if chunk["choices"] and chunk["choices"][0]["logprobs"]
        for entry in chunk["choices"][0]["logprobs"]["content"]
    ]
    assert len(logprob_tokens) == len(ids)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(ids)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_stream_tool_call(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.tool_call("calculator", {"expression": "2+2"}))
    chunks = sse_chunks(chat(fake, stream=True))
    calls = [call for chunk in chunks for call in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "calculator" and calls[0]["id"].startswith("call_")
    assert "".join(call["function"]["arguments"] for call in calls) == '{"expression": "2+2"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in chunks[-1]


def test_completions_endpoint(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.text("one two"))
    body = {"model": "m", "prompt": "say", "return_token_ids": True, "logprobs": 1}
    response = httpx.post(f"{fake.base_url}/completions", json=body).json()
    assert response["object"] == "text_completion"
    assert response["choices"][0]["text"] == "one two"
    assert response["prompt_token_ids"] == list(b"say")
    assert response["choices"][0]["token_ids"] == list(b"one two")
    assert len(response["choices"][0]["logprobs"]["token_logprobs"]) == len(b"one two")
    stream = httpx.post(f"{fake.base_url}/completions", json={"model": "m", "prompt": "x", "stream": True})
    text = "".join(chunk["choices"][0]["text"] for chunk in sse_chunks(stream) if chunk["choices"])
    assert text == DEFAULT_TEXT


def test_enqueue_for_marker_and_concurrency(fake: FakeOpenAIServer) -> None:
    fake.enqueue_for("task-a", FakeReply.text("for a", delay=0.3))
    fake.enqueue_for("task-b", FakeReply.text("for b"))
    results: Dict[str, str] = {}

    def ask(marker: str) -> None:
        response = chat(fake, messages=[{"role": "user", "content": f"please do {marker}"}])
        results[marker] = response.json()["choices"][0]["message"]["content"]

    started = time.perf_counter()
    threads = [threading.Thread(target=ask, args=(marker,)) for marker in ("task-a", "task-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"task-a": "for a", "task-b": "for b"}
    assert time.perf_counter() - started < 3


def test_invalid_json_is_a_400(fake: FakeOpenAIServer) -> None:
    response = httpx.post(f"{fake.base_url}/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_start_stop_restart() -> None:
    server = FakeOpenAIServer()
    server.start()
    port = server.port
    assert httpx.get(f"{server.base_url}/models").status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models")
    server.stop()  # idempotent
    with server:
        assert httpx.get(f"{server.base_url}/models").status_code == 200


def test_response_ids_by_marker_and_statuses(fake: FakeOpenAIServer) -> None:
    fake.enqueue_for("alpha", FakeReply.text("a"), FakeReply.error(429, "slow down"))
    first = chat(fake, messages=[{"role": "user", "content": "alpha one"}]).json()
    assert chat(fake, messages=[{"role": "user", "content": "alpha two"}]).status_code == 429
    stream = chat(fake, messages=[{"role": "user", "content": "beta"}], stream=True)
    assert fake.response_ids("alpha") == [first["id"]]
    assert fake.response_ids("beta") == [sse_chunks(stream)[0]["id"]]
    assert fake.response_ids() == [first["id"], sse_chunks(stream)[0]["id"]]
    assert [request.status for request in fake.received] == [200, 429, 200]
    assert fake.received[1].response_id is None


# -- the Responses API ---------------------------------------------------------------------------------------

RESPONSES_TOOL = {"type": "function", "name": "calculator", **CALCULATOR_TOOL["function"]}  # type: ignore[dict-item]


def respond(fake: FakeOpenAIServer, **body: Any) -> httpx.Response:
    body.setdefault("model", "fake-model")
    body.setdefault("input", "hi")
    return httpx.post(f"{fake.base_url}/responses", json=body, headers={"Authorization": "Bearer x"})


def sse_events(response: httpx.Response) -> List[Dict[str, Any]]:
    """Typed events: each `event:` line names the type its `data:` line carries."""
    events: List[Dict[str, Any]] = []
    kind = None
    for line in response.text.split("\n"):
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            payload = json.loads(line[len("data: ") :])
            assert payload["type"] == kind
            events.append(payload)
    return events


def test_responses_default_policy_calls_the_tool_then_reports_its_output(fake: FakeOpenAIServer) -> None:
    first = respond(fake, input=[{"role": "user", "content": "compute"}], tools=[RESPONSES_TOOL]).json()
    assert first["object"] == "response" and first["status"] == "completed"
    (call,) = first["output"]
    assert call["type"] == "function_call" and call["name"] == "calculator"
    assert json.loads(call["arguments"]) == {"expression": "Paris", "precision": 2}
    assert first["usage"]["input_tokens"] > 0 and first["usage"]["output_tokens"] == len(
        (call["name"] + call["arguments"]).encode()
    )
    second = respond(
        fake,
        input=[
            {"role": "user", "content": "compute"},
            {"type": "function_call", "call_id": call["call_id"], "name": "calculator", "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "42"},
        ],
        tools=[RESPONSES_TOOL],
    ).json()
    (message,) = second["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "The result is 42."
    assert fake.response_ids() == [first["id"], second["id"]]


def test_responses_token_ids_logprobs_markers_and_errors(fake: FakeOpenAIServer) -> None:
    fake.enqueue_for("marker-r", FakeReply.text("It is 4.", token_ids=[5, 6, 7]))
    body = respond(
        fake,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "marker-r: 2+2?"}]}],
        include=["message.output_text.logprobs"],
        enable_response_messages=True,
    ).json()
    part = body["output"][0]["content"][0]
    assert part["text"] == "It is 4."
    assert [entry["logprob"] for entry in part["logprobs"]] == [-0.01 * (1 + i % 17) for i in (5, 6, 7)]
    assert body["output_messages"][0]["tokens"] == [5, 6, 7]
    assert body["input_messages"][0]["tokens"] and body["usage"]["input_tokens"] == len(
        body["input_messages"][0]["tokens"]
    )
    assert fake.response_ids("marker-r") == [body["id"]]
    fake.enqueue(FakeReply.error(429, "slow down"))
    failed = respond(fake)
    assert failed.status_code == 429 and failed.json()["error"]["message"] == "slow down"


def test_responses_stream_sends_typed_events_ending_with_the_whole_response(fake: FakeOpenAIServer) -> None:
    fake.enqueue(FakeReply.text("one two three"), FakeReply.tool_call("calculator", {"expression": "1+1"}))
    events = sse_events(respond(fake, stream=True))
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta") == (
        "one two three"
    )
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "one two three"

    events = sse_events(respond(fake, stream=True, tools=[RESPONSES_TOOL]))
    arguments = "".join(event["delta"] for event in events if event["type"] == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"expression": "1+1"}
    assert events[-1]["response"]["output"][0]["arguments"] == arguments


def test_unknown_paths_are_recorded_and_answered_404(fake: FakeOpenAIServer) -> None:
    response = httpx.post(f"{fake.url}/v1/traces/ingest", json={"data": []})
    assert response.status_code == 404 and "no route" in response.json()["error"]["message"]
    (record,) = fake.received
    assert (record.path, record.status, record.body) == ("/v1/traces/ingest", 404, None)
    assert fake.requests == []
