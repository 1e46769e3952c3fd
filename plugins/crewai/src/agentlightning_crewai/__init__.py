"""CrewAI adapter for Agent Lightning.

Zero code change: install this package; a runner turns the adapter on when it starts (unless
``AGL_DISABLE_INSTRUMENTORS=crewai``). Outside a runner, one line does it::

    import agentlightning_crewai

    agentlightning_crewai.instrument()   # every crew, agent and flow of the process

Crew kickoffs, agents executing tasks (as ``gen_ai.agent.name``: the agent's role, so ``agent_match``
selects agents), LLM calls (request, response, model, parameters, usage, provider response id) and
tool calls (arguments, result, errors, call id) become spans of the running rollout. Token ids come
from the LLM proxy, joined by the provider response id. This module imports without CrewAI installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instrumentor import INSTRUMENTOR, CrewAIInstrumentor

if TYPE_CHECKING:
    from .listener import LightningCrewListener

__all__ = ["INSTRUMENTOR", "CrewAIInstrumentor", "LightningCrewListener", "instrument", "uninstrument"]


def instrument() -> None:
    """Record every CrewAI crew, agent and flow run of this process (idempotent)."""
    INSTRUMENTOR.instrument()


def uninstrument() -> None:
    """Stop recording and restore CrewAI as it was (idempotent)."""
    INSTRUMENTOR.uninstrument()


def __getattr__(name: str) -> Any:
    # The listener class needs crewai; import it only when asked for.
    if name == "LightningCrewListener":
        from .listener import LightningCrewListener

        return LightningCrewListener
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
