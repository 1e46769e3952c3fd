"""Runners execute agents on rollouts from the store."""

from .agent import LitAgentRunner, RolloutCancelled
from .base import ExecutionEvent, Runner

__all__ = ["Runner", "LitAgentRunner", "ExecutionEvent", "RolloutCancelled"]
