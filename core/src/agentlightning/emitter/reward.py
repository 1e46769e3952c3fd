"""Rewards: ``emit_reward`` writes them, the ``get_*``/``find_*`` helpers read them back from spans.

A reward span is an ``agentlightning.annotation`` span holding a list of named dimensions,
primary first: ``agentlightning.reward.0.name = "primary"``, ``agentlightning.reward.0.value = 0.9``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import numbers
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, TypeVar, Union, cast

from agentlightning.semconv import (
    AGL_ANNOTATION,
    AGL_REWARD,
    LightningSpanAttributes,
    RewardAttributes,
    RewardPydanticModel,
)
from agentlightning.types.tracer import Attributes, SpanCoreFields
from agentlightning.utils.otel import filter_and_unflatten_attributes

from ._common import span_attributes, span_name
from .annotation import emit_annotation

__all__ = [
    "emit_reward",
    "reward",
    "get_reward_value",
    "get_rewards_from_span",
    "is_reward_span",
    "find_reward_spans",
    "find_final_reward",
]

logger = logging.getLogger(__name__)

SpanT = TypeVar("SpanT")
FuncT = TypeVar("FuncT", bound=Callable[..., Any])

_LEGACY_AGENTOPS_KEYS = ("agentops.task.output", "agentops.entity.output")


def _as_reward_number(value: Any, what: str) -> float:
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{what} must be a number, got {type(value).__name__} ({value!r})")


def emit_reward(
    reward: Union[float, Mapping[str, float]],
    *,
    primary_key: Optional[str] = None,
    attributes: Optional[Attributes] = None,
    propagate: bool = True,
) -> SpanCoreFields:
    """Record a reward for the current rollout.

    ``reward`` is a number or a dict of named dimensions (``primary_key`` names the one algorithms
    optimize); ``attributes`` are added to the span (e.g. a link to one LLM call). ``TypeError`` for a
    non-number, ``ValueError`` for a bad dict or clashing attributes, ``RuntimeError`` when
    ``propagate`` finds no tracer.
    """
    dimensions: List[Dict[str, Any]]
    if isinstance(reward, Mapping):
        if not reward:
            raise ValueError("emit_reward got an empty dict; give at least the primary dimension")
        if primary_key is None:
            raise ValueError("emit_reward with a dict of rewards needs primary_key=<one of its keys>")
        if primary_key not in reward:
            raise ValueError(f"primary_key {primary_key!r} is not one of the reward keys {sorted(map(str, reward))}")
        keys = [primary_key, *(key for key in reward if key != primary_key)]  # primary first
        dimensions = [{"name": str(k), "value": _as_reward_number(reward[k], f"reward[{k!r}]")} for k in keys]
    else:
        if primary_key is not None:
            logger.debug("emit_reward: primary_key is ignored for a scalar reward")
        dimensions = [{"name": "primary", "value": _as_reward_number(reward, "reward")}]
    extra = dict(attributes or {})
    clashing = [key for key in extra if key == AGL_REWARD or key.startswith(AGL_REWARD + ".")]
    if clashing:
        raise ValueError(f"attributes must not set reward keys themselves: {clashing}")
    return emit_annotation({LightningSpanAttributes.REWARD: dimensions, **extra}, propagate=propagate)


def get_rewards_from_span(span: Any) -> List[RewardPydanticModel]:
    """All reward dimensions written by :func:`emit_reward`, primary first; ``[]`` if there are none."""
    try:
        raw = filter_and_unflatten_attributes(span_attributes(span), LightningSpanAttributes.REWARD)
    except ValueError:
        logger.warning("span %r has malformed reward attributes; ignoring them", span_name(span))
        return []
    if isinstance(raw, dict):  # sparse indices: keep index order
        raw = [raw[key] for key in sorted(raw, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))]
    if not isinstance(raw, list):
        return []
    rewards: List[RewardPydanticModel] = []
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        name, value = entry.get(RewardAttributes.NAME), entry.get(RewardAttributes.VALUE)
        if name is None or not isinstance(value, (numbers.Real, str)):
            continue
        try:
            rewards.append(RewardPydanticModel(name=str(name), value=float(value)))
        except ValueError:
            continue
    return rewards


def _legacy_agentops_reward(attributes: Mapping[str, Any]) -> Optional[float]:
    for key in _LEGACY_AGENTOPS_KEYS:
        payload = attributes.get(key)
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                continue
        if isinstance(payload, Mapping) and payload.get("type") == "reward":
            value = payload.get("value")
            if isinstance(value, numbers.Real):
                warnings.warn(
                    "reading a reward from an AgentOps payload is deprecated; emit rewards with emit_reward()",
                    DeprecationWarning,
                    stacklevel=3,
                )
                return float(value)
    return None


def get_reward_value(span: Any) -> Optional[float]:
    """The primary reward a span carries, or ``None``.

    Understands the current layout (:func:`emit_reward`), the AgentOps payloads of 0.1
    (``agentops.task.output``/``agentops.entity.output`` = ``{"type": "reward", "value": x}``) and
    the bare ``reward`` attribute of 0.2 annotation spans.
    """
    rewards = get_rewards_from_span(span)
    if rewards:
        return rewards[0].value
    attributes = span_attributes(span)
    legacy = _legacy_agentops_reward(attributes)
    if legacy is not None:
        return legacy
    if span_name(span) in (AGL_ANNOTATION, AGL_REWARD):
        bare = attributes.get("reward")
        if isinstance(bare, numbers.Real):
            return float(bare)
    return None


def is_reward_span(span: Any) -> bool:
    """True if the span carries a reward in any supported layout."""
    return get_reward_value(span) is not None


def find_reward_spans(spans: Iterable[SpanT]) -> List[SpanT]:
    """The reward spans among ``spans``, in their given order."""
    return [span for span in spans if is_reward_span(span)]


def find_final_reward(spans: Sequence[Any]) -> Optional[float]:
    """The reward of the last reward span in ``spans`` (scanning from the end), or ``None``."""
    for span in reversed(spans):
        value = get_reward_value(span)
        if value is not None:
            return value
    return None


def _emit_returned_reward(result: Any, func_name: str) -> None:
    if result is None:
        return
    if isinstance(result, numbers.Real):
        emit_reward(float(result))
    else:
        logger.warning("@reward function %s returned %s, not a number; no reward recorded", func_name, type(result))


def reward(func: FuncT) -> FuncT:
    """Deprecated decorator: record the number a function returns as a reward.

    Call :func:`emit_reward` (or return the reward from the rollout) instead.
    """
    warnings.warn("@reward is deprecated; call emit_reward(value) instead", DeprecationWarning, stacklevel=2)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await func(*args, **kwargs)
            _emit_returned_reward(result, func.__name__)
            return result

        return cast(FuncT, async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        _emit_returned_reward(result, func.__name__)
        return result

    return cast(FuncT, wrapper)
