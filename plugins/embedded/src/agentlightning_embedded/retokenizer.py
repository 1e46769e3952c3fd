"""Token ids for backends that cannot return them, computed with a Hugging Face tokenizer's chat template:
the LLM proxy's ``tokenizer`` (registered as the ``huggingface`` tokenizer; design notes: ``docs/internals.md``)."""

from __future__ import annotations

import json
import threading
from typing import Any, Dict, List

from agentlightning.proxy.records import CHAT

__all__ = ["Retokenizer", "load_tokenizer"]


_TOKENIZERS: Dict[str, Any] = {}
_TOKENIZERS_LOCK = threading.Lock()


def load_tokenizer(name_or_path: str) -> Any:
    """A Hugging Face tokenizer by name or path, loaded once per process."""
    with _TOKENIZERS_LOCK:
        if name_or_path not in _TOKENIZERS:
            from transformers import AutoTokenizer  # type: ignore[import-not-found,unused-ignore]

            _TOKENIZERS[name_or_path] = AutoTokenizer.from_pretrained(name_or_path)
        return _TOKENIZERS[name_or_path]


def _tool_arguments_as_objects(messages: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Chat templates render ``arguments`` as an object; the OpenAI wire format sends a JSON string."""
    fixed: List[Dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls")
        if not calls:
            fixed.append(message)
            continue
        new_calls = []
        for call in calls:
            function = dict(call.get("function") or {})
            if isinstance(function.get("arguments"), str):
                try:
                    function["arguments"] = json.loads(function["arguments"])
                except ValueError:
                    pass
            new_calls.append({**call, "function": function})
        fixed.append({**message, "tool_calls": new_calls})
    return fixed


class Retokenizer:
    """Computes prompt and response ids of a call with the model's tokenizer and chat template.

    ``tokenizer``: a loaded tokenizer, or its name or path (loaded on first use). It implements the
    proxy's :class:`~agentlightning.proxy.CallTokenizer`.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._spec = tokenizer
        self._tokenizer: Any = None if isinstance(tokenizer, str) else tokenizer

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._spec)
        return self._tokenizer

    def _template_ids(self, messages: List[Dict[str, Any]], tools: Any, generation_prompt: bool) -> List[int]:
        kwargs: Dict[str, Any] = {"add_generation_prompt": generation_prompt, "tokenize": True}
        if tools:
            kwargs["tools"] = tools
        ids = self.tokenizer.apply_chat_template(_tool_arguments_as_objects(messages), **kwargs)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def prompt_ids(self, operation: str, request: Dict[str, Any]) -> List[int]:
        if operation == CHAT:
            return self._template_ids(list(request.get("messages") or []), request.get("tools"), True)
        prompt = request.get("prompt")
        if isinstance(prompt, list) and all(isinstance(i, int) for i in prompt):
            return list(prompt)
        return [int(i) for i in self.tokenizer.encode(str(prompt or ""), add_special_tokens=False)]

    def response_ids(self, operation: str, request: Dict[str, Any], response: Dict[str, Any]) -> List[int]:
        """The first choice's ids: the rendered assistant turn up to and including its end-of-turn token."""
        choice = (response.get("choices") or [{}])[0]
        if operation != CHAT:
            return [int(i) for i in self.tokenizer.encode(choice.get("text") or "", add_special_tokens=False)]
        message = dict(choice.get("message") or {})
        message.setdefault("role", "assistant")
        messages = list(request.get("messages") or [])
        prompt = self._template_ids(messages, request.get("tools"), True)
        full = self._template_ids([*messages, message], request.get("tools"), False)
        if full[: len(prompt)] != prompt:
            # The template renders history differently once a turn follows; fall back to the text alone.
            return [int(i) for i in self.tokenizer.encode(message.get("content") or "", add_special_tokens=False)]
        tail = full[len(prompt) :]
        eos = self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token) if self.tokenizer.eos_token else None
        if eos is not None and eos in tail and choice.get("finish_reason") != "length":
            tail = tail[: tail.index(eos) + 1]
        return tail
