"""Span adapters: what the store holds (spans) -> what an algorithm learns from."""

from .base import Adapter, OtelTraceAdapter, TraceAdapter, TraceToTripletBase
from .llm_calls import LLMCall, RewardMatchPolicy, find_llm_calls
from .sequence import TokenSequence
from .triplet import (
    LlmProxyTraceToTriplet,
    PrefixBreak,
    TracerTraceToTriplet,
    TraceToMessages,
    TraceToTokenSequences,
)

__all__ = [
    "Adapter",
    "TraceAdapter",
    "OtelTraceAdapter",
    "TraceToTripletBase",
    "TracerTraceToTriplet",
    "LlmProxyTraceToTriplet",
    "TraceToMessages",
    "TraceToTokenSequences",
    "TokenSequence",
    "PrefixBreak",
    "LLMCall",
    "RewardMatchPolicy",
    "find_llm_calls",
]
