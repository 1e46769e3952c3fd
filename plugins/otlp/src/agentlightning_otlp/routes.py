"""The store server's OTLP/HTTP trace ingest route (``/v1/traces``, protobuf or JSON), mounted at the root."""

from __future__ import annotations

import logging
import zlib

from fastapi import APIRouter, Request
from fastapi.responses import Response

from agentlightning.server import ServerRoutes
from agentlightning.server.routes.common import JSON, Ctx, PayloadTooLarge
from agentlightning.store.wire import OTLP_TRACES_PATH, ErrorBody

from . import decode as otlp

__all__ = ["ROUTES", "router"]

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"

router = APIRouter()


@router.post(
    OTLP_TRACES_PATH,
    summary="OTLP/HTTP trace export (ExportTraceServiceRequest, protobuf or JSON)",
    responses={
        200: {"description": "ExportTraceServiceResponse; partial_success counts spans that were rejected."},
        400: {
            "description": "Not a valid ExportTraceServiceRequest, or no span stored because none names its rollout "
            "and attempt (google.rpc.Status body naming the problem)."
        },
        404: {"description": "No span stored: the rollout or attempt they name does not exist (google.rpc.Status)."},
        409: {"description": "No span stored: their attempt already ended (succeeded or failed) (google.rpc.Status)."},
        401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
        413: {"model": ErrorBody, "description": "Request body over the server's limit."},
        415: {"description": "Content-Type other than application/x-protobuf or application/json."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def otlp_traces(ctx: Ctx, request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in (PROTOBUF, "application/protobuf"):
        protobuf = True
    elif content_type == JSON:
        protobuf = False
    else:
        message = f"unsupported Content-Type {content_type or '(none)'!r}; send {PROTOBUF} or {JSON}"
        return Response(otlp.encode_status(3, message, False), status_code=415, media_type=JSON)
    media_type = PROTOBUF if protobuf else JSON
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    try:
        body = _decompress(body, encoding, ctx.max_body_bytes)
        decoded = otlp.decode_protobuf(body) if protobuf else otlp.decode_json(body)
    except otlp.OtlpDecodeError as exc:
        return Response(otlp.encode_status(3, str(exc), protobuf), status_code=400, media_type=media_type)
    result = await otlp.ingest(ctx.store, decoded)
    if result.rejected:
        logger.warning("OTLP ingest rejected %d span(s): %s", result.rejected, result.error_message)
    if result.failure_status is not None:  # nothing stored: OTLP's "processing failed", a 4xx naming why
        status_code, failure = otlp.encode_failure(result, protobuf)
        return Response(failure, status_code=status_code, media_type=media_type)
    return Response(otlp.encode_response(result, protobuf), media_type=media_type)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise otlp.OtlpDecodeError(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise otlp.OtlpDecodeError(f"body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(limit)
    return data


ROUTES = ServerRoutes(root=router)
