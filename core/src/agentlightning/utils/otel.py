"""Helpers for OpenTelemetry: attributes (flattening, sanitizing, tags, links) and the global provider.

OpenTelemetry attribute values must be ``str``, ``bool``, ``int``, ``float`` or a homogeneous
sequence of those. Agents send far more than that (``None``, nested dicts, objects, huge payloads),
so :func:`sanitize_attributes` turns anything into a legal value instead of rejecting the span.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import traceback
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, TypeVar, Union

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from pydantic import BaseModel

from agentlightning.semconv import LightningSpanAttributes, LinkAttributes, LinkPydanticModel
from agentlightning.types.tracer import AttributeValue, Span, SpanCoreFields

if TYPE_CHECKING:
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "flatten_attributes",
    "unflatten_attributes",
    "filter_attributes",
    "filter_and_unflatten_attributes",
    "sanitize_attribute_value",
    "sanitize_attributes",
    "make_tag_attributes",
    "extract_tags_from_attributes",
    "make_link_attributes",
    "extract_links_from_attributes",
    "query_linked_spans",
    "to_jsonable",
    "payload_json",
    "full_qualified_name",
    "format_exception_attributes",
    "get_tracer_provider",
    "get_tracer",
]

logger = logging.getLogger(__name__)

_Primitive = (str, bool, int, float)
# OTLP carries integers as int64; larger ones would be rejected by exporters.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

SpanT = TypeVar("SpanT", Span, ReadableSpan, SpanCoreFields)
AnySpan = Union[Span, ReadableSpan, SpanCoreFields]


def _is_leaf_list(value: Sequence[Any]) -> bool:
    return all(item is None or isinstance(item, _Primitive) for item in value)


def flatten_attributes(attributes: Mapping[str, Any], *, expand_leaf_lists: bool = False) -> Dict[str, Any]:
    """Flatten nested dicts and lists into dotted keys (``{"a": {"b": 1}, "c": [{"d": 2}]}`` ->
    ``{"a.b": 1, "c.0.d": 2}``); lists of primitives stay lists unless ``expand_leaf_lists``; clashing
    keys raise ``ValueError``."""
    result: Dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in result:
            raise ValueError(f"attribute key {key!r} is produced twice while flattening")
        result[key] = value

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for sub_key, sub_value in value.items():
                walk(f"{prefix}.{sub_key}" if prefix else str(sub_key), sub_value)
        elif isinstance(value, (list, tuple)) and value and (expand_leaf_lists or not _is_leaf_list(value)):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}" if prefix else str(index), item)
        else:
            if not prefix:
                raise ValueError("cannot flatten an empty key")
            put(prefix, list(value) if isinstance(value, tuple) else value)

    for key, value in attributes.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"attribute keys must be non-empty strings, got {key!r}")
        walk(key, value)
    return result


class _Node(Dict[str, Any]):
    """A dict built by unflattening (as opposed to a dict that was itself an attribute value)."""


def _listify(node: Any) -> Any:
    if not isinstance(node, _Node):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    keys = list(converted.keys())
    if keys and all(key.isdigit() for key in keys):
        indices = sorted(int(key) for key in keys)
        if indices == list(range(len(indices))):
            return [converted[str(index)] for index in indices]
    return converted


def unflatten_attributes(attributes: Mapping[str, Any]) -> Any:
    """Inverse of :func:`flatten_attributes` (index keys ``0..n-1`` become lists); a key that is also a
    prefix of others raises ``ValueError``."""
    root = _Node()
    # Shorter keys first so a leaf/branch conflict is reported the same way whatever the order.
    for key in sorted(attributes.keys(), key=lambda k: k.count(".")):
        parts = key.split(".")
        node = root
        for depth, part in enumerate(parts[:-1]):
            if part not in node:
                node[part] = _Node()
            child = node[part]
            if not isinstance(child, _Node):
                raise ValueError(f"attribute {'.'.join(parts[: depth + 1])!r} is both a value and a prefix of {key!r}")
            node = child
        last = parts[-1]
        if last in node:
            raise ValueError(f"attribute {key!r} is both a value and a prefix of other keys")
        node[last] = attributes[key]
    return _listify(root)


def filter_attributes(attributes: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    """The attributes equal to ``prefix`` or under ``prefix.``, keys unchanged."""
    dotted = prefix + "."
    return {key: value for key, value in attributes.items() if key == prefix or key.startswith(dotted)}


def filter_and_unflatten_attributes(attributes: Mapping[str, Any], prefix: str) -> Any:
    """Select the keys under ``prefix.`` (prefix stripped) and unflatten them.

    If ``prefix`` itself is a key (and nothing is nested under it) its value is returned as is.
    Nothing under the prefix gives ``{}``.
    """
    dotted = prefix + "."
    nested = {key[len(dotted) :]: value for key, value in attributes.items() if key.startswith(dotted)}
    if prefix in attributes:
        if nested:
            raise ValueError(f"attribute {prefix!r} is both a value and a prefix of other keys")
        return attributes[prefix]
    if not nested:
        return {}
    return unflatten_attributes(nested)


def to_jsonable(value: Any) -> Any:
    """Best-effort conversion of an arbitrary object into JSON-compatible data (never raises)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        # JSON has no NaN/Infinity; keep the information as text.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes_to_text(bytes(value))
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json")
        except Exception:  # a model with unserializable fields still gets recorded
            return repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            return to_jsonable(dataclasses.asdict(value))
        except Exception:
            return repr(value)
    return repr(value)


def payload_json(value: Any) -> str:
    """A payload (LLM request or response, tool arguments or result) as span JSON; objects via to_jsonable, never raises."""
    try:  # orjson: ~20x the json module on a request with its messages and tools, in the agent's thread
        return orjson.dumps(value, default=to_jsonable, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, ValueError):  # keys orjson refuses (tuples), integers beyond 64 bits, deep nesting
        return json.dumps(to_jsonable(value), ensure_ascii=False)


def _bytes_to_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode("ascii")


def _json_text(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def _truncate(text: str, max_length: Optional[int]) -> str:
    if max_length is None or len(text) <= max_length:
        return text
    return text[:max_length] + f"...[truncated {len(text) - max_length} chars]"


def _sanitize_sequence(value: Sequence[Any], max_length: Optional[int]) -> AttributeValue:
    items = list(value)
    kinds = {type(item) for item in items if item is not None}
    if not kinds:
        return items  # empty or all None: legal as is
    if kinds <= {str}:
        return [_truncate(item, max_length) if item is not None else None for item in items]
    if kinds == {bool}:
        return items
    fits_int64 = all(item is None or not isinstance(item, int) or _INT64_MIN <= item <= _INT64_MAX for item in items)
    if kinds <= {int} and fits_int64:
        return items
    if kinds <= {int, float} and fits_int64:
        return [float(item) if item is not None else None for item in items]
    # Mixed types, nested containers, objects: one JSON string keeps everything.
    return _truncate(_json_text(items), max_length)


def sanitize_attribute_value(value: Any, *, max_length: Optional[int] = None) -> Optional[AttributeValue]:
    """Turn any value into a legal OpenTelemetry attribute value; ``None`` stays ``None``.

    Primitives pass through; sequences of one primitive type stay lists (ints mixed with floats
    become floats); bytes become UTF-8 text (or ``base64:`` text); anything else (dicts, mixed
    lists, objects) becomes a JSON string. ``max_length`` truncates long strings, if given.
    """
    if value is None:
        return None
    if isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, str):
        return _truncate(value, max_length)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _truncate(_bytes_to_text(bytes(value)), max_length)
    if isinstance(value, (list, tuple)):
        return _sanitize_sequence(value, max_length)
    return _truncate(_json_text(value), max_length)


def sanitize_attributes(attributes: Optional[Mapping[Any, Any]], *, max_length: Optional[int] = None) -> Dict[str, Any]:
    """Make every value of ``attributes`` OpenTelemetry-legal; never raises on odd values.

    ``None`` values are dropped (OpenTelemetry has no null attribute, and a literal ``"null"``
    string would be mistaken for content). Non-string keys are converted with ``str``.
    """
    if not attributes:
        return {}
    result: Dict[str, Any] = {}
    for key, value in attributes.items():
        clean = sanitize_attribute_value(value, max_length=max_length)
        if clean is None:
            continue
        result[key if isinstance(key, str) else str(key)] = clean
    return result


def make_tag_attributes(tags: Iterable[str]) -> Dict[str, str]:
    """``["fast", "good"]`` -> ``{"agentlightning.tag.0": "fast", "agentlightning.tag.1": "good"}``."""
    return {f"{LightningSpanAttributes.TAG}.{index}": str(tag) for index, tag in enumerate(tags)}


def extract_tags_from_attributes(attributes: Mapping[str, Any]) -> List[str]:
    """Tags written by :func:`make_tag_attributes` (in index order)."""
    try:
        tags = filter_and_unflatten_attributes(attributes, LightningSpanAttributes.TAG)
    except ValueError:
        return []
    if isinstance(tags, list):
        return [str(tag) for tag in tags if tag is not None]
    if isinstance(tags, dict):  # sparse indices
        return [str(tags[key]) for key in sorted(tags, key=lambda k: int(k) if k.isdigit() else 0)]
    return [str(tags)] if tags else []


def make_link_attributes(links: Mapping[str, Any]) -> Dict[str, str]:
    """``{"gen_ai.response.id": "r1"}`` -> ``agentlightning.link.0.key_match`` / ``.value_match``.

    The keys ``trace_id`` and ``span_id`` link to a span by id; other keys match an attribute.
    """
    result: Dict[str, str] = {}
    for index, (key, value) in enumerate(links.items()):
        result[f"{LightningSpanAttributes.LINK}.{index}.{LinkAttributes.KEY_MATCH}"] = str(key)
        result[f"{LightningSpanAttributes.LINK}.{index}.{LinkAttributes.VALUE_MATCH}"] = str(value)
    return result


def extract_links_from_attributes(attributes: Mapping[str, Any]) -> List[LinkPydanticModel]:
    """Links written by :func:`make_link_attributes`; malformed entries are skipped."""
    try:
        raw = filter_and_unflatten_attributes(attributes, LightningSpanAttributes.LINK)
    except ValueError:
        return []
    entries = raw if isinstance(raw, list) else list(raw.values()) if isinstance(raw, dict) else []
    links: List[LinkPydanticModel] = []
    for entry in entries:
        if isinstance(entry, dict) and LinkAttributes.KEY_MATCH in entry and LinkAttributes.VALUE_MATCH in entry:
            links.append(
                LinkPydanticModel(
                    key_match=str(entry[LinkAttributes.KEY_MATCH]), value_match=str(entry[LinkAttributes.VALUE_MATCH])
                )
            )
    return links


def _span_ids(span: AnySpan) -> tuple[Optional[str], Optional[str]]:
    if isinstance(span, Span):
        return span.trace_id, span.span_id
    if isinstance(span, ReadableSpan):
        ctx = span.get_span_context()
        if ctx is None:
            return None, None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    return None, None


def _link_matches(span: AnySpan, link: LinkPydanticModel) -> bool:
    if link.key_match in ("trace_id", "span_id"):
        trace_id, span_id = _span_ids(span)
        actual = trace_id if link.key_match == "trace_id" else span_id
        return actual is not None and actual == link.value_match
    attributes = span.attributes or {}
    if link.key_match not in attributes:
        return False
    value = attributes[link.key_match]
    return value == link.value_match or str(value) == link.value_match


def query_linked_spans(
    spans: Iterable[SpanT], links: Sequence[Union[LinkPydanticModel, Mapping[str, Any]]]
) -> List[SpanT]:
    """The spans that satisfy every link.

    ``trace_id``/``span_id`` links compare ids exactly; other links compare the attribute named
    ``key_match`` with ``value_match`` (as text). An empty ``links`` matches nothing.
    """
    models = [link if isinstance(link, LinkPydanticModel) else LinkPydanticModel(**dict(link)) for link in links]
    if not models:
        return []
    return [span for span in spans if all(_link_matches(span, link) for link in models)]


def full_qualified_name(obj: type) -> str:
    """``module.QualName`` of a class; builtins by their bare name (``int``)."""
    if obj.__module__ == "builtins":
        return obj.__qualname__
    return f"{obj.__module__}.{obj.__qualname__}"


def format_exception_attributes(exception: BaseException) -> Dict[str, Any]:
    """The OpenTelemetry ``exception.*`` attributes of ``exception`` (type, message, stacktrace, escaped)."""
    stacktrace = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    return {
        "exception.type": type(exception).__name__,
        "exception.message": str(exception),
        "exception.stacktrace": stacktrace,
        "exception.escaped": True,
    }


def get_tracer_provider(inspect: bool = True) -> "TracerProvider":
    """The global OpenTelemetry SDK ``TracerProvider`` (with Agent Lightning's span processor attached).

    A provider the application set itself is kept, never replaced; one is created when there is
    none. ``inspect=True`` logs its span processors, to see where spans go.
    """
    from agentlightning.tracer.otel import install_span_processor

    provider, _ = install_span_processor()
    if inspect:
        active = getattr(provider, "_active_span_processor", None)
        processors = getattr(active, "_span_processors", ())
        logger.info(
            "tracer provider %s; span processors: %s",
            full_qualified_name(type(provider)),
            ", ".join(full_qualified_name(type(p)) for p in processors) or "none",
        )
    return provider


def get_tracer(use_active_span_processor: bool = True) -> "trace_api.Tracer":
    """An OpenTelemetry tracer whose spans reach the store inside a ``trace_context``.

    ``use_active_span_processor=False`` gives the global API tracer as is (whatever provider is set).
    """
    from opentelemetry import trace as otel_trace

    if not use_active_span_processor:
        return otel_trace.get_tracer("agentlightning")
    return get_tracer_provider(inspect=False).get_tracer("agentlightning")
