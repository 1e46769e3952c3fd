"""OTLP/HTTP trace ingest: ``ExportTraceServiceRequest`` (protobuf or JSON) -> store spans, attributed
by their ``agentlightning.rollout_id``/``attempt_id`` attributes (design notes: ``docs/internals.md``)."""

from __future__ import annotations

import base64
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


def _link(link: Any) -> Dict[str, Any]:
    return {
        "context": {
            "trace_id": _hex_id(link.trace_id, 16, "link trace_id", True),
            "span_id": _hex_id(link.span_id, 8, "link span_id", True),
            "is_remote": False,
            "trace_state": _trace_state(link.trace_state),
        },
        "attributes": _pb_attributes(link.attributes),
    }


def _decode_request(request: Any) -> List[DecodedSpan]:
    decoded: List[DecodedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _pb_attributes(span.attributes)
                trace_id = _hex_id(span.trace_id, 16, "trace_id", True)
                span_id = _hex_id(span.span_id, 8, "span_id", True)
                parent_id = _hex_id(span.parent_span_id, 8, "parent_span_id", False)
                is_remote = bool(span.flags & _IS_REMOTE) if span.flags & _HAS_IS_REMOTE else False
                fields = {
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "parent_id": parent_id,
                    "name": span.name,
                    "status": {
                        "status_code": _STATUS_NAMES.get(span.status.code, "UNSET"),
                        "description": span.status.message or None,
                    },
                    "attributes": attributes,
                    "events": [
                        {
                            "name": e.name,
                            "attributes": _pb_attributes(e.attributes),
                            "timestamp": _seconds(e.time_unix_nano),
                        }
                        for e in span.events
                    ],
                    "links": [_link(link) for link in span.links],
                    "start_time": _seconds(span.start_time_unix_nano),
                    "end_time": _seconds(span.end_time_unix_nano),
                    "context": {
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "is_remote": False,
                        "trace_state": _trace_state(span.trace_state),
                    },
                    "parent": (
                        {"trace_id": trace_id, "span_id": parent_id, "is_remote": is_remote, "trace_state": {}}
                        if parent_id is not None
                        else None
                    ),
                    "resource": {"attributes": resource, "schema_url": resource_spans.schema_url or ""},
                }
                decoded.append(DecodedSpan(*_ids(attributes, resource), fields=fields))
    return decoded


def decode_protobuf(body: bytes) -> List[DecodedSpan]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise OtlpDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from exc
    return _decode_request(request)


# OTLP/JSON writes these ids in hex; protobuf's JSON mapping (which parses the rest) wants base64 bytes.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _ids_to_base64(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _ids_to_base64(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    pass  # base64 already (some exporters send protobuf's mapping), or bad: the parser says so
            else:
                _ids_to_base64(value)


def decode_json(body: bytes) -> List[DecodedSpan]:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpDecodeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise OtlpDecodeError(f"ExportTraceServiceRequest must be a JSON object, got {type(document).__name__}")
    _ids_to_base64(document)
    try:
        request = json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpDecodeError(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from exc
    return _decode_request(request)


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
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = result.rejected
        response.partial_success.error_message = result.error_message
    if protobuf:
        return bytes(response.SerializeToString())
    return json.dumps(json_format.MessageToDict(response)).encode()
