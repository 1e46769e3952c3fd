"""The proxy's `huggingface` tokenizer: token ids from a tokenizer's chat template (no model needed)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from agentlightning.plugins import resolve
from agentlightning.proxy import ProxyBackend
from agentlightning_embedded.retokenizer import Retokenizer

MESSAGES: List[Dict[str, Any]] = [{"role": "user", "content": "What is 12+7?"}]


class _ByteTokenizer:
    """Ids are UTF-8 bytes; the chat template is the messages' JSON, the assistant turn follows as text."""

    def __init__(self, eos_token: Optional[str] = None) -> None:
        self.eos_token = eos_token

    def apply_chat_template(self, messages: List[Dict[str, Any]], **kwargs: Any) -> Dict[str, List[int]]:
        if kwargs.get("add_generation_prompt"):
            return {"input_ids": list(json.dumps(messages, sort_keys=True).encode())}
        turn = messages[-1].get("content") or ""
        rendered = json.dumps(messages[:-1], sort_keys=True) + turn + (self.eos_token or "") + "\n"
        return {"input_ids": list(rendered.encode())}  # a BatchEncoding-like answer

    def encode(self, text: str, add_special_tokens: bool = False) -> List[int]:
        return list(text.encode())

    def convert_tokens_to_ids(self, token: str) -> int:
        return token.encode()[0]


def _chat(content: str, finish_reason: str = "stop") -> Dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}]}


def test_chat_ids_come_from_the_template_and_end_at_the_end_of_turn_token() -> None:
    tokenizer = Retokenizer(_ByteTokenizer(eos_token="$"))
    request = {"messages": MESSAGES}
    assert tokenizer.prompt_ids("chat", request) == list(json.dumps(MESSAGES, sort_keys=True).encode())
    assert tokenizer.response_ids("chat", request, _chat("nineteen")) == list(b"nineteen$")
    # A reply cut by the length limit has no end-of-turn token of its own: the template's tail is kept.
    assert tokenizer.response_ids("chat", request, _chat("nine", "length")) == list(b"nine$\n")


def test_text_completions_encode_the_prompt_and_the_text() -> None:
    tokenizer = Retokenizer(_ByteTokenizer())
    assert tokenizer.prompt_ids("text_completion", {"prompt": "12+7="}) == list(b"12+7=")
    assert tokenizer.prompt_ids("text_completion", {"prompt": [1, 2, 3]}) == [1, 2, 3]
    answer = {"choices": [{"text": "19"}]}
    assert tokenizer.response_ids("text_completion", {"prompt": "12+7="}, answer) == list(b"19")


def test_the_plugin_registers_it_for_tokenizer_names(tiny_model_path: Any) -> None:
    assert resolve("tokenizers", "huggingface") is Retokenizer
    backend = ProxyBackend("http://127.0.0.1:1/v1", tokenizer=str(tiny_model_path))
    assert isinstance(backend.tokenizer, Retokenizer)
    # A loaded tokenizer object is wrapped too (as a name is); a CallTokenizer is used as it is.
    loaded = ProxyBackend("http://127.0.0.1:1/v1", tokenizer=_ByteTokenizer())
    assert isinstance(loaded.tokenizer, Retokenizer)
    assert ProxyBackend("http://127.0.0.1:1/v1", tokenizer=backend.tokenizer).tokenizer is backend.tokenizer
