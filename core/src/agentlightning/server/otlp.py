"""OTLP/HTTP trace ingest: ``ExportTraceServiceRequest`` (protobuf or JSON) -> store spans.

A span belongs to the rollout and attempt named by its attributes ``agentlightning.rollout_id`` and
``agentlightning.attempt_id`` (span attributes win over resource attributes). An optional
``agentlightning.span_sequence_id`` orders it in the rollout; spans without one get sequence ids
from the store, in the order they arrive.

OTLP/JSON differs from protobuf's canonical JSON mapping: trace and span ids are hex strings and
64-bit integers may be strings; both camelCase and snake_case keys are accepted here.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agentlightning.errors import InvalidTransitionError, NotFoundError
from agentlightning.semconv import LightningResourceAttributes
from agentlightning.types import Span

__all__ = [
    "OtlpDecodeError",
    "DecodedSpan",
    "IngestResult",
    "decode_protobuf",
    "decode_json",
    "ingest",
    "encode_response",
    "encode_failure",
    "encode_status",
]

AGL_ROLLOUT_ID = LightningResourceAttributes.ROLLOUT_ID
AGL_ATTEMPT_ID = LightningResourceAttributes.ATTEMPT_ID
AGL_SPAN_SEQUENCE_ID = LightningResourceAttributes.SPAN_SEQUENCE_ID
_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_STATUS_JSON = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


class OtlpDecodeError(ValueError):
    """A body that is not a valid OTLP ExportTraceServiceRequest."""


@dataclass
class DecodedSpan:
    rollout_id: Optional[str]
    attempt_id: Optional[str]
    sequence_id: Optional[int]
    fields: Dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    messages: List[str] = field(default_factory=list)
    statuses: List[int] = field(default_factory=list)
    """The HTTP status of each rejection: 400 untagged or invalid, 404 unknown ids, 409 an ended attempt."""

    @property
    def error_message(self) -> str:
        return "; ".join(self.messages)

    @property
    def failure_status(self) -> Optional[int]:
        """The 4xx for a request none of whose spans was stored, else None (OTLP: 200, with partial_success
        when some were rejected). One kind of rejection keeps its own status; a mix is 400."""
        if self.accepted or not self.rejected:
            return None
        kinds = set(self.statuses)
        return kinds.pop() if len(kinds) == 1 else 400

    def reject(self, count: int, status: int, message: str) -> None:
        self.rejected += count
        self.statuses.append(status)
        self.messages.append(message)


# -- shared -------------------------------------------------------------------------------------
def _seconds(nanos: Any) -> Optional[float]:
    value = int(nanos or 0)
    return value / 1e9 if value else None


def _trace_state(text: str) -> Dict[str, str]:
    state: Dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.strip().partition("=")
        if sep and key:
            state[key] = value
    return state


def _hex_id(raw: bytes, size: int, what: str, required: bool) -> Optional[str]:
    if not raw:
        if required:
            raise OtlpDecodeError(f"span has no {what}")
        return None
    if len(raw) != size:
        raise OtlpDecodeError(f"{what} must be {size} bytes, got {len(raw)}")
    if not any(raw):
        if required:
            raise OtlpDecodeError(f"{what} is all zeros")
        return None
    return raw.hex()


def _sequence_id(value: Any) -> Optional[int]:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, int) and value > 0:
        return value
    return None


def _ids(
    attributes: Mapping[str, Any], resource: Mapping[str, Any]
) -> Tuple[Optional[str], Optional[str], Optional[int]]:
    def pick(key: str) -> Any:
        value = attributes.get(key)
        return value if value is not None else resource.get(key)

    rollout_id, attempt_id = pick(AGL_ROLLOUT_ID), pick(AGL_ATTEMPT_ID)
    return (
        rollout_id if isinstance(rollout_id, str) and rollout_id else None,
        attempt_id if isinstance(attempt_id, str) and attempt_id else None,
        _sequence_id(pick(AGL_SPAN_SEQUENCE_ID)),
    )


def _span_fields(
    *,
    trace_id: str,
    span_id: str,
    parent_id: Optional[str],
    name: str,
    flags: int,
    trace_state: str,
    status_code: int,
    status_message: str,
    attributes: Dict[str, Any],
    events: List[Dict[str, Any]],
    links: List[Dict[str, Any]],
    start: Any,
    end: Any,
    resource: Dict[str, Any],
    schema_url: str,
) -> Dict[str, Any]:
    is_remote = bool(flags & _IS_REMOTE) if flags & _HAS_IS_REMOTE else False
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": parent_id,
        "name": name,
        "status": {"status_code": _STATUS_NAMES.get(status_code, "UNSET"), "description": status_message or None},
        "attributes": attributes,
        "events": events,
        "links": links,
        "start_time": _seconds(start),
        "end_time": _seconds(end),
        "context": {
            "trace_id": trace_id,
            "span_id": span_id,
            "is_remote": False,
            "trace_state": _trace_state(trace_state),
        },
        "parent": (
            {"trace_id": trace_id, "span_id": parent_id, "is_remote": is_remote, "trace_state": {}}
            if parent_id is not None
            else None
        ),
        "resource": {"attributes": resource, "schema_url": schema_url or ""},
    }


# -- protobuf -----------------------------------------------------------------------------------
def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def _pb_attributes(items: Sequence[Any]) -> Dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in items}


def decode_protobuf(body: bytes) -> List[DecodedSpan]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise OtlpDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from exc
    decoded: List[DecodedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _pb_attributes(span.attributes)
                trace_id = _hex_id(span.trace_id, 16, "trace_id", True)
                span_id = _hex_id(span.span_id, 8, "span_id", True)
                assert trace_id is not None and span_id is not None
                fields = _span_fields(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_id=_hex_id(span.parent_span_id, 8, "parent_span_id", False),
                    name=span.name,
                    flags=span.flags,
                    trace_state=span.trace_state,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes=attributes,
                    events=[
                        {
                            "name": e.name,
                            "attributes": _pb_attributes(e.attributes),
                            "timestamp": _seconds(e.time_unix_nano),
                        }
                        for e in span.events
                    ],
                    links=[
                        {
                            "context": {
                                "trace_id": _hex_id(link.trace_id, 16, "link trace_id", True),
                                "span_id": _hex_id(link.span_id, 8, "link span_id", True),
                                "is_remote": False,
                                "trace_state": _trace_state(link.trace_state),
                            },
                            "attributes": _pb_attributes(link.attributes),
                        }
                        for link in span.links
                    ],
                    start=span.start_time_unix_nano,
                    end=span.end_time_unix_nano,
                    resource=resource,
                    schema_url=resource_spans.schema_url,
                )
                decoded.append(DecodedSpan(*_ids(attributes, resource), fields=fields))
    return decoded


# -- JSON ---------------------------------------------------------------------------------------
def _get(obj: Mapping[str, Any], camel: str, default: Any = None) -> Any:
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake, default)


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtlpDecodeError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> List[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def _json_int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise OtlpDecodeError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise OtlpDecodeError(f"{what} must be an integer, got {value!r:.100}")


def _json_value(value: Any) -> Any:
    value = _object(value, "attribute value")
    if not value:
        return None
    for key, kind in (
        ("stringValue", "string"),
        ("boolValue", "bool"),
        ("intValue", "int"),
        ("doubleValue", "double"),
        ("arrayValue", "array"),
        ("kvlistValue", "kvlist"),
        ("bytesValue", "bytes"),
    ):
        raw = _get(value, key, _MISSING)
        if raw is _MISSING:
            continue
        if kind == "int":
            return _json_int(raw, "intValue")
        if kind == "double":
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                return float(raw)
            if isinstance(raw, str) and raw in ("NaN", "Infinity", "-Infinity"):
                return float(raw.replace("Infinity", "inf"))
            raise OtlpDecodeError(f"doubleValue must be a number, got {raw!r:.100}")
        if kind == "array":
            return [_json_value(v) for v in _list(_get(_object(raw, "arrayValue"), "values"), "arrayValue.values")]
        if kind == "kvlist":
            return _json_attributes(_get(_object(raw, "kvlistValue"), "values"))
        if kind == "bytes":
            return raw if isinstance(raw, str) else None
        if kind == "string" and not isinstance(raw, str):
            raise OtlpDecodeError(f"stringValue must be a string, got {raw!r:.100}")
        if kind == "bool" and not isinstance(raw, bool):
            raise OtlpDecodeError(f"boolValue must be true or false, got {raw!r:.100}")
        return raw
    return None


_MISSING = object()


def _json_attributes(items: Any) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {}
    for item in _list(items, "attributes"):
        item = _object(item, "attribute")
        key = item.get("key")
        if not isinstance(key, str):
            raise OtlpDecodeError(f"attribute key must be a string, got {key!r:.100}")
        attributes[key] = _json_value(item.get("value"))
    return attributes


def _json_hex(value: Any, size: int, what: str, required: bool) -> Optional[str]:
    if value in (None, ""):
        return _hex_id(b"", size, what, required)
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{what} must be a hex string, got {value!r:.100}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:  # protobuf's canonical JSON mapping (base64), sent by some exporters
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise OtlpDecodeError(f"{what} must be a hex string, got {value!r:.100}") from None
    return _hex_id(raw, size, what, required)


def _json_status_code(value: Any) -> int:
    if isinstance(value, str) and value in _STATUS_JSON:
        return _STATUS_JSON[value]
    return _json_int(value, "status.code")


def decode_json(body: bytes) -> List[DecodedSpan]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from exc
    document = _object(document, "ExportTraceServiceRequest")
    decoded: List[DecodedSpan] = []
    for resource_spans in _list(_get(document, "resourceSpans"), "resourceSpans"):
        resource_spans = _object(resource_spans, "resourceSpans[]")
        resource = _json_attributes(_get(_object(_get(resource_spans, "resource"), "resource"), "attributes"))
        schema_url = _get(resource_spans, "schemaUrl") or ""
        for scope_spans in _list(_get(resource_spans, "scopeSpans"), "scopeSpans"):
            scope_spans = _object(scope_spans, "scopeSpans[]")
            for span in _list(_get(scope_spans, "spans"), "spans"):
                span = _object(span, "span")
                attributes = _json_attributes(_get(span, "attributes"))
                trace_id = _json_hex(_get(span, "traceId"), 16, "traceId", True)
                span_id = _json_hex(_get(span, "spanId"), 8, "spanId", True)
                assert trace_id is not None and span_id is not None
                name = _get(span, "name", "")
                if not isinstance(name, str):
                    raise OtlpDecodeError(f"span name must be a string, got {name!r:.100}")
                status = _object(_get(span, "status"), "status")
                message = status.get("message") or ""
                fields = _span_fields(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_id=_json_hex(_get(span, "parentSpanId"), 8, "parentSpanId", False),
                    name=name,
                    flags=_json_int(_get(span, "flags"), "flags"),
                    trace_state=str(_get(span, "traceState") or ""),
                    status_code=_json_status_code(status.get("code")),
                    status_message=message if isinstance(message, str) else str(message),
                    attributes=attributes,
                    events=[
                        {
                            "name": str(_object(e, "event").get("name") or ""),
                            "attributes": _json_attributes(_get(e, "attributes")),
                            "timestamp": _seconds(_json_int(_get(e, "timeUnixNano"), "event timeUnixNano")),
                        }
                        for e in _list(_get(span, "events"), "events")
                    ],
                    links=[
                        {
                            "context": {
                                "trace_id": _json_hex(_get(_object(link, "link"), "traceId"), 16, "link traceId", True),
                                "span_id": _json_hex(_get(link, "spanId"), 8, "link spanId", True),
                                "is_remote": False,
                                "trace_state": _trace_state(str(_get(link, "traceState") or "")),
                            },
                            "attributes": _json_attributes(_get(link, "attributes")),
                        }
                        for link in _list(_get(span, "links"), "links")
                    ],
                    start=_json_int(_get(span, "startTimeUnixNano"), "startTimeUnixNano"),
                    end=_json_int(_get(span, "endTimeUnixNano"), "endTimeUnixNano"),
                    resource=resource,
                    schema_url=schema_url if isinstance(schema_url, str) else "",
                )
                decoded.append(DecodedSpan(*_ids(attributes, resource), fields=fields))
    return decoded


# -- into the store -----------------------------------------------------------------------------
async def ingest(store: Any, decoded: Sequence[DecodedSpan]) -> IngestResult:
    """Store decoded spans, one batch per (rollout, attempt); a batch for unknown ids is rejected alone."""
    result = IngestResult()
    groups: Dict[Tuple[str, str], List[DecodedSpan]] = {}
    untagged = 0
    for span in decoded:
        if span.rollout_id is None or span.attempt_id is None:
            untagged += 1
            continue
        groups.setdefault((span.rollout_id, span.attempt_id), []).append(span)
    if untagged:
        result.reject(
            untagged,
            400,
            f"{untagged} span(s) without {AGL_ROLLOUT_ID} and {AGL_ATTEMPT_ID} attributes (on the span or its resource)",
        )
    for (rollout_id, attempt_id), items in groups.items():
        try:
            missing = [item for item in items if item.sequence_id is None]
            if missing:
                issued = await store.get_many_span_sequence_ids([(rollout_id, attempt_id)] * len(missing))
                for item, sequence_id in zip(missing, issued, strict=True):
                    item.sequence_id = sequence_id
            spans = [
                Span.model_validate(
                    {**item.fields, "rollout_id": rollout_id, "attempt_id": attempt_id, "sequence_id": item.sequence_id}
                )
                for item in items
            ]
            await store.add_many_spans(spans)
            result.accepted += len(items)
        except (NotFoundError, ValueError, TypeError) as exc:
            status = 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, InvalidTransitionError) else 400
            result.reject(
                len(items), status, f"{len(items)} span(s) of rollout {rollout_id!r} attempt {attempt_id!r}: {exc}"
            )
    return result


# -- responses ----------------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_status(code: int, message: str, protobuf: bool) -> bytes:
    """A ``google.rpc.Status`` (OTLP's error body): code 3 = INVALID_ARGUMENT, 16 = UNAUTHENTICATED, ..."""
    if not protobuf:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


# google.rpc.Code of each HTTP status a rejected export gets
_RPC_CODES = {400: 3, 404: 5, 409: 9}  # INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION


def encode_failure(result: IngestResult, protobuf: bool) -> Tuple[int, bytes]:
    """HTTP status and ``google.rpc.Status`` body for an export none of whose spans was stored."""
    status = result.failure_status or 400
    return status, encode_status(_RPC_CODES.get(status, 3), result.error_message, protobuf)


def encode_response(result: IngestResult, protobuf: bool) -> bytes:
    """An ``ExportTraceServiceResponse``, with ``partial_success`` when spans were rejected."""
    if protobuf:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTracePartialSuccess,
            ExportTraceServiceResponse,
        )

        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=result.rejected, error_message=result.error_message)
            )
        return bytes(response.SerializeToString())
    if not result.rejected:
        return b"{}"
    return json.dumps(
        {"partialSuccess": {"rejectedSpans": str(result.rejected), "errorMessage": result.error_message}}
    ).encode()
