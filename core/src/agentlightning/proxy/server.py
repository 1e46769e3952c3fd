"""The LLM proxy: an OpenAI-compatible front that records every call as a span with exact token ids
(design notes: ``docs/internals.md``)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, List, Mapping, Optional, Protocol, Sequence, Union

import aiohttp
from aiohttp import web

from agentlightning.errors import AgentLightningError, InvalidTransitionError, NotFoundError
from agentlightning.proxy.records import (
    CHAT,
    TEXT_COMPLETION,
    CallRecord,
    ResponsesStreamAccumulator,
    StreamAccumulator,
    build_span,
    engine_token_ids,
    parse_traceparent,
)
from agentlightning.semconv import TOKEN_IDS_RETOKENIZED, LLMCallAttributes
from agentlightning.types import LLM, ProxyLLM, Span

if TYPE_CHECKING:
    from agentlightning.store.base import LightningStore

__all__ = ["AGENT_NAME_HEADER", "CallTokenizer", "LLMProxy", "ProxyBackend", "ProxyStats"]

logger = logging.getLogger(__name__)

AGENT_NAME_HEADER = "X-AGL-Agent-Name"
"""Optional request header naming the agent that makes the call (recorded as ``gen_ai.agent.name``)."""

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


class CallTokenizer(Protocol):
    """Computes the token ids of one call (``operation`` is ``"chat"`` or ``"text_completion"``) for
    backends that return none, and to check those that do for drift."""

    def prompt_ids(self, operation: str, request: Dict[str, Any]) -> List[int]: ...

    def response_ids(self, operation: str, request: Dict[str, Any], response: Dict[str, Any]) -> List[int]: ...


def _first_difference(expected: Sequence[int], actual: Sequence[int]) -> Optional[Dict[str, Any]]:
    """``None`` when equal, else where they first differ and both lengths."""
    if list(expected) == list(actual):
        return None
    position = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), min(len(expected), len(actual))
    )
    return {
        "position": position,
        "engine_length": len(expected),
        "retokenized_length": len(actual),
        "engine": list(expected[position : position + 8]),
        "retokenized": list(actual[position : position + 8]),
    }


@dataclass
class ProxyBackend:
    """An OpenAI-compatible server the proxy forwards to, for ``models`` (``None``: any).

    ``request_extras`` / ``responses_request_extras`` are added to request bodies that lack them (vLLM's
    token-id switches); ``tokenizer`` (a :class:`CallTokenizer`, or a Hugging Face tokenizer or its name
    or path, wrapped by the tokenizer registered as ``huggingface``) lets the proxy compute token ids a
    backend does not return, and check for drift when it does.
    """

    base_url: str
    models: Optional[Sequence[str]] = None
    api_key: Optional[str] = None
    request_extras: Mapping[str, Any] = field(default_factory=dict)
    responses_request_extras: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: Union[CallTokenizer, str, None] = None  # or a loaded Hugging Face tokenizer
    name: Optional[str] = None
    timeout_seconds: float = 600.0
    upstream_model: Optional[str] = None
    """The model name sent to the backend, when it differs from the one clients ask for."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"backend base_url must start with http:// or https://, got {self.base_url!r}")
        self.base_url = self.base_url.rstrip("/")
        if self.name is None:
            self.name = self.base_url
        if self.tokenizer is not None and not hasattr(self.tokenizer, "prompt_ids"):
            from agentlightning.plugins import resolve

            self.tokenizer = resolve("tokenizers", "huggingface")(self.tokenizer)

    @classmethod
    def vllm(cls, base_url: str, **kwargs: Any) -> "ProxyBackend":
        """A vLLM server: ask it for token ids and logprobs on every call."""
        extras = {"return_token_ids": True, "logprobs": True, **dict(kwargs.pop("request_extras", {}))}
        responses_extras = {"enable_response_messages": True, **dict(kwargs.pop("responses_request_extras", {}))}
        return cls(base_url, request_extras=extras, responses_request_extras=responses_extras, **kwargs)

    def serves(self, model: Optional[str]) -> bool:
        return self.models is None or model in self.models


@dataclass
class ProxyStats:
    """Counters over the proxy's lifetime; ``drift_*`` count calls where both kinds of ids were known."""

    calls: int = 0
    streamed: int = 0
    errors: int = 0
    engine_token_ids: int = 0
    retokenized: int = 0
    without_token_ids: int = 0
    drift_checked: int = 0
    drift_calls: int = 0
    prompt_drift: int = 0
    response_drift: int = 0
    spans_pending: int = 0

    def as_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The lines of a response body, each with its line end, however long.

    aiohttp's own line iterator refuses lines over 128 KiB; a Responses API stream's last event holds
    the whole response on one line.
    """
    buffer = bytearray()
    async for piece in content.iter_any():
        start = len(buffer)
        buffer.extend(piece)
        end = buffer.find(b"\n", start)
        begin = 0
        while end >= 0:
            yield bytes(buffer[begin : end + 1])
            begin = end + 1
            end = buffer.find(b"\n", begin)
        del buffer[:begin]
    if buffer:
        yield bytes(buffer)


class _ProxyError(Exception):
    def __init__(self, status: int, message: str, error_type: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.param = param

    def response(self) -> web.Response:
        body = {"error": {"message": str(self), "type": self.error_type, "param": self.param, "code": self.status}}
        return web.json_response(body, status=self.status)


class LLMProxy:
    """Records LLM calls into ``store``; forwards them to ``backends``. Runs on the current loop
    (``await proxy.start()``) or on a thread of its own (``start_in_thread()``/``with proxy:``, for
    agents using the synchronous OpenAI client)."""

    def __init__(
        self,
        store: Union["LightningStore", str, None] = None,
        backends: Optional[Sequence[ProxyBackend]] = None,
        *,
        host: Optional[str] = "127.0.0.1",
        port: Optional[int] = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        model_list: Optional[Sequence[Mapping[str, Any]]] = None,
        callbacks: Optional[Sequence[str]] = None,
        litellm_config: Optional[Mapping[str, Any]] = None,
        num_retries: int = 0,
        num_workers: int = 1,
        launch_mode: str = "thread",
        launcher_args: Any = None,
        middlewares: Optional[Sequence[str]] = None,
    ) -> None:
        # model_list/callbacks are 0.3's LiteLLM-style configuration (see agentlightning.llm_proxy);
        # the other LiteLLM and launcher options of 0.3 are accepted and have no effect.
        if isinstance(store, str):
            from agentlightning.store import open_store

            store = open_store(store)
        self.store: LightningStore = store  # type: ignore[assignment]  # 0.3 allows set_store() later
        self.host = host or "127.0.0.1"
        self.port = port or 0
        self.max_body_bytes = max_body_bytes
        self.callbacks = list(callbacks) if callbacks is not None else None
        self.stats = ProxyStats()
        self._backends: List[ProxyBackend] = []
        self._round_robin = itertools.count()
        if model_list is not None:
            self.update_model_list(model_list)
        elif backends is not None:
            self.update_backends(backends)
        else:
            raise ValueError("the proxy needs backends (or a 0.3 model_list)")
        self._runner: Optional[web.AppRunner] = None
        self._session: Optional[aiohttp.ClientSession] = None
        self._pending: List[Span] = []
        self._thread: Optional[threading.Thread] = None
        self._thread_loop: Optional[asyncio.AbstractEventLoop] = None

    # ----------------------------------------------------------------------------------------- setup
    def update_backends(self, backends: Sequence[ProxyBackend]) -> None:
        """Replace the backends; calls already in flight finish on the old ones."""
        if not backends:
            raise ValueError("the proxy needs at least one backend")
        self._backends = list(backends)

    def update_model_list(self, model_list: Sequence[Mapping[str, Any]]) -> None:
        """0.3: replace the backends by LiteLLM-style model entries (effective at once, no restart needed)."""
        from agentlightning.llm_proxy import backends_from_model_list

        self.update_backends(backends_from_model_list(model_list, self.callbacks))

    @property
    def backends(self) -> List[ProxyBackend]:
        return list(self._backends)

    def get_store(self) -> Any:
        return self.store

    def set_store(self, store: Any) -> None:
        self.store = store

    def is_running(self) -> bool:
        return self.running

    async def restart(self, _port: Optional[int] = None) -> "LLMProxy":
        """Stop and start again (on the same port unless ``_port`` is given)."""
        await self.stop()
        if _port is not None:
            self.port = _port
        return await self.start()

    @property
    def running(self) -> bool:
        """Whether it listens (``start()`` or ``start_in_thread()`` was called, ``stop`` not yet)."""
        return self._runner is not None

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the proxy is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def base_url_for(self, rollout_id: str, attempt_id: str) -> str:
        """The OpenAI ``base_url`` an agent uses for one attempt."""
        return f"{self.url}/rollout/{rollout_id}/attempt/{attempt_id}/v1"

    def as_resource(
        self,
        rollout_id: Optional[str] = None,
        attempt_id: Optional[str] = None,
        model: Optional[str] = None,
        sampling_parameters: Optional[Dict[str, Any]] = None,
    ) -> LLM:
        """A :class:`ProxyLLM` resource that runners turn into each attempt's route; with both
        ``rollout_id`` and ``attempt_id``, the concrete :class:`LLM` of that attempt.

        ``model`` may be left out when the backends serve one model name. The arguments come in
        0.3's order; the short form ``as_resource("my-model", {"temperature": 0.7})`` works too.
        """
        if model is None and rollout_id is not None and (attempt_id is None or not isinstance(attempt_id, str)):
            model, rollout_id = rollout_id, None
            if attempt_id is not None:
                sampling_parameters, attempt_id = attempt_id, None
        if (rollout_id is None) != (attempt_id is None):
            raise ValueError("give both rollout_id and attempt_id, or neither")
        if model is None:
            names = {name for backend in self._backends for name in (backend.models or [])}
            if len(names) != 1 or any(backend.models is None for backend in self._backends):
                raise ValueError(f"the proxy serves {sorted(names) or 'any model'}; say which with model=")
            model = names.pop()
        parameters = dict(sampling_parameters or {})
        if rollout_id is not None and attempt_id is not None:
            return LLM(endpoint=self.base_url_for(rollout_id, attempt_id), model=model, sampling_parameters=parameters)
        return ProxyLLM(endpoint=f"{self.url}/v1", model=model, sampling_parameters=parameters)

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        # The Responses API is a chat with another wire format (GenAI semantic conventions name it `chat`).
        calls = (("chat/completions", CHAT), ("completions", TEXT_COMPLETION), ("responses", CHAT))
        for prefix in ("/rollout/{rollout_id}/attempt/{attempt_id}/v1", "/v1"):
            for path, operation in calls:
                app.router.add_post(f"{prefix}/{path}", functools.partial(self._call, operation=operation, path=path))
            app.router.add_get(prefix + "/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/agl/proxy/stats", self._stats)
        return app

    async def start(self) -> "LLMProxy":
        if self._runner is not None:
            return self
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=True,
        )
        runner = web.AppRunner(self._build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(runner.addresses[0][1])
        self._runner = runner
        logger.info("LLM proxy listening on %s", self.url)
        return self

    async def stop(self) -> None:
        """Stop serving; spans not yet stored are written one last time."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._store_pending()
        if self._pending:
            logger.error("LLM proxy stopped with %d span(s) the store did not accept", len(self._pending))

    async def __aenter__(self) -> "LLMProxy":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> "LLMProxy":
        """Serve from a daemon thread with its own event loop; returns once it listens."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: List[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="agl-llm-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop_thread(self) -> None:
        if self._thread is None or self._thread_loop is None:
            return
        self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
        self._thread.join(timeout=30)
        self._thread = None
        self._thread_loop = None

    def __enter__(self) -> "LLMProxy":
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # -------------------------------------------------------------------------------------- routing
    def _pick_backend(self, model: Optional[str]) -> ProxyBackend:
        candidates = [b for b in self._backends if b.serves(model)]
        if not candidates:
            served = sorted({m for b in self._backends for m in (b.models or [])})
            raise _ProxyError(
                404, f"model {model!r} is not served by this proxy; models: {served}", "model_not_found", "model"
            )
        return candidates[next(self._round_robin) % len(candidates)]

    async def _read_body(self, request: web.Request) -> tuple[Dict[str, Any], bytes]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise _ProxyError(413, f"request body is over {self.max_body_bytes} bytes", "request_too_large") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _ProxyError(400, f"request body is not valid JSON: {exc}", "invalid_request_error") from exc
        if not isinstance(body, dict):
            raise _ProxyError(400, "request body must be a JSON object", "invalid_request_error")
        if "model" in body and not isinstance(body["model"], str):
            raise _ProxyError(
                400, f"model must be a string, got {body['model']!r:.100}", "invalid_request_error", "model"
            )
        return body, raw

    async def _reserve(self, request: web.Request) -> tuple[str, str, int]:
        rollout_id = request.match_info.get("rollout_id")
        attempt_id = request.match_info.get("attempt_id")
        if rollout_id is None or attempt_id is None:
            rollout_id = request.headers.get("X-AGL-Rollout-Id")
            attempt_id = request.headers.get("X-AGL-Attempt-Id")
        if not rollout_id or not attempt_id:
            return "", "", 0
        try:
            sequence_id = await self.store.get_next_span_sequence_id(rollout_id, attempt_id)
        except NotFoundError as exc:
            raise _ProxyError(404, str(exc), "rollout_not_found") from exc
        except AgentLightningError as exc:
            raise _ProxyError(503, f"the store refused the call: {exc}", "store_unavailable") from exc
        return rollout_id, attempt_id, sequence_id

    # ------------------------------------------------------------------------------------- handlers
    async def _call(self, request: web.Request, *, operation: str, path: str) -> web.StreamResponse:
        try:
            body, raw = await self._read_body(request)
            backend = self._pick_backend(body.get("model"))
            rollout_id, attempt_id, sequence_id = await self._reserve(request)
        except _ProxyError as exc:
            return exc.response()
        trace_id, parent_id = parse_traceparent(request.headers.get("traceparent"))
        record = CallRecord(
            operation=operation,
            request=body,
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            backend=backend.name or backend.base_url,
            stream=bool(body.get("stream")),
            agent_name=request.headers.get(AGENT_NAME_HEADER),
            trace_id=trace_id,
            parent_span_id=parent_id,
            request_text=raw.decode("utf-8", "replace"),
            responses_api=path == "responses",
        )
        extras = backend.responses_request_extras if record.responses_api else backend.request_extras
        outgoing = {**{k: v for k, v in extras.items() if k not in body}, **body}
        if backend.upstream_model:
            outgoing["model"] = backend.upstream_model
        headers = {"Content-Type": "application/json"}
        auth = f"Bearer {backend.api_key}" if backend.api_key else request.headers.get("Authorization")
        if auth:
            headers["Authorization"] = auth
        assert self._session is not None
        try:
            upstream = await self._session.post(
                f"{backend.base_url}/{path}",
                data=json.dumps(outgoing),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=backend.timeout_seconds, sock_connect=10),
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            message = f"backend {backend.name} is unreachable: {type(exc).__name__}: {exc}"
            record.error = message
            await self._finish(record, backend)
            return _ProxyError(502, message, "backend_unreachable").response()
        try:
            if record.stream and upstream.status == 200:
                return await self._relay_stream(request, upstream, record, backend)
            return await self._relay_whole(upstream, record, backend)
        finally:
            upstream.release()

    async def _relay_whole(
        self, upstream: aiohttp.ClientResponse, record: CallRecord, backend: ProxyBackend
    ) -> web.Response:
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            record.error = f"backend {record.backend} failed mid-response: {exc}"
            await self._finish(record, backend)
            return _ProxyError(502, record.error, "backend_error").response()
        record.status_code = upstream.status
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        if upstream.status >= 400:
            record.error = payload.decode("utf-8", "replace")[:4000]
        elif isinstance(parsed, dict):
            record.response = parsed
            record.response_text = payload.decode("utf-8", "replace")
        else:
            record.error = f"backend {record.backend} answered {upstream.status} with a body that is not JSON"
        await self._finish(record, backend)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        return web.Response(body=payload, status=upstream.status, headers=headers)

    async def _relay_stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, record: CallRecord, backend: ProxyBackend
    ) -> web.StreamResponse:
        record.status_code = upstream.status
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        accumulator: Union[StreamAccumulator, ResponsesStreamAccumulator] = (
            ResponsesStreamAccumulator() if record.responses_api else StreamAccumulator(record.operation)
        )
        # The stream's end (chat's `data: [DONE]`, the Responses API's terminal event) is sent only
        # after the span is stored.
        held: List[bytes] = []
        try:
            async for line in _lines(upstream.content):
                if held:
                    held.append(line)
                    continue
                stripped = line.strip()
                if stripped.startswith(b"data:"):
                    data = stripped[5:].strip()
                    if data == b"[DONE]":
                        held.append(line)
                        continue
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        chunk = None
                    if isinstance(chunk, dict):
                        accumulator.add(chunk)
                        if accumulator.finished:
                            held.append(line)
                            continue
                await response.write(line)
            record.error = accumulator.error
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            record.error = f"backend {record.backend} failed mid-stream: {type(exc).__name__}: {exc}"
        except (ConnectionResetError, asyncio.CancelledError):
            record.error = "the client went away mid-stream"
            record.response = accumulator.response()
            await self._finish(record, backend)
            raise
        record.response = accumulator.response()
        await self._finish(record, backend)
        for line in held:
            await response.write(line)
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        models = sorted({m for b in self._backends for m in (b.models or [])})
        if not models and self._session is not None:
            backend = self._backends[0]
            try:
                async with self._session.get(f"{backend.base_url}/models", timeout=aiohttp.ClientTimeout(10)) as r:
                    return web.Response(body=await r.read(), status=r.status, content_type="application/json")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                return _ProxyError(
                    502, f"backend {backend.name} is unreachable: {exc}", "backend_unreachable"
                ).response()
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "agentlightning"} for m in models]}
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    # ------------------------------------------------------------------------------------ recording
    async def _finish(self, record: CallRecord, backend: ProxyBackend) -> None:
        record.end_time = time.time()
        stats = self.stats
        stats.calls += 1
        stats.streamed += int(record.stream)
        stats.errors += int(record.error is not None)
        if not record.rollout_id:
            return  # a call outside any rollout: forwarded, not recorded
        span = build_span(record)
        await self._add_token_ids(record, span, backend)
        await self._store(span)

    async def _add_token_ids(self, record: CallRecord, span: Span, backend: ProxyBackend) -> None:
        if record.response is None or record.error is not None:
            return
        engine_prompt, engine_response = engine_token_ids(record.response)
        has_engine_ids = engine_prompt is not None and engine_response is not None
        # Re-tokenizing renders chat messages; Responses API items are not rendered (yet).
        retokenizer = None if record.responses_api or isinstance(backend.tokenizer, str) else backend.tokenizer
        if has_engine_ids:
            self.stats.engine_token_ids += 1
        if retokenizer is None:
            if not has_engine_ids:
                self.stats.without_token_ids += 1
            return
        try:
            prompt_ids, response_ids = await asyncio.to_thread(
                lambda: (
                    retokenizer.prompt_ids(record.operation, record.request),
                    retokenizer.response_ids(record.operation, record.request, record.response or {}),
                )
            )
        except Exception as exc:  # a tokenizer failing must not lose the call
            logger.warning("re-tokenizing a call for rollout %s failed: %s", record.rollout_id, exc)
            return
        attributes = span.attributes
        if not has_engine_ids:
            self.stats.retokenized += 1
            attributes[LLMCallAttributes.PROMPT_TOKEN_IDS] = prompt_ids
            attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] = response_ids
            attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] = TOKEN_IDS_RETOKENIZED
            return
        assert engine_prompt is not None and engine_response is not None
        prompt_drift = _first_difference(engine_prompt, prompt_ids)
        response_drift = _first_difference(engine_response, response_ids)
        self.stats.drift_checked += 1
        self.stats.prompt_drift += int(prompt_drift is not None)
        self.stats.response_drift += int(response_drift is not None)
        drifted = prompt_drift is not None or response_drift is not None
        self.stats.drift_calls += int(drifted)
        attributes[LLMCallAttributes.RETOKENIZATION_DRIFT] = drifted
        if drifted:
            attributes[LLMCallAttributes.DRIFT_DETAIL] = json.dumps(
                {"prompt": prompt_drift, "response": response_drift}
            )
            logger.info(
                "re-tokenization drift on rollout %s: %s", record.rollout_id, attributes[LLMCallAttributes.DRIFT_DETAIL]
            )

    async def _store(self, span: Span) -> None:
        self._pending.append(span)
        await self._store_pending()

    async def _store_pending(self) -> None:
        """Write every span not yet accepted; what fails stays pending and is retried with the next call."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self.store.add_many_spans(batch)
        except (NotFoundError, InvalidTransitionError) as exc:
            if len(batch) == 1:
                logger.error("dropping a proxy span the store refuses: %s", exc)
            else:  # one refused span must not take the others of the batch with it
                for span in batch:
                    try:
                        await self.store.add_many_spans([span])
                    except (NotFoundError, InvalidTransitionError) as refused:
                        logger.error("dropping a proxy span the store refuses: %s", refused)
                    except Exception:
                        self._pending.append(span)
        except Exception as exc:
            logger.warning("the store did not accept %d proxy span(s), will retry: %s", len(batch), exc)
            self._pending = batch + self._pending
        self.stats.spans_pending = len(self._pending)
