"""What the proxy learns from one LLM call (also streamed, also the Responses API), and the span it
becomes (design notes: ``docs/internals.md``)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from agentlightning.semconv import (
    TOKEN_IDS_FROM_ENGINE,
    GenAIAttributes,
    LLMCallAttributes,
    rollout_resource_attributes,
)
from agentlightning.types import OtelResource, Span, TraceStatus

__all__ = [
    "CallRecord",
    "ResponsesStreamAccumulator",
    "StreamAccumulator",
    "engine_token_ids",
    "response_logprobs",
    "responses_finish_reasons",
    "build_span",
    "parse_traceparent",
]

CHAT = "chat"
TEXT_COMPLETION = "text_completion"


@dataclass
class CallRecord:
    """One call through the proxy, filled in as it progresses."""

    operation: str
    request: Dict[str, Any]
    rollout_id: str
    attempt_id: str
    sequence_id: int
    backend: str
    start_time: float = field(default_factory=time.time)
    end_time: Optional[float] = None
    status_code: Optional[int] = None
    response: Optional[Dict[str, Any]] = None
    # The backend's error body (or our message when it could not be reached).
    error: Optional[str] = None
    stream: bool = False
    agent_name: Optional[str] = None
    trace_id: Optional[str] = None
    parent_span_id: Optional[str] = None
    # The bodies as they crossed the wire, stored as is (no second JSON encoding per call).
    request_text: Optional[str] = None
    response_text: Optional[str] = None
    # A Responses API call (``/v1/responses``) rather than chat or text completions.
    responses_api: bool = False


def _as_int_list(value: Any) -> Optional[List[int]]:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def _message_tokens(entries: Any) -> Optional[List[int]]:
    """The ``tokens`` of vLLM's Responses API ``input_messages`` / ``output_messages``, concatenated."""
    if not isinstance(entries, list) or not entries:
        return None
    ids: List[int] = []
    for entry in entries:
        tokens = _as_int_list(entry.get("tokens")) if isinstance(entry, dict) else None
        if tokens is None:
            return None
        ids.extend(tokens)
    return ids


def engine_token_ids(response: Optional[Dict[str, Any]]) -> tuple[Optional[List[int]], Optional[List[int]]]:
    """``(prompt_ids, first_choice_ids)`` as the engine reported them, ``None`` where absent."""
    if not response:
        return None, None
    if "output_messages" in response or "input_messages" in response:  # the Responses API
        return _message_tokens(response.get("input_messages")), _message_tokens(response.get("output_messages"))
    prompt = _as_int_list(response.get("prompt_token_ids"))
    choices = response.get("choices")
    completion: Optional[List[int]] = None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        completion = _as_int_list(first.get("token_ids"))
        if prompt is None:
            prompt = _as_int_list(first.get("prompt_token_ids"))
    return prompt, completion


def response_logprobs(response: Optional[Dict[str, Any]]) -> Optional[List[float]]:
    """Per-token logprobs of the first choice (chat ``logprobs.content`` or completions ``token_logprobs``)."""
    if not response:
        return None
    if isinstance(response.get("output"), list):
        return _responses_logprobs(response["output"])
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    logprobs = choices[0].get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    values: List[Any]
    if isinstance(content, list):
        values = [entry.get("logprob") for entry in content if isinstance(entry, dict)]
    else:
        values = logprobs.get("token_logprobs") or []
    if not values or not all(isinstance(v, (int, float)) for v in values):
        return None
    return [float(v) for v in values]


def _responses_logprobs(output: List[Any]) -> Optional[List[float]]:
    """Logprobs of the output text of a Responses API ``output`` (present with ``include: [message.output_text.logprobs]``)."""
    values: List[Any] = []
    for item in output:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            if isinstance(part, dict) and isinstance(part.get("logprobs"), list):
                values.extend(entry.get("logprob") for entry in part["logprobs"] if isinstance(entry, dict))
    if not values or not all(isinstance(v, (int, float)) for v in values):
        return None
    return [float(v) for v in values]


class StreamAccumulator:
    """Rebuilds a non-streamed response from the ``data:`` payloads of a streamed one."""

    # Chat streams end with ``data: [DONE]``, which the proxy holds back itself.
    finished = False

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.meta: Dict[str, Any] = {}
        self.prompt_token_ids: Optional[List[int]] = None
        self.usage: Optional[Dict[str, Any]] = None
        self.choices: Dict[int, Dict[str, Any]] = {}
        self.error: Optional[str] = None

    def add(self, chunk: Dict[str, Any]) -> None:
        if "error" in chunk and not chunk.get("choices"):
            self.error = json.dumps(chunk["error"])[:4000]
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in chunk and key not in self.meta:
                self.meta[key] = chunk[key]
        prompt_ids = _as_int_list(chunk.get("prompt_token_ids"))
        if prompt_ids is not None and self.prompt_token_ids is None:
            self.prompt_token_ids = prompt_ids
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for raw in chunk.get("choices") or []:
            if isinstance(raw, dict):
                self._add_choice(raw)

    def _add_choice(self, raw: Dict[str, Any]) -> None:
        index = raw.get("index", 0) if isinstance(raw.get("index", 0), int) else 0
        choice = self.choices.setdefault(
            index, {"index": index, "text": [], "role": None, "tool_calls": {}, "token_ids": [], "logprobs": []}
        )
        prompt_ids = _as_int_list(raw.get("prompt_token_ids"))
        if prompt_ids is not None and self.prompt_token_ids is None:
            self.prompt_token_ids = prompt_ids
        ids = _as_int_list(raw.get("token_ids"))
        if ids:
            choice["token_ids"].extend(ids)
        if raw.get("finish_reason") is not None:
            choice["finish_reason"] = raw["finish_reason"]
        logprobs = raw.get("logprobs")
        if isinstance(logprobs, dict):
            if isinstance(logprobs.get("content"), list):
                choice["logprobs"].extend(logprobs["content"])
            elif isinstance(logprobs.get("token_logprobs"), list):
                choice["logprobs"].extend({"logprob": v} for v in logprobs["token_logprobs"])
        if self.operation == TEXT_COMPLETION:
            if isinstance(raw.get("text"), str):
                choice["text"].append(raw["text"])
            return
        delta = raw.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("role"), str):
            choice["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            choice["text"].append(delta["content"])
        for call in delta.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            slot = choice["tool_calls"].setdefault(
                call.get("index", len(choice["tool_calls"])),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                slot["id"] = call["id"]
            function = call.get("function") or {}
            if isinstance(function.get("name"), str):
                slot["function"]["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                slot["function"]["arguments"] += function["arguments"]

    def response(self) -> Dict[str, Any]:
        """The assembled response, shaped like the non-streamed one."""
        choices: List[Dict[str, Any]] = []
        for index in sorted(self.choices):
            raw = self.choices[index]
            text = "".join(raw["text"])
            choice: Dict[str, Any] = {"index": index, "finish_reason": raw.get("finish_reason")}
            if self.operation == TEXT_COMPLETION:
                choice["text"] = text
            else:
                message: Dict[str, Any] = {"role": raw["role"] or "assistant", "content": text or None}
                if raw["tool_calls"]:
                    message["tool_calls"] = [raw["tool_calls"][k] for k in sorted(raw["tool_calls"])]
                choice["message"] = message
            if raw["token_ids"]:
                choice["token_ids"] = raw["token_ids"]
            if raw["logprobs"]:
                choice["logprobs"] = {"content": raw["logprobs"]}
            choices.append(choice)
        body: Dict[str, Any] = {
            **self.meta,
            "object": "text_completion" if self.operation == TEXT_COMPLETION else "chat.completion",
            "choices": choices,
        }
        if self.prompt_token_ids is not None:
            body["prompt_token_ids"] = self.prompt_token_ids
        if self.usage is not None:
            body["usage"] = self.usage
        return body


class ResponsesStreamAccumulator:
    """Keeps the whole response of a streamed Responses API call (its last event holds it).

    A stream cut short gives what had arrived: the response as created, with the output items done so far.
    """

    _TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self) -> None:
        self.started: Optional[Dict[str, Any]] = None
        self.final: Optional[Dict[str, Any]] = None
        self.items: Dict[int, Dict[str, Any]] = {}
        self.error: Optional[str] = None

    @property
    def finished(self) -> bool:
        """The terminal event has arrived (the proxy holds it back until the call's span is stored)."""
        return self.final is not None

    def add(self, event: Dict[str, Any]) -> None:
        kind = event.get("type")
        response = event.get("response")
        if kind in self._TERMINAL and isinstance(response, dict):
            self.final = response
            if kind == "response.failed":
                self.error = json.dumps(response.get("error") or {"message": "the response failed"})[:4000]
        elif kind in ("response.created", "response.in_progress") and isinstance(response, dict):
            self.started = response
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            index = event.get("output_index")
            self.items[index if isinstance(index, int) else len(self.items)] = event["item"]
        elif kind == "error":
            self.error = json.dumps({key: event.get(key) for key in ("code", "message", "param")})[:4000]

    def response(self) -> Dict[str, Any]:
        if self.final is not None:
            return self.final
        body: Dict[str, Any] = {"object": "response", **(self.started or {})}
        body["output"] = [self.items[index] for index in sorted(self.items)]
        return body


def parse_traceparent(value: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``(trace_id, parent_span_id)`` from a W3C ``traceparent`` header, or ``(None, None)``."""
    if not value:
        return None, None
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None, None
    try:
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None, None
    if set(parts[1]) == {"0"} or set(parts[2]) == {"0"}:
        return None, None
    return parts[1], parts[2]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _request_attributes(request: Dict[str, Any]) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {}
    for key, attr in (
        ("model", GenAIAttributes.REQUEST_MODEL),
        ("temperature", GenAIAttributes.REQUEST_TEMPERATURE),
        ("top_p", GenAIAttributes.REQUEST_TOP_P),
        ("seed", GenAIAttributes.REQUEST_SEED),
    ):
        value = request.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            attributes[attr] = value
    max_tokens = request.get("max_completion_tokens", request.get("max_tokens", request.get("max_output_tokens")))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        attributes[GenAIAttributes.REQUEST_MAX_TOKENS] = max_tokens
    return attributes


def _finish_reasons(response: Dict[str, Any]) -> List[str]:
    return [
        str(c.get("finish_reason"))
        for c in response.get("choices") or []
        if isinstance(c, dict) and c.get("finish_reason")
    ]


def responses_finish_reasons(response: Dict[str, Any]) -> List[str]:
    """Chat-style finish reasons for a Responses API response (it has a status instead)."""
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return [str(reason or "incomplete")]
    if status == "failed":
        return ["error"]
    if status != "completed":
        return []
    output = response.get("output") or []
    calls = any(isinstance(item, dict) and item.get("type") == "function_call" for item in output)
    return ["tool_calls" if calls else "stop"]


def build_span(record: CallRecord) -> Span:
    """The stored span for one call: GenAI attributes, payloads as JSON, token ids and logprobs."""
    response = record.response
    model = str(record.request.get("model") or "unknown")
    attributes: Dict[str, Any] = {
        GenAIAttributes.OPERATION_NAME: record.operation,
        GenAIAttributes.PROVIDER_NAME: "openai",
        LLMCallAttributes.REQUEST: record.request_text or _json(record.request),
        LLMCallAttributes.STREAM: record.stream,
        LLMCallAttributes.BACKEND: record.backend,
        **_request_attributes(record.request),
    }
    if record.agent_name:
        attributes[GenAIAttributes.AGENT_NAME] = record.agent_name
    if record.status_code is not None:
        attributes[LLMCallAttributes.HTTP_STATUS] = record.status_code
    if record.end_time is not None:
        attributes[LLMCallAttributes.LATENCY_SECONDS] = record.end_time - record.start_time
    if response is not None:
        attributes[LLMCallAttributes.RESPONSE] = record.response_text or _json(response)
        if isinstance(response.get("id"), str):
            attributes[GenAIAttributes.RESPONSE_ID] = response["id"]
        if isinstance(response.get("model"), str):
            attributes[GenAIAttributes.RESPONSE_MODEL] = response["model"]
        reasons = responses_finish_reasons(response) if record.responses_api else _finish_reasons(response)
        if reasons:
            attributes[GenAIAttributes.RESPONSE_FINISH_REASONS] = reasons
        usage = response.get("usage")
        if isinstance(usage, dict):
            # Chat and text completions count prompt/completion tokens; the Responses API input/output tokens.
            input_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
            output_tokens = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(input_tokens, int):
                attributes[GenAIAttributes.USAGE_INPUT_TOKENS] = input_tokens
            if isinstance(output_tokens, int):
                attributes[GenAIAttributes.USAGE_OUTPUT_TOKENS] = output_tokens
        prompt_ids, response_ids = engine_token_ids(response)
        if prompt_ids is not None and response_ids is not None:
            attributes[LLMCallAttributes.PROMPT_TOKEN_IDS] = prompt_ids
            attributes[LLMCallAttributes.RESPONSE_TOKEN_IDS] = response_ids
            attributes[LLMCallAttributes.TOKEN_IDS_SOURCE] = TOKEN_IDS_FROM_ENGINE
        logprobs = response_logprobs(response)
        if logprobs is not None:
            attributes[LLMCallAttributes.RESPONSE_LOGPROBS] = logprobs
    if record.error is not None:
        attributes[GenAIAttributes.ERROR_TYPE] = (
            str(record.status_code) if record.status_code is not None else "backend_unreachable"
        )
    status = (
        TraceStatus(status_code="ERROR", description=(record.error or "")[:1000])
        if record.error is not None
        else TraceStatus(status_code="OK")
    )
    return Span(
        rollout_id=record.rollout_id,
        attempt_id=record.attempt_id,
        sequence_id=record.sequence_id,
        trace_id=record.trace_id or secrets.token_hex(16),
        span_id=secrets.token_hex(8),
        parent_id=record.parent_span_id,
        name=f"{record.operation} {model}",
        status=status,
        attributes=attributes,
        start_time=record.start_time,
        end_time=record.end_time,
        resource=OtelResource(
            attributes=rollout_resource_attributes(record.rollout_id, record.attempt_id, record.sequence_id)
        ),
    )
