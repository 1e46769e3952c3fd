"""Unit tests of the text side of generation: tool-call parsing, incremental detokenizing, stop strings."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import List

import pytest

from agentlightning_embedded.text import (
    IncrementalDetokenizer,
    StopStringMatcher,
    ToolCallStreamParser,
    parse_tool_calls,
)

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'


def stream_parse(text: str, piece: int) -> tuple[str, List[dict]]:
    """Feed ``text`` in pieces of ``piece`` characters; return the streamed content and calls."""
    parser = ToolCallStreamParser()
    content, calls = "", []
    for start in range(0, len(text), piece):
        delta = parser.feed(text[start : start + piece])
        content += delta.content
        calls += [call.to_openai() for call in delta.tool_calls]
    last = parser.finish()
    content += last.content
    calls += [call.to_openai() for call in last.tool_calls]
    return content, calls


def test_plain_text_is_content_unchanged() -> None:
    text = "  Hello, world!\n  It is <b>bold</b> < tool > and <tool_ and trailing space  "
    assert parse_tool_calls(text) == (text, [])


def test_one_tool_call_and_no_content() -> None:
    content, calls = parse_tool_calls(CALL)
    assert content is None
    assert len(calls) == 1
    call = calls[0].to_openai()
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "2+2"}
    assert isinstance(call["function"]["arguments"], str)


def test_text_around_calls_is_content() -> None:
    second = CALL.replace("calculator", "search").replace('"2+2"', '"weather in Paris"')
    content, calls = parse_tool_calls(f"Let me compute that.\n{CALL}\n{second}\n")
    assert content == "Let me compute that."
    assert [c.name for c in calls] == ["calculator", "search"]
    assert json.loads(calls[1].arguments) == {"expression": "weather in Paris"}


def test_call_ids_are_unique() -> None:
    _, calls = parse_tool_calls(CALL + CALL)
    assert len({call.id for call in calls}) == 2


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        '{"arguments": {"x": 1}}',  # no name
        '{"name": "", "arguments": {}}',
        '["calculator", {}]',
        '{"name": "calculator", "arguments": "{not json"}',
        '{"name": "calculator", "arguments": [1, 2]}',
    ],
)
def test_malformed_call_stays_content(body: str) -> None:
    text = f"before <tool_call>{body}</tool_call> after"
    content, calls = parse_tool_calls(text)
    assert calls == []
    assert content == text


def test_unclosed_call_stays_content() -> None:
    text = 'I will call <tool_call>\n{"name": "calculator", "argu'
    assert parse_tool_calls(text) == (text, [])


def test_arguments_as_json_string_and_missing_arguments() -> None:
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert json.loads(calls[0].arguments) == {"a": 1}
    _, calls = parse_tool_calls('<tool_call>{"name": "g"}</tool_call>')
    assert calls[0].arguments == "{}"


def test_non_ascii_arguments_are_kept() -> None:
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"city": "Zürich 東京"}}</tool_call>')
    assert json.loads(calls[0].arguments) == {"city": "Zürich 東京"}


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(
    "text",
    [
        "plain text with a < sign and <tool_ almost",
        CALL,
        f"Sure!\n{CALL}",
        f"{CALL}\n{CALL}",
        f"{CALL}\n\nDone, the answer is 4.",
        "broken <tool_call>{nope}</tool_call> tail",
        'unclosed <tool_call>{"name": "x"',
    ],
)
def test_streaming_matches_whole_text(text: str, piece: int) -> None:
    whole_content, whole_calls = parse_tool_calls(text)
    streamed_content, streamed_calls = stream_parse(text, piece)
    assert streamed_content == (whole_content or "")
    strip_ids = [{**c, "id": None} for c in streamed_calls]
    assert strip_ids == [{**c.to_openai(), "id": None} for c in whole_calls]


def test_streamed_call_waits_for_closing_tag() -> None:
    parser = ToolCallStreamParser()
    assert parser.feed("Hi <tool_").content == "Hi"
    delta = parser.feed('call>{"name": "f", "arguments": {}}')
    assert delta.content == "" and delta.tool_calls == []
    delta = parser.feed("</tool_call>")
    assert [call.name for call in delta.tool_calls] == ["f"]


# -- detokenizing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.mark.parametrize("text", ["Hello world", "héllo 世界 🙂 ok", "日本語のテキスト", "a\u0301 e\u0301 🇫🇷"])
def test_detokenizer_concatenates_to_full_decode(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer.encode(text, add_special_tokens=False)

    def decode(chunk: List[int]) -> str:
        return tokenizer.decode(chunk, skip_special_tokens=True)

    detokenizer = IncrementalDetokenizer(decode)
    pieces = [detokenizer.add(token) for token in ids]
    pieces.append(detokenizer.finish())
    # Qwen2's tokenizer normalizes to NFC, so compare with the normalized text.
    assert "".join(pieces) == decode(ids) == unicodedata.normalize("NFC", text)
    assert all("\ufffd" not in piece for piece in pieces)


def test_detokenizer_broken_bytes_end_as_replacement_char(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer.encode("ok 世", add_special_tokens=False)[:-1]  # cut inside the multi-byte character
    decode = tokenizer.decode
    detokenizer = IncrementalDetokenizer(decode)
    text = "".join(detokenizer.add(token) for token in ids) + detokenizer.finish()
    assert text == decode(ids)


# -- stop strings ---------------------------------------------------------------------------------


def run_stops(stops: List[str], pieces: List[str]) -> tuple[str, bool]:
    matcher = StopStringMatcher(stops)
    out = ""
    for piece in pieces:
        released, stopped = matcher.push(piece)
        out += released
        if stopped:
            return out, True
    return out + matcher.flush(), False


def test_stop_string_split_over_pieces() -> None:
    assert run_stops(["STOP"], ["Hello S", "TO", "P and more"]) == ("Hello ", True)


def test_first_of_several_stop_strings_wins() -> None:
    assert run_stops(["world", "lo"], ["Hello", " world"]) == ("Hel", True)


def test_no_stop_string_releases_everything() -> None:
    assert run_stops(["STOP"], ["Hello S", "TO", "!"]) == ("Hello STO!", False)


def test_held_back_text_is_released_as_soon_as_it_cannot_start_a_stop() -> None:
    matcher = StopStringMatcher(["\n\n"])
    assert matcher.push("abc\n") == ("abc", False)
    assert matcher.push("x") == ("\nx", False)


# -- calls without the tags (small models drop them) ------------------------------------------------

BARE = '{"name": "calculator", "arguments": {"expression": "123*45"}}'


@pytest.mark.parametrize(
    "text",
    [BARE, f"  {BARE}\n", f"```json\n{BARE}\n```", f"```\n{BARE}\n```"],
    ids=["bare", "spaces", "json-fence", "fence"],
)
@pytest.mark.parametrize("piece", [1, 5, 1000])
def test_a_reply_that_is_only_a_call_json_is_a_call(text: str, piece: int) -> None:
    content, calls = parse_tool_calls(text, {"calculator"})
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("calculator", {"expression": "123*45"})]
    streamed_content, streamed_calls = stream_parse_bare(text, piece, {"calculator"})
    assert streamed_content == "" and len(streamed_calls) == 1


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "weather", "arguments": {}}',  # not an offered tool
        f"The call would be {BARE}",  # text around it
        f"{BARE} and more",
        '{"answer": 42}',
        "```python\nprint(1)\n```",
        "`inline` code",
    ],
)
def test_other_replies_stay_content(text: str) -> None:
    assert parse_tool_calls(text, {"calculator"}) == (text, [])
    for piece in (1, 4, 1000):
        assert stream_parse_bare(text, piece, {"calculator"}) == (text, [])


def test_without_names_bare_json_is_content() -> None:
    assert parse_tool_calls(BARE) == (BARE, [])


def test_plain_text_still_streams_at_once_when_bare_calls_are_allowed() -> None:
    parser = ToolCallStreamParser({"calculator"})
    assert parser.feed("Hello ").content == "Hello"
    assert parser.feed("world").content == " world"


def stream_parse_bare(text: str, piece: int, names: set[str]) -> tuple[str, List[dict]]:
    parser = ToolCallStreamParser(names)
    content, calls = "", []
    for start in range(0, len(text), piece):
        delta = parser.feed(text[start : start + piece])
        content += delta.content
        calls += [call.to_openai() for call in delta.tool_calls]
    last = parser.finish()
    return content + last.content, calls + [call.to_openai() for call in last.tool_calls]
