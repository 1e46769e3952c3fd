"""Execution strategies: where the algorithm and the runners run."""

from .base import AlgorithmBundle, ExecutionStrategy, RunnerBundle
from .client_server import ClientServerExecutionStrategy, ExecutionEvent, MultiprocessingEvent, ThreadingEvent
from .processes import ProcessesExecutionStrategy
from .shared_memory import SharedMemoryExecutionStrategy

__all__ = [
    "ExecutionStrategy",
    "AlgorithmBundle",
    "RunnerBundle",
    "SharedMemoryExecutionStrategy",
    "ProcessesExecutionStrategy",
    "ClientServerExecutionStrategy",
    "ExecutionEvent",
    "ThreadingEvent",
    "MultiprocessingEvent",
]
