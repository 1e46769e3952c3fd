"""``operation``: record a function call or a block of code as an ``agentlightning.operation`` span:
``@operation``, ``@operation(name="search", tool="bing")`` or ``with operation(name="plan") as op:
op.set_output(plan)``, sync or async."""

from __future__ import annotations

import functools
import inspect
import logging
from types import TracebackType
from typing import Any, Callable, ContextManager, Dict, Mapping, Optional, Type, TypeVar, Union, cast, overload

from typing_extensions import ParamSpec

from agentlightning.semconv import AGL_OPERATION, LightningSpanAttributes
from agentlightning.types.tracer import Attributes, SpanCoreFields, SpanRecordingContext
from agentlightning.utils.otel import flatten_attributes, sanitize_attributes, to_jsonable

from ._common import resolve_tracer

__all__ = ["operation", "OperationContext"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_INPUT = LightningSpanAttributes.OPERATION_INPUT
_OUTPUT = LightningSpanAttributes.OPERATION_OUTPUT


def _flatten_value(key: str, value: Any) -> Attributes:
    """``key`` -> value, with dicts/lists of dicts spread into dotted keys; never raises."""
    try:
        return sanitize_attributes(flatten_attributes({key: value}))
    except ValueError:  # colliding keys inside the value: keep it whole as JSON
        return sanitize_attributes({key: to_jsonable(value)})


def _flatten_all(values: Mapping[str, Any], prefix: str = "") -> Attributes:
    flat: Attributes = {}
    for key, value in values.items():
        flat.update(_flatten_value(f"{prefix}{key}", value))
    return flat


class OperationContext:
    """A recorded operation; usable as a context manager (sync or async) and as a decorator.

    As a decorator each call records its own span, so one decorated function can run concurrently.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        propagate: bool = True,
        attributes: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.name = name
        self.propagate = propagate
        self.attributes: Dict[str, Any] = dict(attributes or {})
        self._manager: Optional[ContextManager[SpanRecordingContext]] = None
        self._recorder: Optional[SpanRecordingContext] = None
        self._finished: Optional[SpanCoreFields] = None

    # -- recording -------------------------------------------------------------------------------
    def _initial_attributes(self) -> Attributes:
        initial = _flatten_all(self.attributes)
        if self.name is not None:
            initial[LightningSpanAttributes.OPERATION_NAME] = self.name
        return initial

    def _require_recorder(self) -> SpanRecordingContext:
        if self._recorder is None:
            raise RuntimeError("this operation is not running; use it as `with operation(...) as op:`")
        return self._recorder

    def record_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes to the operation's span (nested values are flattened)."""
        self._require_recorder().record_attributes(_flatten_all(attributes))

    def set_input(self, *args: Any, **kwargs: Any) -> None:
        """Record inputs: positional ones as ``...input.args.<i>``, keyword ones as ``...input.<name>``."""
        self._record_inputs_flat(self._named_inputs(None, args, kwargs))

    def set_output(self, output: Any) -> None:
        """Record the result as ``agentlightning.operation.output`` (dicts spread into dotted keys)."""
        self._require_recorder().record_attributes(_flatten_value(_OUTPUT, output))

    def get_recorded_span(self) -> SpanCoreFields:
        if self._recorder is not None:
            return self._recorder.get_recorded_span()
        if self._finished is not None:
            return self._finished
        raise RuntimeError("this operation has not run yet")

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> OperationContext:
        if self._manager is not None:
            raise RuntimeError("an operation context cannot be entered twice at the same time")
        tracer = resolve_tracer(self.propagate, "operation()")
        manager = tracer.operation_context(AGL_OPERATION, attributes=self._initial_attributes())
        self._recorder = manager.__enter__()
        self._manager = manager
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Optional[bool]:
        manager, recorder = self._manager, self._recorder
        self._manager, self._recorder = None, None
        if manager is None or recorder is None:
            return None
        try:
            if exc is None and recorder.get_recorded_span().status.status_code == "UNSET":
                recorder.record_status("OK")
            return manager.__exit__(exc_type, exc, tb)
        finally:
            self._finished = recorder.get_recorded_span()

    async def __aenter__(self) -> OperationContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Optional[bool]:
        return self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------------------------------
    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        op_name = self.name or getattr(func, "__name__", None) or "operation"
        try:
            signature: Optional[inspect.Signature] = inspect.signature(func)
        except (TypeError, ValueError):
            signature = None

        def fresh() -> OperationContext:
            return OperationContext(op_name, propagate=self.propagate, attributes=self.attributes)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with fresh() as op:
                    op._record_call(signature, args, kwargs)
                    result = await cast(Callable[..., Any], func)(*args, **kwargs)
                    op._record_output_safely(result)
                    return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with fresh() as op:
                op._record_call(signature, args, kwargs)
                result = func(*args, **kwargs)
                op._record_output_safely(result)
                return result

        return wrapper

    def _record_call(self, signature: Optional[inspect.Signature], args: Any, kwargs: Mapping[str, Any]) -> None:
        """Record call arguments by parameter name; recording problems never break the call."""
        try:
            self._record_inputs_flat(self._named_inputs(signature, tuple(args), dict(kwargs)))
        except Exception:  # pragma: no cover - defensive, the inputs are user objects
            logger.debug("could not record the inputs of operation %s", self.name, exc_info=True)

    def _record_output_safely(self, result: Any) -> None:
        try:
            self.set_output(result)
        except Exception:  # pragma: no cover - defensive
            logger.debug("could not record the output of operation %s", self.name, exc_info=True)

    def _record_inputs_flat(self, flat_inputs: Mapping[str, Any]) -> None:
        self._require_recorder().record_attributes(_flatten_all(flat_inputs, f"{_INPUT}."))

    @staticmethod
    def _named_inputs(
        signature: Optional[inspect.Signature], args: tuple[Any, ...], kwargs: Dict[str, Any]
    ) -> Dict[str, Any]:
        named: Dict[str, Any] = {}
        try:
            bound = signature.bind(*args, **kwargs) if signature is not None else None
        except TypeError:
            bound = None
        if signature is None or bound is None:
            return {**{f"args.{index}": value for index, value in enumerate(args)}, **kwargs}
        params = signature.parameters
        for position, (param_name, value) in enumerate(bound.arguments.items()):
            kind = params[param_name].kind
            if position == 0 and param_name in ("self", "cls"):
                continue  # the receiver is noise, often unserializable
            if kind is inspect.Parameter.VAR_POSITIONAL:
                for index, item in enumerate(value):
                    named[f"{param_name}.{index}"] = item
            elif kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            else:
                named[param_name] = value
        return named


@overload
def operation(func: Callable[P, R]) -> Callable[P, R]: ...


@overload
def operation(
    func: Optional[str] = None, *, name: Optional[str] = None, propagate: bool = True, **attributes: Any
) -> OperationContext: ...


def operation(
    func: Union[Callable[P, R], str, None] = None,
    *,
    name: Optional[str] = None,
    propagate: bool = True,
    **attributes: Any,
) -> Union[Callable[P, R], OperationContext]:
    """Record an operation span (decorator or context manager, sync or async).

    ``agentlightning.operation.name`` is ``name`` (default: the function's), inputs go under
    ``...operation.input.<param>``, the result under ``...operation.output``; an exception marks the
    span ERROR and is re-raised.
    """
    if isinstance(func, str):
        if name is not None:
            raise TypeError("operation() got the name both positionally and as name=")
        return OperationContext(func, propagate=propagate, attributes=attributes)
    context = OperationContext(name, propagate=propagate, attributes=attributes)
    if func is None:
        return context
    if not callable(func):
        raise TypeError(f"operation() expects a function, a name or keyword arguments, got {type(func).__name__}")
    return context(func)
