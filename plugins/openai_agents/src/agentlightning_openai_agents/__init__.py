"""OpenAI Agents SDK adapter for Agent Lightning.

Zero code change: install this package; a runner turns the adapter on when it starts (unless
``AGL_DISABLE_INSTRUMENTORS=openai_agents``). Outside a runner, one line does it::

    import agentlightning_openai_agents

    agentlightning_openai_agents.instrument()

Agents (``gen_ai.agent.name``, so ``agent_match`` selects them, handoffs included), LLM calls of
chat-completions and Responses API models (request, response, model, usage, provider response id),
tool calls (arguments, result, call id, errors), handoffs and guardrails become spans of the running
rollout, for ``Runner.run``, ``Runner.run_sync`` and ``Runner.run_streamed`` alike. While it records,
the SDK's own export to OpenAI is off. Token ids come from the LLM proxy, joined by the provider
response id. This module imports without the SDK installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instrumentor import INSTRUMENTOR, OpenAIAgentsInstrumentor

if TYPE_CHECKING:
    from .processor import LightningTracingProcessor

__all__ = [
    "INSTRUMENTOR",
    "LightningTracingProcessor",
    "OpenAIAgentsInstrumentor",
    "instrument",
    "tracing_processor",
    "uninstrument",
]


def instrument() -> None:
    """Record every Agents SDK run of this process (idempotent); the SDK's OpenAI export is off meanwhile."""
    INSTRUMENTOR.instrument()


def uninstrument() -> None:
    """Stop recording and restore the SDK's trace processors as they were (idempotent)."""
    INSTRUMENTOR.uninstrument()


def tracing_processor() -> "LightningTracingProcessor":
    """The tracing processor :func:`instrument` installs (needs openai-agents)."""
    return INSTRUMENTOR.processor()


def __getattr__(name: str) -> Any:
    # The processor class needs the SDK; import it only when asked for.
    if name == "LightningTracingProcessor":
        from .processor import LightningTracingProcessor

        return LightningTracingProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
