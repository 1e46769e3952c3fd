"""The CrewAI instrumentor: hands every event CrewAI's bus emits to the listener, and flushes the bus after each kickoff.

Importable without CrewAI; the framework is imported in :meth:`CrewAIInstrumentor._instrument`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from agentlightning.instrumentation import FrameworkNotAvailableError, FrameworkRequirement, Instrumentor

if TYPE_CHECKING:
    from .listener import LightningCrewListener

__all__ = ["INSTRUMENTOR", "CrewAIInstrumentor", "FLUSH_TIMEOUT_SECONDS"]

FLUSH_TIMEOUT_SECONDS = 30.0
"""The longest a kickoff waits, when it returns, for the bus's handlers to finish its last events."""

# The entry points of a CrewAI run; each returns only once the listener has seen all of its events.
_KICKOFF_METHODS = ("kickoff", "kickoff_async", "akickoff")


class CrewAIInstrumentor(Instrumentor):
    """Adds one :class:`~agentlightning_crewai.listener.LightningCrewListener` to CrewAI's event bus.

    The event bus is global, so every crew, agent, LLM call and tool call of the process is seen
    without any change to the agent: ``instrument()`` wraps the bus's ``emit`` so that the listener
    records each event in the emitting thread (not through the bus's handler threads). It also makes
    ``Crew``, ``Agent`` and ``Flow`` kickoffs (sync and async) flush the bus before they return, so the
    bus's own handlers are done too when a rollout ends. ``uninstrument()`` restores ``emit`` and the
    kickoffs.
    """

    name = "crewai"
    requirements = (FrameworkRequirement("crewai", minimum="1.15"),)

    def __init__(self) -> None:
        super().__init__()
        self._listener: Optional[LightningCrewListener] = None
        self._listener_lock = threading.Lock()

    def listener(self) -> LightningCrewListener:
        """The process-wide listener (created on first use; needs crewai)."""
        with self._listener_lock:
            if self._listener is None:
                problems = self.missing_requirements()
                if problems:
                    raise FrameworkNotAvailableError(self.name, problems)
                from .listener import LightningCrewListener

                self._listener = LightningCrewListener()
            return self._listener

    def _instrument(self) -> None:
        from crewai.events import crewai_event_bus

        listener = self.listener()
        for owner, method in kickoff_entry_points():
            self.patch(owner, method, _flushing(getattr(owner, method), crewai_event_bus.flush))
        # On the bus object itself (restored by uninstrument): every emit, wherever it comes from.
        self.patch(crewai_event_bus, "emit", _delivering(crewai_event_bus.emit, listener.deliver))


def kickoff_entry_points() -> List[Tuple[Any, str]]:
    """``(class, method)`` for every kickoff of ``Crew``, ``Agent`` and ``Flow`` (needs crewai)."""
    from crewai import Agent, Crew
    from crewai.flow.flow import Flow

    entry_points: List[Tuple[Any, str]] = []
    for public in (Crew, Agent, Flow):
        for method in _KICKOFF_METHODS:
            # Patch the class that defines it (Flow's kickoffs live on a base class).
            owner = next((klass for klass in public.__mro__ if method in vars(klass)), None)
            if owner is not None and (owner, method) not in entry_points:
                entry_points.append((owner, method))
    return entry_points


def _delivering(emit: Callable[[Any, Any], Any], deliver: Callable[[Any, Any], None]) -> Callable[[Any, Any], Any]:
    """The bus's ``emit`` that also hands each event to the listener, in the emitting thread."""

    @functools.wraps(emit)
    def emit_and_deliver(source: Any, event: Any) -> Any:
        result = emit(source, event)  # first: the bus gives the event its ids and parent, and feeds its handlers
        deliver(source, event)
        return result

    return emit_and_deliver


def _flushing(kickoff: Callable[..., Any], flush: Callable[[float], bool]) -> Callable[..., Any]:
    """``kickoff`` that waits, before it returns or raises, until the bus has delivered its events."""
    if inspect.iscoroutinefunction(kickoff):

        @functools.wraps(kickoff)
        async def async_kickoff(*args: Any, **kwargs: Any) -> Any:
            try:
                return await kickoff(*args, **kwargs)
            finally:
                await asyncio.to_thread(flush, FLUSH_TIMEOUT_SECONDS)

        return async_kickoff

    @functools.wraps(kickoff)
    def sync_kickoff(*args: Any, **kwargs: Any) -> Any:
        try:
            return kickoff(*args, **kwargs)
        finally:
            flush(FLUSH_TIMEOUT_SECONDS)

    return sync_kickoff


INSTRUMENTOR = CrewAIInstrumentor()
"""The instrumentor the plugin registers; ``agentlightning_crewai.instrument()`` turns it on."""
