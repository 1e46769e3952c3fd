"""``emit_object``: record a Python value so it can be read back with ``get_object_value``."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any, Dict, Optional

from pydantic import BaseModel

from agentlightning.semconv import AGL_OBJECT, LightningSpanAttributes
from agentlightning.types.tracer import Attributes, SpanCoreFields, TraceStatus

from ._common import resolve_tracer, span_attributes, span_name

__all__ = ["emit_object", "get_object_value"]

_LITERAL_TYPES: Dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _encode(obj: Any) -> Dict[str, str]:
    obj_type = type(obj)
    if obj_type.__name__ in _LITERAL_TYPES and obj_type is _LITERAL_TYPES[obj_type.__name__]:
        return {
            LightningSpanAttributes.OBJECT_TYPE: obj_type.__name__,
            LightningSpanAttributes.OBJECT_LITERAL: str(obj),
        }
    if isinstance(obj, (bytes, bytearray)):
        return {
            LightningSpanAttributes.OBJECT_TYPE: "bytes",
            LightningSpanAttributes.OBJECT_LITERAL: base64.b64encode(bytes(obj)).decode("ascii"),
        }
    payload: Any = obj
    if isinstance(obj, BaseModel):
        payload = obj.model_dump(mode="json")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        payload = dataclasses.asdict(obj)
    try:
        text = json.dumps(payload, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise RuntimeError(
            f"emit_object cannot serialize a {obj_type.__qualname__} to JSON ({exc}); "
            "pass a JSON-compatible value, a pydantic model or a dataclass"
        ) from exc
    return {
        LightningSpanAttributes.OBJECT_TYPE: f"{obj_type.__module__}.{obj_type.__qualname__}",
        LightningSpanAttributes.OBJECT_JSON: text,
    }


def emit_object(obj: Any, attributes: Optional[Attributes] = None, propagate: bool = True) -> SpanCoreFields:
    """Record ``obj`` as an ``agentlightning.object`` span: primitives as literals with their type name,
    ``bytes`` as base64, anything else as JSON (``RuntimeError`` when it cannot be serialized)."""
    merged: Attributes = {**(attributes or {}), **_encode(obj)}
    tracer = resolve_tracer(propagate, "emit_object()")
    return tracer.create_span(AGL_OBJECT, attributes=merged, status=TraceStatus(status_code="OK"))


def get_object_value(span: Any) -> Any:
    """Decode the value of an object span (JSON values come back as plain JSON data).

    Returns ``None`` for spans that are not object spans.
    """
    if span_name(span) != AGL_OBJECT:
        return None
    attributes = span_attributes(span)
    type_name = attributes.get(LightningSpanAttributes.OBJECT_TYPE)
    if LightningSpanAttributes.OBJECT_JSON in attributes:
        return json.loads(str(attributes[LightningSpanAttributes.OBJECT_JSON]))
    literal = attributes.get(LightningSpanAttributes.OBJECT_LITERAL)
    if literal is None:
        return None
    literal = str(literal)
    if type_name == "bytes":
        return base64.b64decode(literal)
    if type_name == "bool":
        return literal == "True"
    if type_name == "int":
        return int(literal)
    if type_name == "float":
        return float(literal)
    return literal
