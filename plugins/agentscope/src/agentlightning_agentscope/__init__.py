"""AgentScope adapter for Agent Lightning.

Zero code change: install this package; a runner turns the adapter on when it starts (unless
``AGL_DISABLE_INSTRUMENTORS=agentscope``). Outside a runner, one line does it::

    import agentlightning_agentscope

    agentlightning_agentscope.instrument()   # every AgentScope agent of the process

Every ``Agent`` (AgentScope 2.x) gets the adapter's middleware, including agents built before
``instrument()``, without any change to how it is constructed. Replies (as ``gen_ai.agent.name``: the
agent's name, so ``agent_match`` selects agents), model calls (streamed or not: the OpenAI wire request,
response, usage, provider response id) and tool calls (arguments, result, errors, call id) become
spans of the running rollout. Inside a rollout, a tool call that would wait for a permission answer
(AgentScope asks by default) is recorded as an error and denied, so the agent goes on instead of
parking the rollout. This module imports without AgentScope installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instrumentor import INSTRUMENTOR, AgentScopeInstrumentor

if TYPE_CHECKING:
    from .middleware import LightningMiddleware

__all__ = ["INSTRUMENTOR", "AgentScopeInstrumentor", "LightningMiddleware", "instrument", "uninstrument"]


def instrument() -> None:
    """Record every AgentScope agent of this process (idempotent)."""
    INSTRUMENTOR.instrument()


def uninstrument() -> None:
    """Stop recording and restore AgentScope as it was (idempotent)."""
    INSTRUMENTOR.uninstrument()


def __getattr__(name: str) -> Any:
    # The middleware class needs agentscope; import it only when asked for.
    if name == "LightningMiddleware":
        from .middleware import LightningMiddleware

        return LightningMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
