"""The OpenAI-compatible HTTP server in front of a :class:`~agentlightning_embedded.engine.GenerationEngine`.

Endpoints (aiohttp):

* ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE) or not.
* ``GET /v1/models``, ``GET /health``.
* ``GET /v1/agl/model``: model name, ``weights_version``, the loaded LoRA adapter, batching statistics.
* ``POST /v1/agl/model/weights {"path": ...}``, ``POST /v1/agl/model/lora {"path": ...}``,
  ``DELETE /v1/agl/model/lora``: swap weights without a restart (once the sequences in flight are done).

Tool calls: with ``tools`` in a chat request (and ``tool_choice`` other than ``"none"``), the output's
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks become OpenAI ``tool_calls`` (Qwen2.5's
format, as vLLM's ``hermes`` parser reads it). With ``lenient_tool_calls`` (the default) a reply that is
only such a JSON object naming an offered tool, without the tags or in a code fence, counts too.

Like vLLM with ``"return_token_ids": true``, *every* response carries the exact ids: the top-level
``prompt_token_ids`` (on a stream's first chunk) and each choice's ``token_ids`` (generated ids, the
final end-of-sequence id included; on a stream, the ids of each delta), and ``logprobs`` with one entry
per generated id. Logprobs are the raw model distribution's (see :mod:`~agentlightning_embedded.engine`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Union

from aiohttp import web

from agentlightning_embedded import DEFAULT_HOST, DEFAULT_PORT
from agentlightning_embedded.engine import (
    DEFAULT_PREFIX_CACHE_BYTES,
    EngineClosedError,
    GenerationEngine,
    GenerationHandle,
    PromptTooLongError,
    TokenStep,
)
from agentlightning_embedded.protocol import (
    ChatRequest,
    CompletionRequest,
    RequestError,
    SamplingParams,
    error_body,
    parse_chat_request,
    parse_completion_request,
)
from agentlightning_embedded.text import ParsedToolCall, ToolCallStreamParser

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ModelServer"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _byte_level_table() -> Dict[str, int]:
    """The character -> byte table of byte-level BPE (printable bytes stand for themselves, the rest are shifted)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class _TokenTexts:
    """Per-id token text and exact UTF-8 bytes for logprob entries, cached."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: Dict[int, Tuple[str, List[int]]] = {}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._table = _byte_level_table()
        self._added = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}

    def get(self, token_id: int) -> Tuple[str, List[int]]:
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._compute(token_id)
            self._cache[token_id] = cached
        return cached

    def _compute(self, token_id: int) -> Tuple[str, List[int]]:
        text = str(self._tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and token_id not in self._added:
            if self._byte_level and all(ch in self._table for ch in piece):
                return text, [self._table[ch] for ch in piece]
            fallback = _BYTE_FALLBACK.match(piece)
            if fallback:
                return text, [int(fallback.group(1), 16)]
        return text, list(text.encode("utf-8"))

    def entry(self, token_id: int, logprob: float, top: Tuple[Tuple[int, float], ...]) -> Dict[str, Any]:
        text, raw = self.get(token_id)
        return {
            "token": text,
            "logprob": logprob,
            "bytes": raw,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, b, lp in self._tops(top)],
        }

    def _tops(self, top: Tuple[Tuple[int, float], ...]) -> List[Tuple[str, List[int], float]]:
        return [(*self.get(i), lp) for i, lp in top]

    def legacy_top(self, top: Tuple[Tuple[int, float], ...]) -> Optional[Dict[str, float]]:
        return {t: lp for t, _b, lp in self._tops(top)} if top else None


@dataclass
class _Choice:
    """What one choice has produced so far."""

    index: int
    token_ids: List[int] = field(default_factory=list)
    logprobs: List[Dict[str, Any]] = field(default_factory=list)
    text: str = ""
    content: str = ""
    tool_calls: List[ParsedToolCall] = field(default_factory=list)
    finish_reason: Optional[str] = None
    parser: Optional[ToolCallStreamParser] = None


class _Generation:
    """The engine requests of one HTTP request, turned into an async stream of ``(prompt_index, steps)``."""

    def __init__(self, engine: GenerationEngine, prompts: List[List[int]], params: SamplingParams, n: int) -> None:
        self._queue: asyncio.Queue[Union[Tuple[int, List[TokenStep]], BaseException]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._remaining = len(prompts) * n
        self.handles: List[GenerationHandle] = []
        if n > engine.max_batch_size:
            raise RequestError(f"'n' must be at most {engine.max_batch_size}, the server's batch size", param="n")
        try:
            for index, prompt in enumerate(prompts):
                self.handles.append(
                    engine.submit(prompt, params, n=n, on_steps=self._steps_callback(index), on_error=self._put)
                )
        except PromptTooLongError as exc:
            self.cancel()
            raise RequestError(str(exc), code="context_length_exceeded")
        except BaseException:
            self.cancel()
            raise

    def _put(self, item: Union[Tuple[int, List[TokenStep]], BaseException]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass  # the event loop is gone (server stopped); nobody is waiting

    def _steps_callback(self, index: int) -> Callable[[List[TokenStep]], None]:
        return lambda steps: self._put((index, steps))

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()

    @property
    def weights_version(self) -> Optional[int]:
        return self.handles[0].weights_version if self.handles else None

    async def events(self) -> AsyncIterator[Tuple[int, List[TokenStep]]]:
        try:
            while self._remaining > 0:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                index, steps = item
                self._remaining -= sum(1 for step in steps if step.finish_reason is not None)
                yield index, steps
        finally:
            self.cancel()  # a client that went away frees its rows at the next step


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload), status=status, content_type="application/json")


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


class ModelServer:
    """Serves a :class:`GenerationEngine` over OpenAI's HTTP API (see the module docstring).

    Run it on an existing event loop with ``await server.start()`` / ``await server.stop()``, in a
    background thread with ``with ModelServer(...) as server:`` (or :meth:`start_in_thread`), or in the
    foreground with :meth:`serve_forever`. ``port=0`` picks a free port; :attr:`port` tells which.

    The weight-swap methods (:meth:`load_weights`, :meth:`load_lora`, :meth:`load_lora_state_dict`,
    :meth:`unload_lora`) block until the swap is applied, once the sequences in flight are done. Call them from any
    thread but the server's event loop (use the HTTP endpoints, or ``engine.run_between_batches``, there).
    """

    def __init__(
        self,
        engine: GenerationEngine,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        served_model_name: Optional[str] = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        lenient_tool_calls: bool = True,
    ) -> None:
        self.engine = engine
        self.lenient_tool_calls = lenient_tool_calls
        self.host = host
        self.port = port
        self.model_name = served_model_name or engine.model_name
        # Clients may name the model by its served name or by what it was loaded from.
        self._model_aliases = {self.model_name, engine.model_name}
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())
        self._tokens = _TokenTexts(engine.tokenizer)
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._thread_loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopped: Optional[asyncio.Event] = None

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "cpu",
        max_batch_size: int = 16,
        context_length: Optional[int] = None,
        default_max_tokens: Optional[int] = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        served_model_name: Optional[str] = None,
        lenient_tool_calls: bool = True,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> ModelServer:
        """Load ``model`` (a folder or a Hugging Face id) into a new engine and wrap it."""
        engine = GenerationEngine.from_pretrained(
            model,
            dtype=dtype,
            device=device,
            model_name=served_model_name,
            max_batch_size=max_batch_size,
            context_length=context_length,
            default_max_tokens=default_max_tokens,
            prefix_cache_bytes=prefix_cache_bytes,
        )
        return cls(
            engine, host=host, port=port, served_model_name=served_model_name, lenient_tool_calls=lenient_tool_calls
        )

    @property
    def url(self) -> str:
        """``http://host:port`` (the OpenAI base URL is ``url + "/v1"``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI client's ``base_url``."""
        return f"{self.url}/v1"

    # -- app ------------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._errors])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/agl/model", self._model_info)
        app.router.add_post("/v1/agl/model/weights", self._load_weights)
        app.router.add_post("/v1/agl/model/lora", self._load_lora)
        app.router.add_delete("/v1/agl/model/lora", self._unload_lora)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return _json_response(exc.body(), exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json_response(error_body(exc.status, exc.reason), exc.status)
        except EngineClosedError as exc:
            return _json_response(error_body(503, str(exc)), 503)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- a server bug must still answer in OpenAI's shape
            logger.exception("request %s %s failed", request.method, request.path)
            return _json_response(error_body(500, "internal server error; see the server log"), 500)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RequestError(f"the request body is not valid JSON: {exc}")

    def _check_model(self, model: Optional[str]) -> None:
        if model is not None and model not in self._model_aliases:
            raise RequestError(
                f"The model `{model}` does not exist; this server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
                status=404,
            )

    # -- OpenAI endpoints ---------------------------------------------------------------------

    async def _health(self, _request: web.Request) -> web.Response:
        return _json_response({"status": "ok", "busy": self.engine.busy, "queued": self.engine.queued})

    async def _models(self, _request: web.Request) -> web.Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "agentlightning",
            "max_model_len": self.engine.context_length,
        }
        return _json_response({"object": "list", "data": [card]})

    def _chat_prompt(self, chat: ChatRequest) -> List[int]:
        kwargs: Dict[str, Any] = dict(chat.template_kwargs)
        if chat.tools:
            kwargs["tools"] = chat.tools
        try:
            ids = self.engine.tokenizer.apply_chat_template(chat.messages, tokenize=True, return_dict=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- a template rejecting the messages is the client's input
            raise RequestError(f"the chat template cannot render these messages: {exc}", param="messages")
        if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding whatever return_dict says
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        chat = parse_chat_request(await self._body(request))
        self._check_model(chat.model)
        prompt = self._chat_prompt(chat)
        generation = _Generation(self.engine, [prompt], chat.params, chat.n)
        bare_names = [tool["function"]["name"] for tool in chat.tools or []] if self.lenient_tool_calls else None
        choices = [
            _Choice(i, parser=ToolCallStreamParser(bare_names) if chat.parse_tool_calls else None)
            for i in range(chat.n)
        ]
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_name}
        if chat.stream:
            return await self._stream_chat(request, generation, choices, prompt, meta, chat.include_usage)
        async for _index, steps in generation.events():
            for step in steps:
                self._chat_step(choices[step.choice], step)
        body = {
            **meta,
            "object": "chat.completion",
            "system_fingerprint": self._fingerprint(generation),
            "choices": [self._chat_choice(choice) for choice in choices],
            "usage": self._usage(len(prompt), choices),
            "prompt_token_ids": prompt,
        }
        return _json_response(body)

    def _fingerprint(self, generation: _Generation) -> str:
        version = generation.weights_version
        return f"agl-weights-{self.engine.weights_version if version is None else version}"

    def _chat_step(self, choice: _Choice, step: TokenStep) -> Dict[str, Any]:
        """Record one step of a chat choice; return its streamed delta (content and/or tool calls)."""
        choice.token_ids.append(step.token_id)
        entry = self._tokens.entry(step.token_id, step.logprob, step.top_logprobs)
        choice.logprobs.append(entry)
        choice.text += step.text
        content, calls = step.text, []
        if choice.parser is not None:
            parsed = choice.parser.feed(step.text)
            content, calls = parsed.content, parsed.tool_calls
            if step.finish_reason is not None:
                rest = choice.parser.finish()
                content += rest.content
                calls += rest.tool_calls
        choice.content += content
        first_call = len(choice.tool_calls)
        choice.tool_calls.extend(calls)
        if step.finish_reason is not None:
            choice.finish_reason = "tool_calls" if choice.tool_calls else step.finish_reason
        delta: Dict[str, Any] = {}
        if content:
            delta["content"] = content
        if calls:
            delta["tool_calls"] = [{"index": first_call + k, **call.to_openai()} for k, call in enumerate(calls)]
        return delta

    def _chat_choice(self, choice: _Choice) -> Dict[str, Any]:
        message: Dict[str, Any] = {"role": "assistant", "content": choice.content}
        if choice.parser is not None and choice.tool_calls:
            message["content"] = choice.content or None
            message["tool_calls"] = [call.to_openai() for call in choice.tool_calls]
        return {
            "index": choice.index,
            "message": message,
            "logprobs": {"content": choice.logprobs},
            "finish_reason": choice.finish_reason,
            "token_ids": choice.token_ids,
        }

    @staticmethod
    def _usage(prompt_tokens: int, choices: List[_Choice]) -> Dict[str, int]:
        completion = sum(len(choice.token_ids) for choice in choices)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    async def _stream_chat(
        self,
        request: web.Request,
        generation: _Generation,
        choices: List[_Choice],
        prompt: List[int],
        meta: Dict[str, Any],
        include_usage: bool,
    ) -> web.StreamResponse:
        response = await self._open_stream(request)
        header = {**meta, "object": "chat.completion.chunk"}

        def chunk(choice: int, delta: Dict[str, Any], ids: List[int], logprobs: Any, finish: Optional[str]) -> bytes:
            body = {
                **header,
                "system_fingerprint": self._fingerprint(generation),
                "choices": [
                    {"index": choice, "delta": delta, "logprobs": logprobs, "finish_reason": finish, "token_ids": ids}
                ],
            }
            return _sse(body)

        first = {
            **header,
            "system_fingerprint": self._fingerprint(generation),
            "choices": [
                {
                    "index": c.index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                    "token_ids": [],
                }
                for c in choices
            ],
            "prompt_token_ids": prompt,
        }
        await response.write(_sse(first))
        try:
            async for _index, steps in generation.events():
                payload = b""
                for step in steps:
                    choice = choices[step.choice]
                    delta = self._chat_step(choice, step)
                    payload += chunk(choice.index, delta, [step.token_id], {"content": [choice.logprobs[-1]]}, None)
                    if choice.finish_reason is not None:
                        payload += chunk(choice.index, {}, [], None, choice.finish_reason)
                await response.write(payload)
            if include_usage:
                await response.write(_sse({**header, "choices": [], "usage": self._usage(len(prompt), choices)}))
        except ConnectionResetError:
            return response  # the client went away; its rows were dropped
        except Exception as exc:  # noqa: BLE001 -- the status line is sent; report it in the stream
            logger.exception("streamed generation failed")
            await response.write(_sse(error_body(500, f"generation failed: {type(exc).__name__}: {exc}")))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _completion_prompts(self, completion: CompletionRequest) -> List[List[int]]:
        prompts = []
        for prompt in completion.prompts:
            if isinstance(prompt, str):
                ids = [int(i) for i in self.engine.tokenizer.encode(prompt, add_special_tokens=False)]
                if not ids:
                    raise RequestError("the prompt is empty", param="prompt")
            else:
                bad = next((i for i in prompt if not 0 <= i < self.engine.vocab_size), None)
                if bad is not None:
                    raise RequestError(
                        f"token id {bad} is outside the vocabulary (0..{self.engine.vocab_size - 1})", param="prompt"
                    )
                ids = list(prompt)
            prompts.append(ids)
        return prompts

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        completion = parse_completion_request(await self._body(request))
        self._check_model(completion.model)
        prompts = self._completion_prompts(completion)
        n = completion.n
        generation = _Generation(self.engine, prompts, completion.params, n)
        choices = [_Choice(i) for i in range(len(prompts) * n)]
        offsets = [0] * len(choices)
        meta = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model_name}
        header = {**meta, "object": "text_completion"}

        def record(prompt_index: int, step: TokenStep) -> Tuple[_Choice, Dict[str, Any]]:
            choice = choices[prompt_index * n + step.choice]
            text, _raw = self._tokens.get(step.token_id)
            logprobs = {
                "tokens": [text],
                "token_logprobs": [step.logprob],
                "top_logprobs": [self._tokens.legacy_top(step.top_logprobs)],
                "text_offset": [offsets[choice.index]],
            }
            offsets[choice.index] += len(step.text)
            choice.token_ids.append(step.token_id)
            choice.logprobs.append(logprobs)
            choice.text += step.text
            choice.finish_reason = step.finish_reason
            return choice, logprobs

        def choice_body(choice: _Choice, prompt_index: int) -> Dict[str, Any]:
            merged: Dict[str, List[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            for entry in choice.logprobs:
                for key in merged:
                    merged[key].extend(entry[key])
            return {
                "index": choice.index,
                "text": choice.text,
                "logprobs": merged,
                "finish_reason": choice.finish_reason,
                "token_ids": choice.token_ids,
                "prompt_token_ids": prompts[prompt_index],
            }

        prompt_tokens = sum(len(p) for p in prompts)
        if not completion.stream:
            async for prompt_index, steps in generation.events():
                for step in steps:
                    record(prompt_index, step)
            body = {
                **header,
                "system_fingerprint": self._fingerprint(generation),
                "choices": [choice_body(c, c.index // n) for c in choices],
                "usage": self._usage(prompt_tokens, choices),
                "prompt_token_ids": prompts[0],
            }
            return _json_response(body)

        response = await self._open_stream(request)
        first = True
        try:
            async for prompt_index, steps in generation.events():
                payload = b""
                for step in steps:
                    choice, logprobs = record(prompt_index, step)
                    chunk: Dict[str, Any] = {
                        **header,
                        "choices": [
                            {
                                "index": choice.index,
                                "text": step.text,
                                "logprobs": logprobs,
                                "finish_reason": step.finish_reason,
                                "token_ids": [step.token_id],
                            }
                        ],
                    }
                    if first:
                        chunk["prompt_token_ids"] = prompts[0]
                        first = False
                    payload += _sse(chunk)
                await response.write(payload)
            if completion.include_usage:
                await response.write(_sse({**header, "choices": [], "usage": self._usage(prompt_tokens, choices)}))
        except ConnectionResetError:
            return response  # the client went away; its rows were dropped
        except Exception as exc:  # noqa: BLE001 -- the status line is sent; report it in the stream
            logger.exception("streamed generation failed")
            await response.write(_sse(error_body(500, f"generation failed: {type(exc).__name__}: {exc}")))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- model management ---------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """What ``GET /v1/agl/model`` answers."""
        engine = self.engine
        return {
            "model": self.model_name,
            "weights_version": engine.weights_version,
            "lora": {"loaded": engine.lora_source is not None, "source": engine.lora_source},
            "context_length": engine.context_length,
            "max_batch_size": engine.max_batch_size,
            "dtype": str(next(engine.model.parameters()).dtype).replace("torch.", ""),
            "device": str(engine.device),
            "busy": engine.busy,
            "queued": engine.queued,
            "stats": dict(engine.stats),
        }

    async def _model_info(self, _request: web.Request) -> web.Response:
        return _json_response(self.info())

    async def _path_from_body(self, request: web.Request) -> Path:
        body = await self._body(request)
        path = body.get("path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path:
            raise RequestError('the body must be {"path": "..."}', param="path")
        resolved = Path(path).expanduser()
        if not resolved.exists():
            raise RequestError(f"{resolved} does not exist", param="path", code="not_found")
        return resolved

    async def _swap(self, swap: Future[int]) -> web.Response:
        try:
            await asyncio.wrap_future(swap)
        except (ValueError, OSError) as exc:
            raise RequestError(str(exc), param="path")
        return _json_response(self.info())

    async def _load_weights(self, request: web.Request) -> web.Response:
        path = await self._path_from_body(request)
        return await self._swap(self.engine.request_load_weights(path))

    async def _load_lora(self, request: web.Request) -> web.Response:
        path = await self._path_from_body(request)
        return await self._swap(self.engine.request_load_lora(path))

    async def _unload_lora(self, _request: web.Request) -> web.Response:
        return await self._swap(self.engine.request_unload_lora())

    def load_weights(self, source: Union[str, Path, Mapping[str, Any]]) -> int:
        """See :meth:`GenerationEngine.load_weights`; returns the new ``weights_version``."""
        return self.engine.load_weights(source)

    def load_lora(self, adapter: Union[str, Path]) -> int:
        """See :meth:`GenerationEngine.load_lora`; returns the new ``weights_version``."""
        return self.engine.load_lora(adapter)

    def load_lora_state_dict(self, state_dict: Mapping[str, Any], config: Any, *, name: str = "in-memory") -> int:
        """See :meth:`GenerationEngine.load_lora_state_dict`; returns the new ``weights_version``."""
        return self.engine.load_lora_state_dict(state_dict, config, name=name)

    def unload_lora(self) -> int:
        """See :meth:`GenerationEngine.unload_lora`; returns the new ``weights_version``."""
        return self.engine.unload_lora()

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on :attr:`host`:`port` from the running event loop (``port=0``: a free port)."""
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        # Bind the socket ourselves so a port of 0 resolves to the real one.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self.port = int(sock.getsockname()[1])
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening (the engine keeps running; :meth:`close` stops both)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self, timeout: float = 30.0) -> ModelServer:
        """Serve from a background thread with its own event loop; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        ready = threading.Event()
        failure: List[BaseException] = []

        async def run() -> None:
            self._stopped = asyncio.Event()
            try:
                await self.start()
            except BaseException as exc:  # noqa: BLE001 -- handed to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._stopped.wait()
            await self.stop()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(run())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="agl-model-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the model server did not start in time")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop_thread(self, timeout: float = 30.0) -> None:
        """Stop a server started with :meth:`start_in_thread` (the engine keeps running)."""
        thread, loop, stopped = self._thread, self._thread_loop, self._stopped
        if thread is None or loop is None or stopped is None:
            return
        loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop the engine (requests in flight fail at once instead of holding the shutdown) and stop serving."""
        self.engine.close()
        self.stop_thread()

    def __enter__(self) -> ModelServer:
        return self.start_in_thread()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def serve_forever(self, on_ready: Optional[Callable[[ModelServer], None]] = None) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM; ``on_ready`` runs once listening."""

        async def run() -> None:
            await self.start()
            if on_ready is not None:
                on_ready(self)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(signum, stop.set)
                except (NotImplementedError, RuntimeError):
                    pass  # not the main thread, or Windows: Ctrl-C raises KeyboardInterrupt instead
            try:
                await stop.wait()
            finally:
                # Requests in flight fail at once (503 / an error event) instead of holding the shutdown.
                await asyncio.to_thread(self.engine.close)
                await self.stop()

        try:
            asyncio.run(run())
        finally:
            self.engine.close()
