"""Validation of OpenAI-style request bodies into typed requests, and OpenAI's error shape.

Pure Python (no torch). Every problem with a body raises :class:`RequestError`, which the server answers
with a 4xx and ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "RequestError",
    "SamplingParams",
    "error_body",
    "parse_chat_request",
    "parse_completion_request",
]

MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 16
_ROLES = ("system", "developer", "user", "assistant", "tool")

_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    503: "service_unavailable_error",
}


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples. ``temperature == 0`` is greedy; ``max_tokens=None`` fills the context."""

    max_tokens: Optional[int] = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: Optional[int] = None
    stop: Tuple[str, ...] = ()
    stop_token_ids: Tuple[int, ...] = ()
    ignore_eos: bool = False
    top_logprobs: int = 0
    skip_special_tokens: bool = True


def error_body(status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None) -> Dict[str, Any]:
    error_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class RequestError(Exception):
    """A request the server cannot serve as sent; answered with ``status`` and OpenAI's error body."""

    def __init__(self, message: str, *, param: Optional[str] = None, code: Optional[str] = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status

    def body(self) -> Dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


@dataclass
class ChatRequest:
    model: Optional[str]
    messages: List[Dict[str, Any]]
    tools: Optional[List[Dict[str, Any]]]
    parse_tool_calls: bool
    stream: bool
    include_usage: bool
    n: int
    params: SamplingParams
    template_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class CompletionRequest:
    model: Optional[str]
    prompts: List[Union[str, List[int]]]
    stream: bool
    include_usage: bool
    n: int
    params: SamplingParams


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _boolean(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{key}' must be a boolean, not {_type_name(value)}", param=key)
    return value


def _integer(
    body: Mapping[str, Any],
    key: str,
    default: Optional[int],
    *,
    minimum: Optional[int] = None,
    maximum: Optional[int] = None,
) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{key}' must be an integer, not {_type_name(value)}", param=key)
    if minimum is not None and value < minimum:
        raise RequestError(f"'{key}' must be at least {minimum}, got {value}", param=key)
    if maximum is not None and value > maximum:
        raise RequestError(f"'{key}' must be at most {maximum}, got {value}", param=key)
    return value


def _number(
    body: Mapping[str, Any], key: str, default: float, *, minimum: float, maximum: float, open_minimum: bool = False
) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{key}' must be a number, not {_type_name(value)}", param=key)
    number = float(value)
    too_small = number <= minimum if open_minimum else number < minimum
    if too_small or number > maximum or number != number:
        bound = f"greater than {minimum}" if open_minimum else f"at least {minimum}"
        raise RequestError(f"'{key}' must be {bound} and at most {maximum}, got {value}", param=key)
    return number


def _stop_strings(body: Mapping[str, Any]) -> Tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError("'stop' must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise RequestError(f"'stop' takes at most {MAX_STOP_STRINGS} strings", param="stop")
    return tuple(s for s in stops if s)


def _token_id_list(value: Any, key: str) -> Tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise RequestError(f"'{key}' must be a list of integers", param=key)
    return tuple(value)


def _stream_options(body: Mapping[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    if not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    return _boolean(options, "include_usage", False)


def _model(body: Mapping[str, Any]) -> Optional[str]:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"'model' must be a string, not {_type_name(model)}", param="model")
    return model


def _sampling(body: Mapping[str, Any], top_logprobs: int) -> SamplingParams:
    max_tokens = _integer(body, "max_completion_tokens", None, minimum=1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", None, minimum=1)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, minimum=0.0, maximum=100.0),
        top_p=_number(body, "top_p", 1.0, minimum=0.0, maximum=1.0, open_minimum=True),
        top_k=_integer(body, "top_k", 0, minimum=-1) or 0,
        seed=_integer(body, "seed", None),
        stop=_stop_strings(body),
        stop_token_ids=_token_id_list(body.get("stop_token_ids"), "stop_token_ids"),
        ignore_eos=_boolean(body, "ignore_eos", False),
        top_logprobs=top_logprobs,
        skip_special_tokens=_boolean(body, "skip_special_tokens", True),
    )


def _require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, not {_type_name(body)}")
    return body


def _text_content(content: Any, param: str) -> Optional[str]:
    """Plain text of a message's content: a string, ``None``, or a list of text parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(
                    f"{param}[{index}] must be a text part ({{'type': 'text', 'text': ...}}); "
                    "this server serves text-only models",
                    param=param,
                )
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(f"{param} must be a string, a list of text parts or null", param=param)


def _tool_calls(calls: Any, param: str) -> List[Dict[str, Any]]:
    if not isinstance(calls, list):
        raise RequestError(f"{param} must be a list", param=param)
    normalized = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RequestError(f"{param}[{index}] must have a function with a name", param=param)
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            # Templates render arguments as an object; the wire format sends a JSON string.
            try:
                decoded = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                arguments = decoded
        normalized.append(
            {
                "id": call.get("id"),
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            }
        )
    return normalized


def _messages(value: Any) -> List[Dict[str, Any]]:
    if value is None:
        raise RequestError("'messages' is required", param="messages")
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    messages = []
    for index, message in enumerate(value):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(f"{param} must be an object", param=param)
        role = message.get("role")
        if role not in _ROLES:
            raise RequestError(f"{param}.role must be one of {', '.join(_ROLES)}; got {role!r}", param=param)
        content = _text_content(message.get("content"), f"{param}.content")
        normalized: Dict[str, Any] = {"role": "system" if role == "developer" else role}
        if role == "assistant" and message.get("tool_calls"):
            normalized["tool_calls"] = _tool_calls(message["tool_calls"], f"{param}.tool_calls")
            normalized["content"] = content
        else:
            normalized["content"] = content or ""
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                normalized[key] = message[key]
        messages.append(normalized)
    return messages


def _tools(value: Any) -> Optional[List[Dict[str, Any]]]:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RequestError("'tools' must be a list", param="tools")
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise RequestError(
                f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ..., ...}}}}", param="tools"
            )
    return value or None


def _tool_choice(value: Any) -> str:
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and isinstance((value.get("function") or {}).get("name"), str):
        return "function"
    raise RequestError("'tool_choice' must be 'auto', 'none', 'required' or a named function", param="tool_choice")


def parse_chat_request(raw: Any) -> ChatRequest:
    """Validate a ``/v1/chat/completions`` body."""
    body = _require_object(raw)
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"))
    stream = _boolean(body, "stream", False)
    want_logprobs = _boolean(body, "logprobs", False)
    top_logprobs = _integer(body, "top_logprobs", 0, minimum=0, maximum=MAX_TOP_LOGPROBS) or 0
    if top_logprobs and not want_logprobs:
        raise RequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    template_kwargs: Dict[str, Any] = {}
    extra = body.get("chat_template_kwargs")
    if extra is not None:
        if not isinstance(extra, dict):
            raise RequestError("'chat_template_kwargs' must be an object", param="chat_template_kwargs")
        template_kwargs.update(extra)
    template_kwargs["add_generation_prompt"] = _boolean(body, "add_generation_prompt", True)
    template_kwargs["continue_final_message"] = _boolean(body, "continue_final_message", False)
    if template_kwargs["add_generation_prompt"] and template_kwargs["continue_final_message"]:
        template_kwargs["add_generation_prompt"] = False  # continuing the last message replaces a new turn
    return ChatRequest(
        model=_model(body),
        messages=messages,
        tools=tools,
        parse_tool_calls=bool(tools) and tool_choice != "none",
        stream=stream,
        include_usage=_stream_options(body, stream),
        n=_integer(body, "n", 1, minimum=1, maximum=128) or 1,
        params=_sampling(body, top_logprobs),
        template_kwargs=template_kwargs,
    )


def _prompts(value: Any) -> List[Union[str, List[int]]]:
    def is_ids(item: Any) -> bool:
        return isinstance(item, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in item)

    if isinstance(value, str):
        prompts: Sequence[Any] = [value]
    elif is_ids(value) and value:
        prompts = [value]
    elif isinstance(value, list) and value and all(isinstance(p, str) or (is_ids(p) and p) for p in value):
        prompts = value
    else:
        raise RequestError(
            "'prompt' must be a string, a list of token ids, or a non-empty list of either", param="prompt"
        )
    return list(prompts)


def parse_completion_request(raw: Any) -> CompletionRequest:
    """Validate a ``/v1/completions`` body."""
    body = _require_object(raw)
    if "prompt" not in body:
        raise RequestError("'prompt' is required", param="prompt")
    prompts = _prompts(body.get("prompt"))
    if _boolean(body, "echo", False):
        raise RequestError("'echo' is not supported by this server", param="echo")
    if body.get("suffix"):
        raise RequestError("'suffix' is not supported by this server", param="suffix")
    if body.get("best_of") not in (None, 1) and body.get("best_of") != body.get("n", 1):
        raise RequestError("'best_of' is not supported by this server", param="best_of")
    stream = _boolean(body, "stream", False)
    top_logprobs = _integer(body, "logprobs", 0, minimum=0, maximum=MAX_TOP_LOGPROBS) or 0
    return CompletionRequest(
        model=_model(body),
        prompts=prompts,
        stream=stream,
        include_usage=_stream_options(body, stream),
        n=_integer(body, "n", 1, minimum=1, maximum=128) or 1,
        params=_sampling(body, top_logprobs),
    )
