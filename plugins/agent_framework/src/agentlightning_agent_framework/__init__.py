"""Microsoft Agent Framework adapter for Agent Lightning.

Zero code change: install this package; a runner turns the adapter on when it starts (unless
``AGL_DISABLE_INSTRUMENTORS=agent_framework``). Outside a runner, one line does it::

    import agentlightning_agent_framework

    agentlightning_agent_framework.instrument()

Agent runs (``gen_ai.agent.name``, so ``agent_match`` selects agents), LLM calls of any chat client
(request in the OpenAI chat format, response, model, usage, provider response id; streamed or not,
chat completions or the Responses API) and tool calls (arguments, call id, result, errors) become
spans of the running rollout, recorded by middleware the adapter adds to every agent and chat
client. Agent Framework's own OpenTelemetry spans nest under them. Token ids come from the LLM
proxy, joined by the provider response id. This module imports without Agent Framework.
"""

from __future__ import annotations

from .instrumentor import INSTRUMENTOR, AgentFrameworkInstrumentor

__all__ = ["INSTRUMENTOR", "AgentFrameworkInstrumentor", "instrument", "uninstrument"]


def instrument() -> None:
    """Record every Agent Framework agent, LLM call and tool call of this process (idempotent)."""
    INSTRUMENTOR.instrument()


def uninstrument() -> None:
    """Stop recording and restore Agent Framework as it was (idempotent)."""
    INSTRUMENTOR.uninstrument()
