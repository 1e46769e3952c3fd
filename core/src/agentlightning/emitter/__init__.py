"""Emitters: record rewards, annotations, messages, objects, exceptions and operations as spans."""

from __future__ import annotations

from .annotation import emit_annotation
from .exception import emit_exception
from .message import emit_message, get_message_value
from .object import emit_object, get_object_value
from .operation import OperationContext, operation
from .reward import (
    emit_reward,
    find_final_reward,
    find_reward_spans,
    get_reward_value,
    get_rewards_from_span,
    is_reward_span,
    reward,
)

__all__ = [
    "reward",
    "operation",
    "emit_reward",
    "emit_annotation",
    "emit_message",
    "emit_object",
    "emit_exception",
    "get_reward_value",
    "get_rewards_from_span",
    "is_reward_span",
    "find_reward_spans",
    "find_final_reward",
    "get_message_value",
    "get_object_value",
    "OperationContext",
]
