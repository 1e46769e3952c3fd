"""The store's REST API on the wire: paths, strict request bodies and JSON error bodies, shared by
the store server and the HTTP client (design notes: ``docs/internals.md``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Type, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.config import JsonDict
from typing_extensions import Annotated

from agentlightning import errors
from agentlightning.types import (
    ATTEMPT_STATUSES,
    ROLLOUT_STATUSES,
    Attempt,
    AttemptedRollout,
    EnqueueRolloutRequest,
    NamedResources,
    PaginatedResult,
    ResourcesUpdate,
    Rollout,
    RolloutConfig,
    Span,
    Worker,
)

from .engine import (
    ATTEMPT_SORT_FIELDS,
    RESOURCES_SORT_FIELDS,
    ROLLOUT_MODES,
    ROLLOUT_SORT_FIELDS,
    SPAN_SORT_FIELDS,
    WORKER_SORT_FIELDS,
    WORKER_STATUSES,
)
from .query import MAX_PAGE_VALUE

__all__ = [
    "API_PREFIX",
    "API_VERSION",
    "IDEMPOTENCY_HEADER",
    "OTLP_TRACES_PATH",
    "ErrorBody",
    "error_body",
    "error_status",
    "exception_from_error",
    "describe_validation_errors",
    "validation_error_kind",
]

API_VERSION = "1"
API_PREFIX = "/v1/agl"
OTLP_TRACES_PATH = "/v1/traces"
IDEMPOTENCY_HEADER = "Idempotency-Key"
"""A mutation carrying this header is applied once: a repeat with the same key (a client's retry
after a lost response) gets the first response again instead of being applied twice."""

RolloutView = Annotated[Union[AttemptedRollout, Rollout], Field(union_mode="left_to_right")]
"""A rollout as queries return it: with its latest attempt when it has one."""


_TYPE_ADAPTERS: Dict[Any, TypeAdapter[Any]] = {}


def type_adapter(tp: Any) -> TypeAdapter[Any]:
    """One pydantic TypeAdapter per type (building one costs more than using it): the server and client share them."""
    adapter = _TYPE_ADAPTERS.get(tp)
    if adapter is None:
        adapter = _TYPE_ADAPTERS[tp] = TypeAdapter(tp)
    return adapter


class RolloutsPage(PaginatedResult[RolloutView]):
    """A page of rollouts (each with its latest attempt when it has one)."""


class AttemptsPage(PaginatedResult[Attempt]):
    """A page of attempts."""


class SpansPage(PaginatedResult[Span]):
    """A page of spans."""


class ResourcesPage(PaginatedResult[ResourcesUpdate]):
    """A page of resources."""


class WorkersPage(PaginatedResult[Worker]):
    """A page of workers."""


def documented_as(schema: Dict[str, Any]) -> Callable[[Dict[str, Any]], None]:
    """``json_schema_extra`` that documents a field as ``schema`` (its allowed values; not null) while
    the model keeps a plain type, so the store checks the value and names it in its own typed error."""

    def apply(field_schema: Dict[str, Any]) -> None:
        for key in ("anyOf", "type", "items"):
            field_schema.pop(key, None)
        if field_schema.get("default", 0) is None and not _allows_null(schema):
            del field_schema["default"]  # absent means "unchanged"; null itself is refused
        field_schema.update(schema)

    return apply


def not_null(field_schema: Dict[str, Any]) -> None:
    """``json_schema_extra`` for an optional field whose absence means "unchanged" but that refuses null."""
    options = [option for option in field_schema.pop("anyOf", ()) if option.get("type") != "null"]
    field_schema.update(options[0] if len(options) == 1 else {"anyOf": options})
    if field_schema.get("default", 0) is None:
        del field_schema["default"]


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0; strict pydantic would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WireInt = Annotated[int, BeforeValidator(_integral)]


def _allows_null(schema: Dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in schema.get("anyOf", ()))


def one_of(values: Sequence[str], *, nullable: bool = False) -> Dict[str, Any]:
    """The schema of a string with these allowed values (or null)."""
    schema: Dict[str, Any] = {"type": "string", "enum": list(values)}
    return {"anyOf": [schema, {"type": "null"}]} if nullable else schema


def _list_of(values: Sequence[str]) -> Dict[str, Any]:
    return {"anyOf": [{"type": "array", "items": one_of(values)}, {"type": "null"}]}


def _sort_fields(fields: Sequence[str], default: Optional[str]) -> Any:
    return Field(default=default, json_schema_extra=documented_as(one_of(fields, nullable=True)))


_SORT_ORDER = documented_as(one_of(("asc", "desc")))
_FILTER_LOGIC = documented_as(one_of(("and", "or")))
# Page bounds as the store checks them (limit -1 is "no limit"); it names a value out of them.
_AT_LEAST_MINUS_ONE: JsonDict = {"minimum": -1, "maximum": MAX_PAGE_VALUE}
_OFFSET: JsonDict = {"minimum": 0, "maximum": MAX_PAGE_VALUE}
# An optional id that may not be empty: "" is no worker id (and would be listed as a worker).
OptionalId = Optional[Annotated[str, Field(min_length=1)]]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _PageRequest(_Request):
    """The order and page of a query (the sort field is the query's own)."""

    sort_order: str = Field(default="asc", description="'asc' or 'desc'.", json_schema_extra=_SORT_ORDER)
    limit: WireInt = Field(default=-1, description="-1: no limit.", json_schema_extra=_AT_LEAST_MINUS_ONE)
    offset: WireInt = Field(default=0, json_schema_extra=_OFFSET)


# -- rollouts -----------------------------------------------------------------------------------
class StartRolloutRequest(_Request):
    input: Any = Field(description="The task input handed to the agent (any JSON value).")
    mode: Optional[str] = Field(
        default=None,
        description="'train', 'val' or 'test'.",
        json_schema_extra=documented_as(one_of(ROLLOUT_MODES, nullable=True)),
    )
    resources_id: Optional[str] = Field(default=None, description="Resources to use; default: the latest.")
    config: Optional[RolloutConfig] = None
    metadata: Optional[Dict[str, Any]] = None
    worker_id: OptionalId = None


class EnqueueRolloutsRequest(_Request):
    rollouts: List[EnqueueRolloutRequest] = Field(
        description="Rollouts to enqueue, in order. A request whose client_request_id was seen before "
        "returns the rollout created then instead of a new one."
    )


class DequeueRolloutsRequest(_Request):
    limit: WireInt = Field(
        default=1, description="At most this many rollouts (>= 1).", json_schema_extra={"minimum": 1}
    )
    worker_id: OptionalId = None


class QueryRolloutsRequest(_PageRequest):
    status_in: Optional[List[str]] = Field(default=None, json_schema_extra=documented_as(_list_of(ROLLOUT_STATUSES)))
    rollout_id_in: Optional[List[str]] = None
    rollout_id_contains: Optional[str] = None
    filter_logic: str = Field(default="and", description="'and' or 'or'.", json_schema_extra=_FILTER_LOGIC)
    sort_by: Optional[str] = _sort_fields(ROLLOUT_SORT_FIELDS, None)
    status: Optional[List[str]] = Field(
        default=None,
        description="Deprecated alias of status_in.",
        json_schema_extra=documented_as(_list_of(ROLLOUT_STATUSES)),
    )
    rollout_ids: Optional[List[str]] = Field(default=None, description="Deprecated alias of rollout_id_in.")


class UpdateRolloutRequest(_Request):
    """Only the fields present in the body are changed; ``null`` is a value (it clears the field)."""

    input: Any = None
    mode: Optional[str] = Field(default=None, json_schema_extra=documented_as(one_of(ROLLOUT_MODES, nullable=True)))
    resources_id: Optional[str] = None
    status: Optional[str] = Field(default=None, json_schema_extra=documented_as(one_of(ROLLOUT_STATUSES)))
    config: Optional[RolloutConfig] = Field(default=None, json_schema_extra=not_null)
    metadata: Optional[Dict[str, Any]] = None


class WaitForRolloutsRequest(_Request):
    rollout_ids: List[str]
    timeout: Optional[float] = Field(
        default=None,
        description="Seconds to wait; <= 0 checks once; null waits as long as the server allows per request "
        "(the response's 'pending' says which rollouts are still running, so a client asks again).",
    )


class WaitForRolloutsResponse(BaseModel):
    rollouts: List[Rollout] = Field(description="The requested rollouts that are finished, in request order.")
    pending: List[str] = Field(description="Requested ids that exist and are not finished yet.")


# -- attempts -----------------------------------------------------------------------------------
class StartAttemptRequest(_Request):
    worker_id: OptionalId = None


class QueryAttemptsRequest(_PageRequest):
    sort_by: Optional[str] = _sort_fields(ATTEMPT_SORT_FIELDS, "sequence_id")


class UpdateAttemptRequest(_Request):
    """Only the fields present in the body are changed."""

    status: Optional[str] = Field(default=None, json_schema_extra=documented_as(one_of(ATTEMPT_STATUSES)))
    worker_id: OptionalId = None
    last_heartbeat_time: Optional[float] = Field(default=None, json_schema_extra=documented_as({"type": "number"}))
    metadata: Optional[Dict[str, Any]] = None


# -- spans --------------------------------------------------------------------------------------
class AddSpansRequest(_Request):
    spans: List[Span]


class AddSpansResponse(BaseModel):
    inserted: List[int] = Field(
        description="Indexes (in the request) of the spans that were new; duplicates are left out."
    )


class SequenceIdsRequest(_Request):
    pairs: List[Annotated[List[str], Field(min_length=2, max_length=2)]] = Field(
        description="[rollout_id, attempt_id] pairs; one new sequence id each."
    )


class SequenceIdsResponse(BaseModel):
    sequence_ids: List[int]


class SpanFilters(_PageRequest):
    """The filters, order and page of a span query (the rollout is given separately)."""

    attempt_id: Optional[str] = Field(default=None, description="An attempt id, 'latest', or null for all attempts.")
    trace_id: Optional[str] = None
    trace_id_contains: Optional[str] = None
    span_id: Optional[str] = None
    span_id_contains: Optional[str] = None
    parent_id: Optional[str] = None
    parent_id_contains: Optional[str] = None
    name: Optional[str] = None
    name_contains: Optional[str] = None
    filter_logic: str = Field(default="and", json_schema_extra=_FILTER_LOGIC)
    sort_by: Optional[str] = _sort_fields(SPAN_SORT_FIELDS, "sequence_id")


class QuerySpansRequest(SpanFilters):
    rollout_id: str


# -- resources and workers ---------------------------------------------------------------------
class ResourcesRequest(_Request):
    resources: NamedResources


class QueryResourcesRequest(_PageRequest):
    resources_id: Optional[str] = None
    resources_id_contains: Optional[str] = None
    sort_by: Optional[str] = _sort_fields(RESOURCES_SORT_FIELDS, None)


class QueryWorkersRequest(_PageRequest):
    status_in: Optional[List[str]] = Field(default=None, json_schema_extra=documented_as(_list_of(WORKER_STATUSES)))
    worker_id_contains: Optional[str] = None
    filter_logic: str = Field(default="and", json_schema_extra=_FILTER_LOGIC)
    sort_by: Optional[str] = _sort_fields(WORKER_SORT_FIELDS, None)


class UpdateWorkerRequest(_Request):
    """A worker heartbeat; ``heartbeat_stats`` is replaced only when present."""

    heartbeat_stats: Optional[Dict[str, Any]] = None


# -- errors -------------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="Type of the error, e.g. RolloutNotFoundError, InvalidTransitionError, TypeError.")
    message: str = Field(description="What is wrong, naming the offending value.")
    details: Optional[Dict[str, Any]] = None


# -- batches ------------------------------------------------------------------------------------
BATCH_PATH = "/batch"
MAX_BATCH_CALLS = 1000
"""At most this many calls in one ``POST /v1/agl/batch`` request."""
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200)]


class UpdateAttemptCall(UpdateAttemptRequest):
    """``update_attempt`` with its ids in the body (a batch has no path per call)."""

    rollout_id: Annotated[str, Field(min_length=1)]
    attempt_id: Annotated[str, Field(min_length=1, description="An attempt id or 'latest'.")]


def _call(op: str, args: Type[BaseModel], doc: str) -> Type[BaseModel]:
    fields: Dict[str, Any] = {
        "op": (Literal[op], Field(description=doc)),
        "args": (args, ...),
        "idempotency_key": (
            Optional[IdempotencyKey],
            Field(default=None, description="Like the Idempotency-Key header of the call's own route."),
        ),
    }
    return create_model(f"Batch_{op}", __base__=_Request, **fields)


# One entry per operation a batch may carry: (its args model, the answer's type, its success status).
BATCH_OPERATIONS: Dict[str, Tuple[Type[BaseModel], Any, int]] = {
    "enqueue_many_rollouts": (EnqueueRolloutsRequest, List[Rollout], 201),
    "dequeue_many_rollouts": (DequeueRolloutsRequest, List[AttemptedRollout], 200),
    "get_many_span_sequence_ids": (SequenceIdsRequest, SequenceIdsResponse, 200),
    "add_many_spans": (AddSpansRequest, AddSpansResponse, 200),
    "update_attempt": (UpdateAttemptCall, Attempt, 200),
    "query_spans": (QuerySpansRequest, SpansPage, 200),
}
_BATCH_CALLS = tuple(
    _call(op, args, f"The store's {op}; args as the body of its own route.")
    for op, (args, _, _) in BATCH_OPERATIONS.items()
)
BatchCall = Annotated[Union[_BATCH_CALLS], Field(discriminator="op")]  # type: ignore[valid-type]


class BatchRequest(_Request):
    """Several store calls in one request, applied one after another (the client sends calls that
    were concurrent, so their order does not matter). A body that is not valid as a whole is refused
    as a whole (422); a call that fails gets its own error in its result."""

    calls: List[BatchCall] = Field(min_length=1, max_length=MAX_BATCH_CALLS)


class BatchResult(BaseModel):
    status: int = Field(ge=200, le=599, description="The HTTP status the call's own route would have answered.")
    body: Union[
        ErrorBody,
        SpansPage,
        AddSpansResponse,
        SequenceIdsResponse,
        List[AttemptedRollout],
        List[Rollout],
        Attempt,
    ] = Field(description="What the call's own route would have answered: its result, or an error body.")


class BatchResponse(BaseModel):
    results: List[BatchResult] = Field(description="One per call, in request order.")


# Errors a client may rebuild from a response, by name. Order matters for error_status (subclasses first).
_TYPED_ERRORS: Dict[str, Type[BaseException]] = {
    cls.__name__: cls
    for cls in (
        errors.RolloutNotFoundError,
        errors.AttemptNotFoundError,
        errors.ResourcesNotFoundError,
        errors.WorkerNotFoundError,
        errors.NotFoundError,
        errors.InvalidStatusError,
        errors.InvalidTransitionError,
        errors.InvalidSpanError,
        errors.StoreClosedError,
        errors.PayloadTooLargeError,
        TypeError,
        ValueError,
    )
}
# Attributes of typed errors carried in ``details`` so the rebuilt exception has them too.
_ERROR_ATTRIBUTES = ("item_id", "status", "allowed", "current", "requested")


def validation_error_kind(problems: Sequence[Mapping[str, Any]]) -> str:
    """``TypeError`` when every problem is a value of the wrong JSON type, else ``ValueError``."""
    kinds = [str(e.get("type", "")) for e in problems]
    if kinds and all(k.endswith("_type") or k in ("is_instance_of", "model_attributes_type") for k in kinds):
        return "TypeError"
    return "ValueError"


def describe_validation_errors(
    errors_: Sequence[Mapping[str, Any]], strip: Sequence[str] = ()
) -> Tuple[str, List[Dict[str, Any]]]:
    """One line per problem naming the field and the value it got, plus a JSON-safe list of the problems."""
    lines: List[str] = []
    problems: List[Dict[str, Any]] = []
    for error in errors_:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in strip:
            loc = loc[1:]
        where = ".".join(loc) or "body"
        text = f"{where}: {error.get('msg', 'invalid')}"
        if "input" in error and error.get("type") != "missing":
            shown = repr(error["input"])
            text += f" (got {shown[:200]}{'...' if len(shown) > 200 else ''})"
        lines.append(text)
        problems.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return "; ".join(lines) or "invalid request", problems


def error_status(exc: BaseException) -> Optional[Tuple[int, str]]:
    """HTTP status and wire name for an exception a store raised because of its input; None if it is a bug."""
    if isinstance(exc, errors.NotFoundError):
        return 404, type(exc).__name__ if type(exc).__name__ in _TYPED_ERRORS else "NotFoundError"
    if isinstance(exc, errors.InvalidTransitionError):
        return 409, "InvalidTransitionError"
    if isinstance(exc, errors.StoreClosedError):
        return 503, "StoreClosedError"
    if isinstance(exc, errors.PayloadTooLargeError):
        return 413, "PayloadTooLargeError"
    if isinstance(exc, ValidationError):
        return 422, validation_error_kind(exc.errors())
    if isinstance(exc, (errors.InvalidStatusError, errors.InvalidSpanError)):
        return 400, type(exc).__name__
    if isinstance(exc, TypeError):
        return 422, "TypeError"
    if isinstance(exc, ValueError):
        return 400, "ValueError"
    return None


def error_body(name: str, message: str, exc: Optional[BaseException] = None, **details: Any) -> ErrorBody:
    extra: Dict[str, Any] = dict(details)
    if exc is not None:
        for attribute in _ERROR_ATTRIBUTES:
            value = getattr(exc, attribute, None)
            if isinstance(value, (str, int, float, bool, list, tuple)):
                extra[attribute] = list(value) if isinstance(value, tuple) else value
    return ErrorBody(error=name, message=message, details=extra or None)


def exception_from_error(status_code: int, body: Optional[ErrorBody], fallback_text: str = "") -> BaseException:
    """The exception a client raises for an error response (the same type the store raised, when known)."""
    if body is None:
        message = fallback_text.strip() or f"HTTP {status_code}"
        name = ""
    else:
        message, name = body.message, body.error
    if status_code == 401:
        return errors.StoreAuthError(message)
    if status_code == 413:
        return errors.PayloadTooLargeError(message)
    cls = _TYPED_ERRORS.get(name)
    if cls is None:
        if status_code >= 500:
            return errors.StoreServerError(f"store server error {status_code}: {message}", status_code)
        if status_code == 404:
            cls = errors.NotFoundError
        elif status_code == 409:
            cls = errors.InvalidTransitionError
        elif status_code == 422:
            cls = TypeError
        else:
            cls = ValueError
    if cls in (TypeError, ValueError):
        return cls(message)
    # Typed errors format their message in __init__; keep the server's text and attributes as they are.
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for key, value in ((body.details or {}) if body is not None else {}).items():
        if key in _ERROR_ATTRIBUTES:
            setattr(exc, key, tuple(value) if key == "allowed" and isinstance(value, list) else value)
    return exc
