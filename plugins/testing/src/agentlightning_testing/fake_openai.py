"""A local OpenAI-compatible server for tests.

It answers ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses`` (the Responses API) and
``GET /v1/models`` on 127.0.0.1 with an ephemeral port, from a background thread, so synchronous and asynchronous tests can use it alike::

    with FakeOpenAIServer() as server:
        server.enqueue(FakeReply.tool_call("calculator", {"expression": "2+2"}), FakeReply.text("4"))
        client = OpenAI(base_url=server.base_url, api_key="unused")
        ...
        assert server.requests[0]["model"] == "fake-model"

Scripted replies are consumed in order, one per request (replies queued with :meth:`FakeOpenAIServer.enqueue_for`
first, for requests whose last user message contains their marker). With no scripted reply left, a
default policy answers: a request that offers ``tools`` and holds no ``role == "tool"`` message yet gets
one call to the first tool, with arguments synthesised from its JSON schema; any other request gets
``"The result is <last tool message>."``, or the server's ``default_text`` when there is no tool message.

Like vLLM, a request with ``"return_token_ids": true`` gets ``prompt_token_ids`` (the UTF-8 bytes of the
JSON of its messages, or of its prompt) and per-choice ``token_ids`` (the UTF-8 bytes of the generated
text, or of the tool call's name and arguments); ``logprobs`` get one entry per token id. Streams carry
``prompt_token_ids`` on their first chunk and ``token_ids`` on every delta. The Responses API follows
vLLM too: ``"enable_response_messages": true`` adds ``input_messages`` / ``output_messages`` with the
prompt's and the output's ids (``tokens``), and ``include: ["message.output_text.logprobs"]`` adds
logprobs to the output text. Its streams send the Responses API's typed events, ending with
``response.completed`` (which holds the whole response).

This module needs only aiohttp (a core dependency), not pytest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Literal, Mapping, Optional, Sequence, Tuple

from aiohttp import web

__all__ = ["FakeOpenAIServer", "FakeReply", "FakeToolCall", "ReceivedRequest", "BAD_MODEL", "DEFAULT_TEXT"]

BAD_MODEL = "bad-model"
"""Requests for this model are answered with HTTP 400, without consuming a scripted reply."""

DEFAULT_TEXT = "Hello from the fake OpenAI server."

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: Dict[str, Any]
    call_id: Optional[str] = None

    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer. Build it with :meth:`text`, :meth:`tool_call`, :meth:`tool_calls` or :meth:`error`."""

    kind: Literal["text", "tool_calls", "error"]
    content: str = ""
    calls: Tuple[FakeToolCall, ...] = ()
    status: int = 200
    error_message: str = ""
    error_type: Optional[str] = None
    error_code: Optional[str] = None
    delay: float = 0.0
    """Seconds to wait before answering (before the first byte of a stream)."""
    chunk_delay: float = 0.0
    """Seconds to wait between two chunks of a stream."""
    token_ids: Optional[Tuple[int, ...]] = None
    """Completion token ids to report instead of the UTF-8 bytes of the generated text."""
    finish_reason: Optional[str] = None

    @classmethod
    def text(
        cls,
        content: str,
        *,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        token_ids: Optional[Sequence[int]] = None,
        finish_reason: str = "stop",
    ) -> FakeReply:
        return cls(
            kind="text",
            content=content,
            delay=delay,
            chunk_delay=chunk_delay,
            token_ids=tuple(token_ids) if token_ids is not None else None,
            finish_reason=finish_reason,
        )

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Optional[Mapping[str, Any]] = None,
        *,
        call_id: Optional[str] = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        token_ids: Optional[Sequence[int]] = None,
    ) -> FakeReply:
        return cls.tool_calls(
            FakeToolCall(name, dict(arguments or {}), call_id),
            delay=delay,
            chunk_delay=chunk_delay,
            token_ids=token_ids,
        )

    @classmethod
    def tool_calls(
        cls,
        *calls: FakeToolCall,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        token_ids: Optional[Sequence[int]] = None,
    ) -> FakeReply:
        if not calls:
            raise ValueError("FakeReply.tool_calls needs at least one FakeToolCall")
        return cls(
            kind="tool_calls",
            calls=tuple(calls),
            delay=delay,
            chunk_delay=chunk_delay,
            token_ids=tuple(token_ids) if token_ids is not None else None,
            finish_reason="tool_calls",
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: Optional[str] = None,
        code: Optional[str] = None,
        delay: float = 0.0,
    ) -> FakeReply:
        if status < 400:
            raise ValueError(f"an error reply needs an HTTP error status, got {status}")
        return cls(kind="error", status=status, error_message=message, error_type=type, error_code=code, delay=delay)


@dataclass
class ReceivedRequest:
    """A request as the server saw it. ``headers`` keys are lower-case; ``body`` is None for GET requests."""

    method: str
    path: str
    headers: Dict[str, str]
    body: Optional[Dict[str, Any]]
    received_at: float = field(default_factory=time.time)
    status: Optional[int] = None
    """The HTTP status answered (None while the request is being answered)."""
    response_id: Optional[str] = None
    """The ``id`` of the completion answered, so tests can join it with recorded spans."""


# --- Pure helpers: reply selection, token ids, response bodies ---------------------------------------------


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string, a list of content parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: List[str] = []
        for part in content:
            if isinstance(part, Mapping):
                part_text = part.get("text")
                if isinstance(part_text, str):
                    texts.append(part_text)
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return str(content)


def _messages(body: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    raw = body.get("messages")
    if not isinstance(raw, list):
        return []
    return [message for message in raw if isinstance(message, Mapping)]


def _input_items(body: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The Responses API's ``input``: a string is one user message."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, Mapping)]


def _last_user_text(body: Mapping[str, Any]) -> str:
    if "prompt" in body:
        return _text_of(body.get("prompt"))
    for message in reversed(_messages(body) or _input_items(body)):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _value_for_schema(schema: Any) -> Any:
    """A plausible value for a JSON schema, so a framework's argument validation accepts it."""
    if not isinstance(schema, Mapping):
        return "Paris"
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    for union_key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(union_key)
        if isinstance(options, list):
            non_null = [
                option for option in options if not (isinstance(option, Mapping) and option.get("type") == "null")
            ]
            if non_null:
                return _value_for_schema(non_null[0])
    schema_type = schema.get("type")
    if isinstance(schema_type, list):
        schema_type = next((item for item in schema_type if item != "null"), "string")
    if schema_type in ("integer", "number"):
        return 2
    if schema_type == "boolean":
        return True
    if schema_type == "array":
        return [_value_for_schema(schema.get("items"))] if isinstance(schema.get("items"), Mapping) else []
    if schema_type == "object" or "properties" in schema:
        return _arguments_for_schema(schema)
    return "Paris"


def _arguments_for_schema(schema: Any) -> Dict[str, Any]:
    if not isinstance(schema, Mapping):
        return {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {str(name): _value_for_schema(property_schema) for name, property_schema in properties.items()}


def _first_tool(body: Mapping[str, Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """Name and synthesised arguments of the first function tool the request offers."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        nested = tool.get("function")
        # Chat tools nest the function; Responses-style tools are flat.
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else tool
        name = function.get("name")
        if isinstance(name, str) and name:
            return name, _arguments_for_schema(function.get("parameters"))
    return None


def _tool_results(body: Mapping[str, Any]) -> List[str]:
    """Tool results the request sends back: chat ``role == "tool"`` messages, Responses ``function_call_output`` items."""
    results = [_text_of(message.get("content")) for message in _messages(body) if message.get("role") == "tool"]
    results.extend(
        _text_of(item.get("output")) for item in _input_items(body) if item.get("type") == "function_call_output"
    )
    return results


def _default_reply(body: Mapping[str, Any], default_text: str) -> FakeReply:
    tool_results = _tool_results(body)
    first_tool = _first_tool(body)
    if first_tool is not None and not tool_results:
        return FakeReply.tool_call(first_tool[0], first_tool[1])
    if tool_results:
        return FakeReply.text(f"The result is {tool_results[-1]}.")
    return FakeReply.text(default_text)


def _utf8_ids(text: str) -> List[int]:
    return list(text.encode("utf-8"))


def _prompt_token_ids(body: Mapping[str, Any]) -> List[int]:
    """Deterministic prompt ids: the UTF-8 bytes of the prompt, or of the canonical JSON of the messages."""
    return _utf8_ids(_prompt_text(body))


def _prompt_text(body: Mapping[str, Any]) -> str:
    if "prompt" in body:
        return _text_of(body.get("prompt"))
    if "input" in body:  # the Responses API
        prompt = {"instructions": body.get("instructions"), "input": body.get("input")}
        return json.dumps(prompt, sort_keys=True, separators=(",", ":"))
    return json.dumps(body.get("messages", []), sort_keys=True, separators=(",", ":"))


def _token_text(token_id: int) -> str:
    return chr(token_id) if 32 <= token_id < 127 else f"<0x{token_id:02X}>"


def _token_logprob(token_id: int) -> float:
    # Deterministic, strictly negative and different across ids, so tests can check alignment.
    return -0.01 * (1 + token_id % 17)


def _top_logprobs_count(body: Mapping[str, Any]) -> int:
    value = body.get("top_logprobs")
    return value if isinstance(value, int) and value > 0 else 0


def _chat_logprobs(token_ids: Sequence[int], top_count: int) -> Dict[str, Any]:
    entries: List[Dict[str, Any]] = []
    for token_id in token_ids:
        token = _token_text(token_id)
        logprob = _token_logprob(token_id)
        alternatives = [
            {
                "token": _token_text((token_id + rank) % 256),
                "logprob": logprob - rank,
                "bytes": [(token_id + rank) % 256],
            }
            for rank in range(top_count)
        ]
        entries.append({"token": token, "logprob": logprob, "bytes": [token_id % 256], "top_logprobs": alternatives})
    return {"content": entries, "refusal": None}


def _completion_logprobs(token_ids: Sequence[int], text_offset: int) -> Dict[str, Any]:
    tokens = [_token_text(token_id) for token_id in token_ids]
    return {
        "tokens": tokens,
        "token_logprobs": [_token_logprob(token_id) for token_id in token_ids],
        "top_logprobs": [{token: _token_logprob(token_id)} for token, token_id in zip(tokens, token_ids, strict=True)],
        "text_offset": list(range(text_offset, text_offset + len(token_ids))),
    }


def _wants_logprobs(body: Mapping[str, Any]) -> bool:
    value = body.get("logprobs")
    return value is not None and value is not False


def _split_text(text: str) -> List[str]:
    """Stream pieces: a word with its trailing spaces each, so a stream has several content deltas."""
    pieces = re.findall(r"\s*\S+\s*", text)
    return pieces or [text]


def _split_ids(token_ids: Sequence[int], parts: int) -> List[List[int]]:
    """``token_ids`` cut into ``parts`` consecutive slices (forced ids rarely align with the text pieces)."""
    parts = max(parts, 1)
    base, extra = divmod(len(token_ids), parts)
    slices: List[List[int]] = []
    start = 0
    for index in range(parts):
        size = base + (1 if index < extra else 0)
        slices.append(list(token_ids[start : start + size]))
        start += size
    return slices


def _error_body(status: int, message: str, error_type: Optional[str], code: Optional[str]) -> Dict[str, Any]:
    resolved_type = error_type or _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": resolved_type, "param": None, "code": code}}


class _Generation:
    """What a reply generates for one request: text or tool calls, with their completion token ids."""

    def __init__(self, reply: FakeReply, *, as_text: bool) -> None:
        self.reply = reply
        self.tool_calls: List[Dict[str, Any]] = []
        if reply.kind == "tool_calls" and not as_text:
            self.content: Optional[str] = None
            for call in reply.calls:
                self.tool_calls.append(
                    {
                        "id": call.call_id or f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json()},
                    }
                )
            generated_text = "".join(
                call["function"]["name"] + call["function"]["arguments"] for call in self.tool_calls
            )
        elif reply.kind == "tool_calls":
            # The legacy completions API has no tool calls: render them as JSON text.
            self.content = json.dumps([{"name": call.name, "arguments": call.arguments} for call in reply.calls])
            generated_text = self.content
        else:
            self.content = reply.content
            generated_text = reply.content
        self.generated_text = generated_text
        self.token_ids: List[int] = list(reply.token_ids) if reply.token_ids is not None else _utf8_ids(generated_text)
        self.finish_reason = reply.finish_reason or ("tool_calls" if self.tool_calls else "stop")


# --- The server ---------------------------------------------------------------------------------------------


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server in a background thread, for tests. See the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_text: str = DEFAULT_TEXT,
        models: Sequence[str] = ("fake-model",),
        default_delay: float = 0.0,
    ) -> None:
        self.host = host
        self.default_text = default_text
        self.default_delay = default_delay
        """Seconds the default policy waits before answering (a stand-in for model latency)."""
        self.models = list(models)
        self._requested_port = port
        self._port: Optional[int] = None
        self._lock = threading.Lock()
        self._queue: Deque[FakeReply] = deque()
        self._marker_queues: Dict[str, Deque[FakeReply]] = {}
        self._received: List[ReceivedRequest] = []
        self._ids = itertools.count(1)
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._ready = threading.Event()
        self._startup_error: Optional[BaseException] = None

    # -- lifecycle --

    def start(self) -> FakeOpenAIServer:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._serve, name="fake-openai-server", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._startup_error is not None or self._port is None:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError(f"fake OpenAI server did not start: {self._startup_error!r}")
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = None
        self._loop = None
        self._port = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to the starting thread
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle_chat)
        app.router.add_post("/v1/completions", self._handle_completions)
        app.router.add_post("/v1/responses", self._handle_responses)
        app.router.add_get("/v1/models", self._handle_models)
        # Anything else is recorded too (without its body) and answered 404, so tests can prove a call never happened.
        app.router.add_route("*", "/{path:.*}", self._handle_unknown)
        # A short shutdown timeout: tests stop the server while clients may keep idle connections.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        # Bind the socket ourselves so the ephemeral port is known without aiohttp internals.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        self._runner = runner
        await web.SockSite(runner, listener).start()
        self._port = int(listener.getsockname()[1])

    # -- public state --

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake OpenAI server is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, what OpenAI clients take as ``base_url``."""
        return f"{self.url}/v1"

    def enqueue(self, *replies: FakeReply) -> None:
        """Script the next replies, consumed in order by requests that no marker matches."""
        with self._lock:
            self._queue.extend(replies)

    def enqueue_for(self, marker: str, *replies: FakeReply) -> None:
        """Script replies for requests whose last user message (or prompt) contains ``marker``.

        Concurrent tests use distinct markers so each conversation gets its own script.
        """
        with self._lock:
            self._marker_queues.setdefault(marker, deque()).extend(replies)

    @property
    def pending(self) -> int:
        """How many scripted replies are still waiting for a request."""
        with self._lock:
            return len(self._queue) + sum(len(queue) for queue in self._marker_queues.values())

    @property
    def received(self) -> List[ReceivedRequest]:
        with self._lock:
            return list(self._received)

    @property
    def requests(self) -> List[Dict[str, Any]]:
        """The bodies of the POST requests received, in order."""
        with self._lock:
            return [request.body for request in self._received if request.body is not None]

    def response_ids(self, marker: Optional[str] = None) -> List[str]:
        """Ids of the completions answered, in order; with ``marker``, only for requests whose last user
        message (or prompt) contains it."""
        with self._lock:
            records = list(self._received)
        return [
            record.response_id
            for record in records
            if record.response_id is not None
            and (marker is None or (record.body is not None and marker in _last_user_text(record.body)))
        ]

    def reset(self) -> None:
        """Forget scripted replies and received requests."""
        with self._lock:
            self._queue.clear()
            self._marker_queues.clear()
            self._received.clear()

    # -- request handling --

    def _record(self, request: web.Request, body: Optional[Dict[str, Any]]) -> ReceivedRequest:
        headers = {key.lower(): value for key, value in request.headers.items()}
        record = ReceivedRequest(request.method, request.path, headers, body)
        with self._lock:
            self._received.append(record)
        return record

    def _next_reply(self, body: Mapping[str, Any]) -> FakeReply:
        user_text = _last_user_text(body)
        with self._lock:
            for marker, queue in self._marker_queues.items():
                if queue and marker in user_text:
                    return queue.popleft()
            if self._queue:
                return self._queue.popleft()
        reply = _default_reply(body, self.default_text)
        return dataclasses.replace(reply, delay=self.default_delay) if self.default_delay > 0 else reply

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids)}{uuid.uuid4().hex[:12]}"

    async def _read_body(self, request: web.Request) -> Tuple[Dict[str, Any], ReceivedRequest, Optional[web.Response]]:
        """The JSON body and its record, or an error response to send instead."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = self._record(request, None)
            record.status = 400
            return {}, record, self._error_response(400, "the request body is not valid JSON", None, None)
        if not isinstance(body, dict):
            record = self._record(request, None)
            record.status = 400
            return {}, record, self._error_response(400, "the request body must be a JSON object", None, None)
        record = self._record(request, body)
        if body.get("model") == BAD_MODEL:
            record.status = 400
            failure = self._error_response(
                400, f"The model `{BAD_MODEL}` does not exist.", "invalid_request_error", "model_not_found"
            )
            return body, record, failure
        return body, record, None

    @staticmethod
    def _error_response(status: int, message: str, error_type: Optional[str], code: Optional[str]) -> web.Response:
        return web.json_response(_error_body(status, message, error_type, code), status=status)

    async def _handle_models(self, request: web.Request) -> web.Response:
        self._record(request, None).status = 200
        created = int(time.time())
        data = [{"id": model, "object": "model", "created": created, "owned_by": "fake"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        self._record(request, None).status = 404
        return self._error_response(404, f"no route for {request.method} {request.path}", None, None)

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=True)

    async def _handle_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=False)

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        body, record, failure = await self._read_body(request)
        if failure is not None:
            return failure
        reply = self._next_reply(body)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.kind == "error":
            record.status = reply.status
            return self._error_response(reply.status, reply.error_message, reply.error_type, reply.error_code)
        generation = _Generation(reply, as_text=False)
        response_id = self._new_id("resp")
        record.status, record.response_id = 200, response_id
        response = self._responses_body(body, generation, response_id)
        if body.get("stream"):
            return await self._stream_responses(request, body, generation, response)
        return web.json_response(response)

    async def _answer(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body, record, failure = await self._read_body(request)
        if failure is not None:
            return failure
        reply = self._next_reply(body)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.kind == "error":
            record.status = reply.status
            return self._error_response(reply.status, reply.error_message, reply.error_type, reply.error_code)
        generation = _Generation(reply, as_text=not chat)
        response_id = self._new_id("chatcmpl" if chat else "cmpl")
        record.status, record.response_id = 200, response_id
        if chat and body.get("stream"):
            return await self._stream_chat(request, body, generation, response_id)
        if chat:
            return web.json_response(self._chat_body(body, generation, response_id))
        if body.get("stream"):
            return await self._stream_completion(request, body, generation, response_id)
        return web.json_response(self._completion_body(body, generation, response_id))

    # -- response bodies --

    @staticmethod
    def _usage(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> Dict[str, int]:
        return {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(completion_ids),
            "total_tokens": len(prompt_ids) + len(completion_ids),
        }

    def _chat_body(self, body: Mapping[str, Any], generation: _Generation, response_id: str) -> Dict[str, Any]:
        prompt_ids = _prompt_token_ids(body)
        message: Dict[str, Any] = {"role": "assistant", "content": generation.content, "refusal": None}
        if generation.tool_calls:
            message["tool_calls"] = generation.tool_calls
        choice: Dict[str, Any] = {
            "index": 0,
            "message": message,
            "finish_reason": generation.finish_reason,
            "logprobs": (
                _chat_logprobs(generation.token_ids, _top_logprobs_count(body)) if _wants_logprobs(body) else None
            ),
        }
        response: Dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [choice],
            "usage": self._usage(prompt_ids, generation.token_ids),
        }
        if body.get("return_token_ids"):
            choice["token_ids"] = generation.token_ids
            response["prompt_token_ids"] = prompt_ids
        return response

    def _completion_body(self, body: Mapping[str, Any], generation: _Generation, response_id: str) -> Dict[str, Any]:
        prompt_ids = _prompt_token_ids(body)
        choice: Dict[str, Any] = {
            "index": 0,
            "text": generation.content or "",
            "finish_reason": generation.finish_reason,
            "logprobs": _completion_logprobs(generation.token_ids, 0) if _wants_logprobs(body) else None,
        }
        response: Dict[str, Any] = {
            "id": response_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [choice],
            "usage": self._usage(prompt_ids, generation.token_ids),
        }
        if body.get("return_token_ids"):
            choice["token_ids"] = generation.token_ids
            response["prompt_token_ids"] = prompt_ids
        return response

    def _responses_body(self, body: Mapping[str, Any], generation: _Generation, response_id: str) -> Dict[str, Any]:
        """A completed Responses API ``Response``: a message, or one ``function_call`` item per tool call."""
        prompt_ids = _prompt_token_ids(body)
        include = body.get("include")
        with_logprobs = isinstance(include, list) and "message.output_text.logprobs" in include
        output: List[Dict[str, Any]] = []
        for call in generation.tool_calls:
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex[:24]}",
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                    "status": "completed",
                }
            )
        if not generation.tool_calls:
            text_part: Dict[str, Any] = {"type": "output_text", "text": generation.content or "", "annotations": []}
            if with_logprobs:
                text_part["logprobs"] = _chat_logprobs(generation.token_ids, _top_logprobs_count(body))["content"]
            output.append(
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex[:24]}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [text_part],
                }
            )
        response: Dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body.get("model", ""),
            "output": output,
            "instructions": body.get("instructions"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": {},
            "error": None,
            "incomplete_details": None,
            "usage": {
                "input_tokens": len(prompt_ids),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": len(generation.token_ids),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": len(prompt_ids) + len(generation.token_ids),
            },
        }
        if body.get("enable_response_messages"):
            # vLLM's shape: the rendered prompt and output, each with its token ids.
            response["input_messages"] = [
                {"type": "raw_message_tokens", "message": _prompt_text(body), "tokens": prompt_ids}
            ]
            response["output_messages"] = [
                {"type": "raw_message_tokens", "message": generation.generated_text, "tokens": generation.token_ids}
            ]
        return response

    async def _stream_responses(
        self, request: web.Request, body: Mapping[str, Any], generation: _Generation, response: Dict[str, Any]
    ) -> web.StreamResponse:
        """The Responses API's typed events for ``response``; ``response.completed`` carries it whole."""
        stream = await self._open_stream(request)
        delay = generation.reply.chunk_delay
        sequence = itertools.count()

        async def send(event_type: str, pause: float = 0.0, **fields: Any) -> None:
            if pause > 0:
                await asyncio.sleep(pause)
            payload = {"type": event_type, "sequence_number": next(sequence), **fields}
            await stream.write(f"event: {event_type}\ndata: {json.dumps(payload)}\n\n".encode())

        started = {**response, "status": "in_progress", "output": [], "usage": None}
        await send("response.created", response=started)
        await send("response.in_progress", response=started)
        for index, item in enumerate(response["output"]):
            if item["type"] == "function_call":
                await send("response.output_item.added", output_index=index, item={**item, "arguments": ""})
                arguments: str = item["arguments"]
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    if piece:
                        await send(
                            "response.function_call_arguments.delta",
                            delay,
                            item_id=item["id"],
                            output_index=index,
                            delta=piece,
                        )
                await send(
                    "response.function_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments
                )
            else:
                part = item["content"][0]
                empty_part = {"type": "output_text", "text": "", "annotations": []}
                await send("response.output_item.added", output_index=index, item={**item, "content": []})
                common = {"item_id": item["id"], "output_index": index, "content_index": 0}
                await send("response.content_part.added", part=empty_part, **common)
                pieces = _split_text(part["text"])
                logprobs = part.get("logprobs") or []
                if generation.reply.token_ids is None:
                    id_counts = [len(_utf8_ids(piece)) for piece in pieces]
                else:
                    id_counts = [len(ids) for ids in _split_ids(generation.token_ids, len(pieces))]
                offset = 0
                for piece, count in zip(pieces, id_counts, strict=True):
                    piece_logprobs = logprobs[offset : offset + count]
                    offset += count
                    await send("response.output_text.delta", delay, delta=piece, logprobs=piece_logprobs, **common)
                await send("response.output_text.done", text=part["text"], logprobs=logprobs, **common)
                await send("response.content_part.done", part=part, **common)
            await send("response.output_item.done", output_index=index, item=item)
        await send("response.completed", delay, response=response)
        await stream.write_eof()
        return stream

    # -- streams --

    @staticmethod
    async def _open_stream(request: web.Request) -> web.StreamResponse:
        stream = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await stream.prepare(request)
        return stream

    @staticmethod
    async def _send(stream: web.StreamResponse, payload: Mapping[str, Any], chunk_delay: float) -> None:
        if chunk_delay > 0:
            await asyncio.sleep(chunk_delay)
        await stream.write(f"data: {json.dumps(payload)}\n\n".encode())

    @staticmethod
    def _stream_pieces(generation: _Generation) -> List[Tuple[Dict[str, Any], List[int]]]:
        """Chat deltas with the completion token ids each one carries."""
        deltas: List[Dict[str, Any]] = []
        if generation.tool_calls:
            for index, call in enumerate(generation.tool_calls):
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                arguments: str = call["function"]["arguments"]
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    if piece:
                        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        else:
            deltas = [{"content": piece} for piece in _split_text(generation.content or "")]
        if generation.reply.token_ids is None and not generation.tool_calls:
            id_slices = [_utf8_ids(delta["content"]) for delta in deltas]
        else:
            id_slices = _split_ids(generation.token_ids, len(deltas))
        return list(zip(deltas, id_slices, strict=True))

    async def _stream_chat(
        self, request: web.Request, body: Mapping[str, Any], generation: _Generation, response_id: str
    ) -> web.StreamResponse:
        stream = await self._open_stream(request)
        created = int(time.time())
        model = body.get("model", "")
        with_ids = bool(body.get("return_token_ids"))
        with_logprobs = _wants_logprobs(body)
        top_count = _top_logprobs_count(body)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, Mapping) and bool(stream_options.get("include_usage"))
        prompt_ids = _prompt_token_ids(body)
        delay = generation.reply.chunk_delay

        def chunk(choices: List[Dict[str, Any]]) -> Dict[str, Any]:
            payload: Dict[str, Any] = {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if include_usage:
                payload["usage"] = None
            return payload

        first = chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}]
        )
        if with_ids:
            first["prompt_token_ids"] = prompt_ids
            first["choices"][0]["token_ids"] = []
        await self._send(stream, first, 0.0)
        for delta, ids in self._stream_pieces(generation):
            choice: Dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "finish_reason": None,
                "logprobs": _chat_logprobs(ids, top_count) if with_logprobs else None,
            }
            if with_ids:
                choice["token_ids"] = ids
            await self._send(stream, chunk([choice]), delay)
        last: Dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": generation.finish_reason, "logprobs": None}
        if with_ids:
            last["token_ids"] = []
        await self._send(stream, chunk([last]), delay)
        if include_usage:
            usage_chunk = chunk([])
            usage_chunk["usage"] = self._usage(prompt_ids, generation.token_ids)
            await self._send(stream, usage_chunk, 0.0)
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()
        return stream

    async def _stream_completion(
        self, request: web.Request, body: Mapping[str, Any], generation: _Generation, response_id: str
    ) -> web.StreamResponse:
        stream = await self._open_stream(request)
        created = int(time.time())
        model = body.get("model", "")
        with_ids = bool(body.get("return_token_ids"))
        with_logprobs = _wants_logprobs(body)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, Mapping) and bool(stream_options.get("include_usage"))
        prompt_ids = _prompt_token_ids(body)
        pieces = _split_text(generation.content or "")
        if generation.reply.token_ids is None:
            id_slices = [_utf8_ids(piece) for piece in pieces]
        else:
            id_slices = _split_ids(generation.token_ids, len(pieces))
        offset = 0
        for index, (piece, ids) in enumerate(zip(pieces, id_slices, strict=True)):
            is_last = index == len(pieces) - 1
            choice: Dict[str, Any] = {
                "index": 0,
                "text": piece,
                "finish_reason": generation.finish_reason if is_last else None,
                "logprobs": _completion_logprobs(ids, offset) if with_logprobs else None,
            }
            offset += len(ids)
            payload: Dict[str, Any] = {
                "id": response_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
            }
            if with_ids:
                choice["token_ids"] = ids
                if index == 0:
                    payload["prompt_token_ids"] = prompt_ids
            await self._send(stream, payload, generation.reply.chunk_delay if index else 0.0)
        if include_usage:
            usage_payload = {
                "id": response_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": self._usage(prompt_ids, generation.token_ids),
            }
            await self._send(stream, usage_payload, 0.0)
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()
        return stream
