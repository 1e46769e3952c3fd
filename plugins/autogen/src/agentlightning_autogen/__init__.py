"""AutoGen (AgentChat 0.7) adapter for Agent Lightning.

Zero code change: install this package; a runner turns the adapter on when it starts (unless
``AGL_DISABLE_INSTRUMENTORS=autogen``). Outside a runner, one line does it::

    import agentlightning_autogen

    agentlightning_autogen.instrument()

Agent turns (``gen_ai.agent.name``, so ``agent_match`` selects agents of a team), LLM calls of the
OpenAI model clients (request as sent, response, model, usage, provider response id; streamed or
not) and tool runs (arguments, call id, result, errors) become spans of the running rollout, for
single agents and for ``RoundRobinGroupChat`` / ``SelectorGroupChat`` teams alike. Token ids come
from the LLM proxy, joined by the provider response id. This module imports without AutoGen.
"""

from __future__ import annotations

from .instrumentor import INSTRUMENTOR, AutoGenInstrumentor

__all__ = ["INSTRUMENTOR", "AutoGenInstrumentor", "instrument", "uninstrument"]


def instrument() -> None:
    """Record every AutoGen agent, model call and tool run of this process (idempotent)."""
    INSTRUMENTOR.instrument()


def uninstrument() -> None:
    """Stop recording and restore AutoGen as it was (idempotent)."""
    INSTRUMENTOR.uninstrument()
