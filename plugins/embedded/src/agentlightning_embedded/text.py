"""Turning generated token ids into text, incrementally: detokenizing, stop strings and tool calls.

Pure Python (no torch), so it is unit-tested on its own. The same code produces both streamed deltas
and whole responses, which is why a streamed answer always concatenates to the non-streamed one.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, List, Optional, Sequence, Tuple

__all__ = [
    "IncrementalDetokenizer",
    "ParsedToolCall",
    "StopStringMatcher",
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "ToolCallStreamParser",
    "parse_tool_calls",
]

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Text of a growing list of token ids, released only once it is final.

    A byte-level tokenizer splits multi-byte characters over several tokens; decoding a prefix then ends
    with U+FFFD. Text is released only when the decoded window does not end in one, and the window starts
    where the last release ended (a character boundary), so the released pieces always concatenate to
    ``decode(all ids)``. :meth:`finish` releases whatever is left (a truly broken byte sequence as U+FFFD).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: List[int] = []
        self._prefix_offset = 0  # start of the decode window: a character boundary
        self._read_offset = 0  # ids up to here are released
        self.text = ""

    def add(self, token_id: int) -> str:
        """Append one id; return the newly final text (often ``""``)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHAR) or not after.startswith(before):
            return ""
        delta = after[len(before) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self.text += delta
        return delta

    def finish(self) -> str:
        """The text still held back (an incomplete character at the very end decodes as U+FFFD)."""
        full = self._decode(self._ids)
        if not full.startswith(self.text):
            return ""  # cannot happen with byte-level tokenizers; never emit inconsistent text
        delta = full[len(self.text) :]
        self.text = full
        self._prefix_offset = self._read_offset = len(self._ids)
        return delta


class StopStringMatcher:
    """Cuts text at the first stop string, holding back only a tail that could start one.

    :meth:`push` takes newly decoded text and returns ``(releasable_text, stopped)``. Text after a stop
    string is dropped, as is the stop string itself (OpenAI's behaviour).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._text = ""
        self._released = 0
        self.stopped = False

    def push(self, delta: str) -> Tuple[str, bool]:
        if self.stopped:
            return "", True
        self._text += delta
        if not self._stops:
            return self._release(len(self._text)), False
        # Released text never holds the start of a stop string, so a match can only begin after it.
        cut: Optional[int] = None
        for stop in self._stops:
            position = self._text.find(stop, self._released)
            if position >= 0 and (cut is None or position < cut):
                cut = position
        if cut is not None:
            self.stopped = True
            return self._release(cut), True
        held = max(_partial_tag_length(self._text[self._released :], stop) for stop in self._stops)
        return self._release(len(self._text) - held), False

    def flush(self) -> str:
        """Release the held-back tail (generation ended for another reason)."""
        return "" if self.stopped else self._release(len(self._text))

    def _release(self, upto: int) -> str:
        piece = self._text[self._released : upto]
        self._released = max(self._released, upto)
        return piece


@dataclass(frozen=True)
class ParsedToolCall:
    """One tool call in OpenAI's shape; ``arguments`` is a JSON string."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def _tool_call_from_body(body: str) -> Optional[ParsedToolCall]:
    """The call in ``{"name": ..., "arguments": {...}}``; ``None`` when it is not one."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    arguments = payload.get("arguments", payload.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
        except ValueError:
            return None
        return ParsedToolCall(name=name, arguments=arguments)
    if not isinstance(arguments, dict):
        return None
    return ParsedToolCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False))


_FENCED = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def _bare_tool_call(text: str, names: Collection[str]) -> Optional[ParsedToolCall]:
    """The call when ``text`` is nothing but a JSON call of one of ``names`` (fenced or not)."""
    body = text.strip()
    fenced = _FENCED.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith("{"):
        return None
    call = _tool_call_from_body(body)
    if call is None or call.name not in names:
        return None
    return call


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


@dataclass
class ParsedDelta:
    content: str = ""
    tool_calls: List[ParsedToolCall] = field(default_factory=list)


class ToolCallStreamParser:
    """Splits model output into content and ``<tool_call>{json}</tool_call>`` calls, as it streams.

    Text after ``<tool_call>`` is buffered until ``</tool_call>``; a body that is a JSON object with a
    ``name`` (and ``arguments``) becomes a tool call, anything else goes out unchanged as content, as
    does an unclosed call at the end. Whitespace touching a tool call is dropped, so ``"<tool_call>..
    </tool_call>\\n<tool_call>..</tool_call>"`` has no content at all.

    With ``bare_call_names``, a reply that is *only* a JSON object ``{"name": <one of those names>,
    "arguments": {...}}``, possibly in a fenced code block, is also a call: small models (Qwen2.5 0.5B)
    often drop the tags. Such a reply is held back until the end, since only then is it known to be one.
    """

    def __init__(self, bare_call_names: Optional[Collection[str]] = None) -> None:
        self._bare_names = frozenset(bare_call_names or ())
        self._maybe_bare = bool(self._bare_names)
        self._bare_buffer = ""
        self._buffer = ""
        self._inside = False
        self._pending_space = ""  # trailing whitespace, dropped if a tool call follows
        self._space_before_call = ""  # kept in case the call turns out malformed
        self._after_call = False  # strip leading whitespace of the next content
        self.calls_seen = 0

    def feed(self, text: str) -> ParsedDelta:
        if self._maybe_bare:
            self._bare_buffer += text
            opening = self._bare_buffer.lstrip()
            if not opening or opening.startswith(("{", "```")) or "```".startswith(opening):
                return ParsedDelta()  # it may still turn out to be a bare call
            self._maybe_bare = False
            text, self._bare_buffer = self._bare_buffer, ""
        delta = ParsedDelta()
        self._buffer += text
        while True:
            if self._inside:
                end = self._buffer.find(TOOL_CALL_END)
                if end < 0:
                    break
                body, self._buffer = self._buffer[:end], self._buffer[end + len(TOOL_CALL_END) :]
                self._inside = False
                call = _tool_call_from_body(body.strip())
                space, self._space_before_call = self._space_before_call, ""
                if call is None:
                    delta.content += self._content(space + TOOL_CALL_START + body + TOOL_CALL_END)
                else:
                    self._after_call = True
                    self.calls_seen += 1
                    delta.tool_calls.append(call)
                continue
            start = self._buffer.find(TOOL_CALL_START)
            if start >= 0:
                delta.content += self._content(self._buffer[:start], hold_space=True)
                # Whitespace right before a call is dropped, unless the call is malformed.
                self._space_before_call, self._pending_space = self._pending_space, ""
                self._buffer = self._buffer[start + len(TOOL_CALL_START) :]
                self._inside = True
                continue
            keep = _partial_tag_length(self._buffer, TOOL_CALL_START)
            ready, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
            delta.content += self._content(ready, hold_space=True)
            break
        return delta

    def finish(self) -> ParsedDelta:
        """Flush: an unclosed call and held-back text become content."""
        if self._maybe_bare:
            self._maybe_bare = False
            call = _bare_tool_call(self._bare_buffer, self._bare_names)
            if call is not None:
                self.calls_seen += 1
                return ParsedDelta(tool_calls=[call])
            held = self.feed(self._bare_buffer)
            tail = self.finish()
            return ParsedDelta(content=held.content + tail.content, tool_calls=held.tool_calls + tail.tool_calls)
        rest = (self._space_before_call + TOOL_CALL_START + self._buffer) if self._inside else self._buffer
        self._buffer, self._inside, self._space_before_call = "", False, ""
        content = self._content(rest, hold_space=True)
        if not self.calls_seen:
            content += self._pending_space
        self._pending_space = ""
        return ParsedDelta(content=content)

    def _content(self, text: str, hold_space: bool = False) -> str:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return ""
            self._after_call = False
        text = self._pending_space + text
        self._pending_space = ""
        if hold_space:
            stripped = text.rstrip()
            self._pending_space = text[len(stripped) :]
            text = stripped
        return text


def parse_tool_calls(
    text: str, bare_call_names: Optional[Collection[str]] = None
) -> Tuple[Optional[str], List[ParsedToolCall]]:
    """``(content, calls)`` of a whole output; content is ``None`` when only calls remain."""
    parser = ToolCallStreamParser(bare_call_names)
    first = parser.feed(text)
    last = parser.finish()
    content = first.content + last.content
    calls = first.tool_calls + last.tool_calls
    if calls and not content:
        return None, calls
    return content, calls
