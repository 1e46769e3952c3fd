"""The model server over real HTTP, serving the tiny Qwen2: token ids, logprobs, streaming, batching, errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest
import torch
from conftest import CALCULATOR_TOOL, MODEL_NAME, assert_same_greedy_tokens, make_server

from agentlightning_embedded.protocol import SamplingParams
from agentlightning_embedded.server import ModelServer

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def client(server: ModelServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def chat(client: httpx.Client, **body: Any) -> Dict[str, Any]:
    body.setdefault("messages", MESSAGES)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(client: httpx.Client, path: str, body: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The JSON payloads of an SSE stream; asserts it ends with ``[DONE]``."""
    events: List[Dict[str, Any]] = []
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        events.append(json.loads(line[len("data: ") :]))
    return events


def content_ids(token_ids: List[int], server: ModelServer) -> List[int]:
    return [i for i in token_ids if i not in server.engine.eos_token_ids]


# -- basics ---------------------------------------------------------------------------------------


def test_health_and_models(client: httpx.Client, server: ModelServer) -> None:
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL_NAME]
    assert models["data"][0]["max_model_len"] == server.engine.context_length


def test_chat_response_shape_and_token_ids(client: httpx.Client, server: ModelServer) -> None:
    body = chat(client, model=MODEL_NAME, max_tokens=24, temperature=0)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL_NAME
    tokenizer = server.engine.tokenizer
    expected_prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    assert body["prompt_token_ids"] == expected_prompt
    (choice,) = body["choices"]
    ids = choice["token_ids"]
    assert 1 <= len(ids) <= 24
    assert choice["message"]["role"] == "assistant"
    assert tokenizer.decode(content_ids(ids, server), skip_special_tokens=True) == choice["message"]["content"]
    entries = choice["logprobs"]["content"]
    assert len(entries) == len(ids)
    for entry, token_id in zip(entries, ids, strict=True):
        assert entry["logprob"] <= 0.0
        assert entry["token"] == tokenizer.decode([token_id])
        assert isinstance(entry["bytes"], list)
    usage = body["usage"]
    assert usage == {
        "prompt_tokens": len(expected_prompt),
        "completion_tokens": len(ids),
        "total_tokens": len(expected_prompt) + len(ids),
    }
    assert choice["finish_reason"] in ("stop", "length")
    if choice["finish_reason"] == "stop":
        assert ids[-1] in server.engine.eos_token_ids


def test_response_ids_are_unique(client: httpx.Client) -> None:
    ids = {chat(client, max_tokens=1)["id"] for _ in range(3)}
    assert len(ids) == 3


def test_bytes_of_tokens_rebuild_the_utf8_text(client: httpx.Client, server: ModelServer) -> None:
    # The random model emits byte tokens that split characters: only the bytes rebuild the text exactly.
    body = chat(client, max_tokens=64, temperature=0, ignore_eos=True)
    choice = body["choices"][0]
    raw = b"".join(bytes(entry["bytes"]) for entry in choice["logprobs"]["content"])
    expected = server.engine.tokenizer.decode(choice["token_ids"], skip_special_tokens=False)
    assert raw.decode("utf-8", errors="replace") == expected


def test_logprobs_are_the_raw_model_distribution(client: httpx.Client, server: ModelServer) -> None:
    """Sampled at temperature 1.5 with top-p, the reported logprobs still match a plain forward pass."""
    body = chat(client, max_tokens=16, temperature=1.5, top_p=0.9, seed=3, ignore_eos=True)
    prompt, ids = body["prompt_token_ids"], body["choices"][0]["token_ids"]
    reported = [entry["logprob"] for entry in body["choices"][0]["logprobs"]["content"]]
    with torch.inference_mode():
        logits = server.engine.model(torch.tensor([prompt + ids])).logits[0].float()
    expected = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1].gather(1, torch.tensor(ids)[:, None])
    assert reported == pytest.approx(expected.squeeze(1).tolist(), abs=2e-4)


def test_top_logprobs(client: httpx.Client) -> None:
    body = chat(client, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    for entry in body["choices"][0]["logprobs"]["content"]:
        tops = entry["top_logprobs"]
        assert len(tops) == 3
        values = [top["logprob"] for top in tops]
        assert values == sorted(values, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert entry["logprob"] == pytest.approx(values[0])
        assert {"token", "logprob", "bytes"} <= set(tops[0])


# -- sampling ---------------------------------------------------------------------------------------


def test_greedy_is_deterministic(client: httpx.Client) -> None:
    first = chat(client, max_tokens=32, temperature=0)["choices"][0]
    second = chat(client, max_tokens=32, temperature=0)["choices"][0]
    assert first["token_ids"] == second["token_ids"]
    assert first["message"]["content"] == second["message"]["content"]


def test_seed_reproduces_sampling_and_n_gives_choices(client: httpx.Client) -> None:
    first = chat(client, max_tokens=16, temperature=1.0, seed=11, n=3)
    second = chat(client, max_tokens=16, temperature=1.0, seed=11, n=3)
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert [c["token_ids"] for c in first["choices"]] == [c["token_ids"] for c in second["choices"]]
    assert len({tuple(c["token_ids"]) for c in first["choices"]}) > 1
    assert first["usage"]["completion_tokens"] == sum(len(c["token_ids"]) for c in first["choices"])


def test_max_tokens_and_max_completion_tokens(client: httpx.Client) -> None:
    body = chat(client, max_tokens=5, temperature=0, ignore_eos=True)
    assert len(body["choices"][0]["token_ids"]) == 5 and body["choices"][0]["finish_reason"] == "length"
    body = chat(client, max_completion_tokens=3, max_tokens=50, temperature=0, ignore_eos=True)
    assert len(body["choices"][0]["token_ids"]) == 3


def test_stop_string_cuts_the_text(client: httpx.Client) -> None:
    full = chat(client, max_tokens=48, temperature=0, ignore_eos=True)["choices"][0]["message"]["content"]
    stop = next(full[i : i + 2] for i in range(8, len(full) - 2) if full[i : i + 2].strip() == full[i : i + 2])
    body = chat(client, max_tokens=48, temperature=0, ignore_eos=True, stop=[stop])
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == full[: full.index(stop)]
    streamed = stream_events(
        client,
        "/v1/chat/completions",
        {"messages": MESSAGES, "max_tokens": 48, "temperature": 0, "ignore_eos": True, "stop": stop},
    )
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in streamed if e.get("choices"))
    assert text == choice["message"]["content"]


def test_stop_token_ids(client: httpx.Client) -> None:
    ids = chat(client, max_tokens=16, temperature=0, ignore_eos=True)["choices"][0]["token_ids"]
    body = chat(client, max_tokens=16, temperature=0, ignore_eos=True, stop_token_ids=[ids[3]])
    assert body["choices"][0]["token_ids"] == ids[: ids.index(ids[3]) + 1]
    assert body["choices"][0]["finish_reason"] == "stop"


# -- streaming --------------------------------------------------------------------------------------


def collect_chat_stream(events: List[Dict[str, Any]]) -> Tuple[List[int], str, List[float], List[str]]:
    ids: List[int] = []
    text = ""
    logprobs: List[float] = []
    finishes: List[str] = []
    for event in events:
        for choice in event.get("choices", []):
            ids += choice["token_ids"]
            text += choice["delta"].get("content") or ""
            if choice["logprobs"]:
                logprobs += [entry["logprob"] for entry in choice["logprobs"]["content"]]
            if choice["finish_reason"]:
                finishes.append(choice["finish_reason"])
    return ids, text, logprobs, finishes


def test_stream_matches_non_stream(client: httpx.Client) -> None:
    request = {"messages": MESSAGES, "max_tokens": 40, "temperature": 0}
    whole = chat(client, **request)
    events = stream_events(client, "/v1/chat/completions", {**request, "stream_options": {"include_usage": True}})
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert len({e["id"] for e in events}) == 1
    assert events[0]["prompt_token_ids"] == whole["prompt_token_ids"]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    ids, text, logprobs, finishes = collect_chat_stream(events)
    choice = whole["choices"][0]
    assert ids == choice["token_ids"]
    assert text == choice["message"]["content"]
    assert logprobs == pytest.approx([entry["logprob"] for entry in choice["logprobs"]["content"]])
    assert finishes == [choice["finish_reason"]]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    # Every chunk that carries ids carries one logprob per id.
    for event in events[1:-1]:
        for c in event["choices"]:
            assert len(c["token_ids"]) == (len(c["logprobs"]["content"]) if c["logprobs"] else 0)


def test_stream_with_n_choices(client: httpx.Client) -> None:
    request = {"messages": MESSAGES, "max_tokens": 12, "temperature": 1.0, "seed": 5, "n": 2}
    whole = chat(client, **request)
    events = stream_events(client, "/v1/chat/completions", request)
    for index in (0, 1):
        ids = [i for e in events for c in e["choices"] if c["index"] == index for i in c["token_ids"]]
        assert ids == whole["choices"][index]["token_ids"]


# -- completions ------------------------------------------------------------------------------------


def test_completions_with_text_and_token_prompts(client: httpx.Client, server: ModelServer) -> None:
    tokenizer = server.engine.tokenizer
    body = client.post(
        "/v1/completions", json={"prompt": "The answer is", "max_tokens": 10, "temperature": 0, "logprobs": 2}
    ).json()
    prompt_ids = tokenizer.encode("The answer is", add_special_tokens=False)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["prompt_token_ids"] == prompt_ids
    (choice,) = body["choices"]
    assert choice["prompt_token_ids"] == prompt_ids
    assert tokenizer.decode(content_ids(choice["token_ids"], server), skip_special_tokens=True) == choice["text"]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(choice["token_ids"])
    assert all(value <= 0 for value in logprobs["token_logprobs"])
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])

    by_ids = client.post("/v1/completions", json={"prompt": prompt_ids, "max_tokens": 10, "temperature": 0}).json()
    assert by_ids["choices"][0]["token_ids"] == choice["token_ids"]

    events = stream_events(client, "/v1/completions", {"prompt": prompt_ids, "max_tokens": 10, "temperature": 0})
    assert events[0]["prompt_token_ids"] == prompt_ids
    assert [i for e in events for c in e["choices"] for i in c["token_ids"]] == choice["token_ids"]
    assert "".join(c["text"] for e in events for c in e["choices"]) == choice["text"]


def test_completions_with_several_prompts(client: httpx.Client) -> None:
    body = client.post(
        "/v1/completions", json={"prompt": ["one", "two"], "max_tokens": 4, "n": 2, "temperature": 0}
    ).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["token_ids"] == body["choices"][1]["token_ids"]  # greedy: same prompt, same ids


# -- batching and responsiveness ------------------------------------------------------------------


def test_concurrent_requests_are_decoded_in_one_batch(fresh_server: ModelServer) -> None:
    async def scenario() -> Tuple[List[Dict[str, Any]], float]:
        async with httpx.AsyncClient(base_url=fresh_server.url, timeout=60) as http:
            long = asyncio.create_task(
                http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 160, "ignore_eos": True})
            )
            while not fresh_server.engine.busy:  # the long request occupies the model...
                await asyncio.sleep(0.002)
            started = time.monotonic()
            health = await http.get("/health")  # ...and the server still answers at once
            health_seconds = time.monotonic() - started
            assert health.json()["busy"] is True
            short = [
                http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 8, "temperature": 0})
                for _ in range(4)
            ]
            responses = await asyncio.gather(long, *short)
            return [r.json() for r in responses], health_seconds

    bodies, health_seconds = asyncio.run(scenario())
    assert health_seconds < 1.0
    assert all(len(b["choices"][0]["token_ids"]) >= 1 for b in bodies)
    # Greedy answers of the batched requests equal each other (same prompt) and a request served alone.
    alone = fresh_server.engine.generate(bodies[1]["prompt_token_ids"], SamplingParams(max_tokens=8, temperature=0))
    for body in bodies[1:]:
        assert_same_greedy_tokens(
            fresh_server.engine, body["prompt_token_ids"], alone[0].token_ids, body["choices"][0]["token_ids"]
        )
    stats = httpx.get(f"{fresh_server.url}/v1/agl/model").json()["stats"]
    # The four short requests joined the long one's batch instead of waiting for it to finish.
    assert stats["joined_running_batch"] == 4
    assert stats["max_batch_rows"] >= 3
    assert stats["requests"] == 6


def test_requests_joining_a_running_batch_match_single_runs(fresh_server: ModelServer) -> None:
    """Rows that join mid-way (their cache left-padded to the batch's) decode exactly as they do alone."""
    engine = fresh_server.engine
    tokenizer = engine.tokenizer
    prompts = [tokenizer.encode(text, add_special_tokens=False) for text in ("a", "hello there", "x " * 60)]
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    alone = [engine.generate(p, params)[0].token_ids for p in prompts]

    started = threading.Event()
    results: Dict[int, List[int]] = {}

    def on_long_steps(steps: List[Any]) -> None:
        started.set()

    long = engine.submit(
        prompts[1], SamplingParams(max_tokens=400, ignore_eos=True), on_steps=on_long_steps, on_error=print
    )
    assert started.wait(30)
    joined_before = engine.stats["joined_running_batch"]
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, engine.generate(prompts[i], params)[0].token_ids))
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    long.cancel()
    assert sorted(results) == [0, 1, 2]
    for prompt, expected, index in zip(prompts, alone, range(3), strict=True):
        assert_same_greedy_tokens(engine, prompt, expected, results[index])
    assert engine.stats["joined_running_batch"] - joined_before >= 1


def test_batched_rows_with_different_lengths_match_single_runs(fresh_server: ModelServer) -> None:
    engine = fresh_server.engine
    tokenizer = engine.tokenizer
    prompts = [tokenizer.encode(text, add_special_tokens=False) for text in ("a", "hello there", "x " * 40)]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    alone = [engine.generate(p, params)[0].token_ids for p in prompts]

    async def together() -> List[Dict[str, Any]]:
        async with httpx.AsyncClient(base_url=fresh_server.url, timeout=60) as http:
            calls = [
                http.post("/v1/completions", json={"prompt": p, "max_tokens": 12, "temperature": 0, "ignore_eos": True})
                for p in prompts
            ]
            return [r.json() for r in await asyncio.gather(*calls)]

    batched = asyncio.run(together())
    for prompt, expected, body in zip(prompts, alone, batched, strict=True):
        assert_same_greedy_tokens(engine, prompt, expected, body["choices"][0]["token_ids"])


def test_client_disconnect_frees_the_model(fresh_server: ModelServer) -> None:
    with httpx.Client(base_url=fresh_server.url, timeout=60) as http:
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True, "stream": True},
        ) as response:
            next(response.iter_lines())
        deadline = time.monotonic() + 20
        while fresh_server.engine.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fresh_server.engine.busy
        assert fresh_server.engine.stats["generated_tokens"] < 1500


def test_closing_the_engine_ends_requests_in_flight(tiny_model_path: Path) -> None:
    server = make_server(tiny_model_path).start_in_thread()
    try:

        async def scenario() -> Tuple[httpx.Response, List[str]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                body = {"messages": MESSAGES, "max_tokens": 1500, "ignore_eos": True}
                whole = asyncio.create_task(http.post("/v1/chat/completions", json=body))

                async def stream() -> List[str]:
                    async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                        return [line async for line in response.aiter_lines() if line]

                streamed = asyncio.create_task(stream())
                while server.engine.stats["generated_tokens"] < 20:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(server.engine.close)
                return await whole, await streamed

        response, lines = asyncio.run(scenario())
    finally:
        server.close()
    assert response.status_code == 503 and "shutting down" in response.json()["error"]["message"]
    assert lines[-1] == "data: [DONE]" and '"error"' in lines[-2]


# -- errors -----------------------------------------------------------------------------------------

BAD_CHAT_BODIES = [
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content",
    ),
    ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"messages": MESSAGES, "temperature": -1}, "temperature"),
    ({"messages": MESSAGES, "top_p": 0}, "top_p"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"messages": MESSAGES, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": MESSAGES, "n": 0}, "n"),
    ({"messages": MESSAGES, "n": 9}, "n"),  # more than the server's batch size
    ({"messages": MESSAGES, "stream": "yes"}, "stream"),
    ({"messages": MESSAGES, "stop": 5}, "stop"),
    ({"messages": MESSAGES, "seed": 1.5}, "seed"),
    ({"messages": MESSAGES, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
    ({"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
    ({"messages": MESSAGES, "tool_choice": 3}, "tool_choice"),
    ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
]


def assert_openai_error(response: httpx.Response, status: int, param: Any = ...) -> Dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not ...:
        assert error["param"] == param
    return error


@pytest.mark.parametrize("body,param", BAD_CHAT_BODIES)
def test_bad_chat_requests_get_400(client: httpx.Client, body: Dict[str, Any], param: str) -> None:
    assert_openai_error(client.post("/v1/chat/completions", json=body), 400, param)


@pytest.mark.parametrize("raw", [b"{", b"", b"[1, 2]", b"null", b'"text"'])
def test_bodies_that_are_not_json_objects_get_400(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


def test_unknown_model_gets_404(client: httpx.Client) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": MESSAGES}), 404)
    assert error["code"] == "model_not_found"


def test_prompt_longer_than_the_context_gets_400(tiny_model_path: Path) -> None:
    with make_server(tiny_model_path, context_length=64) as small:
        long = [{"role": "user", "content": "word " * 200}]
        response = httpx.post(f"{small.url}/v1/chat/completions", json={"messages": long}, timeout=30)
        assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
        response = httpx.post(f"{small.url}/v1/completions", json={"prompt": list(range(64))}, timeout=30)
        assert_openai_error(response, 400)
        # A request that fits still stops at the context limit.
        body = httpx.post(
            f"{small.url}/v1/completions", json={"prompt": [5] * 60, "ignore_eos": True}, timeout=30
        ).json()
        assert len(body["choices"][0]["token_ids"]) == 4 and body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"max_tokens": 3}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, "a"]}, "prompt"),
        ({"prompt": [10**9]}, "prompt"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "logprobs": 99}, "logprobs"),
    ],
)
def test_bad_completion_requests_get_400(client: httpx.Client, body: Dict[str, Any], param: str) -> None:
    assert_openai_error(client.post("/v1/completions", json=body), 400, param)


def test_unknown_route_and_method_get_json_errors(client: httpx.Client) -> None:
    assert_openai_error(client.get("/v1/nothing"), 404)
    assert_openai_error(client.get("/v1/chat/completions"), 405)


def test_oversized_body_gets_413(tiny_model_path: Path) -> None:
    engine_server = make_server(tiny_model_path)
    small = ModelServer(engine_server.engine, port=0, max_body_bytes=1024)
    with small:
        response = httpx.post(f"{small.url}/v1/completions", json={"prompt": "x" * 5000}, timeout=30)
        assert_openai_error(response, 413)


def test_tool_call_without_a_name_in_history_gets_400(client: httpx.Client) -> None:
    messages = [{"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": "{}"}}]}]
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": messages}), 400)


def test_history_with_tool_calls_and_null_content_is_rendered(client: httpx.Client, server: ModelServer) -> None:
    from agentlightning_testing.tiny_model import chat_messages_example

    messages = chat_messages_example()
    body = chat(client, messages=messages, tools=[CALCULATOR_TOOL], max_tokens=4)
    expected = server.engine.tokenizer.apply_chat_template(
        [
            *messages[:2],
            {
                **messages[2],
                "tool_calls": [
                    {
                        **messages[2]["tool_calls"][0],
                        "function": {"name": "calculator", "arguments": {"expression": "12+7"}},
                    }
                ],
            },
            messages[3],
        ],
        tools=[CALCULATOR_TOOL],
        add_generation_prompt=True,
        return_dict=False,
    )
    assert body["prompt_token_ids"] == expected
    rendered = server.engine.tokenizer.decode(body["prompt_token_ids"])
    assert '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12+7"}}\n</tool_call>' in rendered
    assert "<tool_response>\n19\n</tool_response>" in rendered


# -- the OpenAI SDK -----------------------------------------------------------------------------------


def test_openai_sdk_chat_and_stream(server: ModelServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.base_url, api_key="unused")
    request: Dict[str, Any] = {"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 20, "temperature": 0}
    completion = client.chat.completions.create(**request, logprobs=True, top_logprobs=2)
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    token_ids = (choice.model_extra or {})["token_ids"]
    assert len(choice.logprobs.content) == len(token_ids)
    assert all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content)
    assert (completion.model_extra or {})["prompt_token_ids"]
    assert completion.usage is not None and completion.usage.completion_tokens == len(token_ids)

    stream = client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    text, ids, usage = "", [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for delta_choice in chunk.choices:
            text += delta_choice.delta.content or ""
            ids += (delta_choice.model_extra or {}).get("token_ids", [])
    assert text == choice.message.content
    assert ids == token_ids
    assert usage is not None and usage.total_tokens == completion.usage.total_tokens

    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    legacy = client.completions.create(model=MODEL_NAME, prompt="Once upon", max_tokens=5, temperature=0)
    assert len((legacy.choices[0].model_extra or {})["token_ids"]) >= 1
