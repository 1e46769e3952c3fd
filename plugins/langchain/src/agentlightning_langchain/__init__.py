"""LangChain and LangGraph adapter for Agent Lightning.

Zero code change: install this package; a runner turns the adapter on when it starts (unless
``AGL_DISABLE_INSTRUMENTORS=langchain``). Outside a runner, one line does it::

    import agentlightning_langchain

    agentlightning_langchain.instrument()                                   # every LangChain run
    graph.invoke(inputs, config={"callbacks": [agentlightning_langchain.handler()]})  # or just this one

Agents, LangGraph nodes (as ``gen_ai.agent.name``, so ``agent_match`` selects nodes), LLM calls
(request, response, model, parameters, usage, provider response id) and tool calls (arguments,
result, errors) become spans of the running rollout. Token ids come from the LLM proxy, joined by
the provider response id. This module imports without LangChain installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .instrumentor import INSTRUMENTOR, LangChainInstrumentor

if TYPE_CHECKING:
    from .callback import LightningCallbackHandler

__all__ = [
    "INSTRUMENTOR",
    "LangChainInstrumentor",
    "LightningCallbackHandler",
    "configure",
    "handler",
    "instrument",
    "uninstrument",
]


def instrument() -> None:
    """Record every LangChain / LangGraph run of this process (idempotent)."""
    INSTRUMENTOR.instrument()


def uninstrument() -> None:
    """Stop recording and restore LangChain as it was (idempotent)."""
    INSTRUMENTOR.uninstrument()


def handler() -> "LightningCallbackHandler":
    """The callback handler, for ``config={"callbacks": [handler()]}``; needs langchain-core.

    It is the same instance :func:`instrument` registers, so using both never records a run twice.
    """
    return INSTRUMENTOR.handler()


def configure(*, node_spans: bool = False) -> None:
    """Tune what the handler records; needs langchain-core.

    ``node_spans=True`` adds a span per LangGraph node (``invoke_agent <node>``), for a trace that
    shows the graph's steps as a tree. Off by default: LLM and tool spans carry their node as
    ``gen_ai.agent.name`` and ``agentlightning.step.*`` anyway, and node spans double the tracing
    overhead per LLM call (see ``bench/adapter_overhead.py``).
    """
    handler().node_spans = node_spans


def __getattr__(name: str) -> Any:
    # The handler class needs langchain-core; import it only when asked for.
    if name == "LightningCallbackHandler":
        from .callback import LightningCallbackHandler

        return LightningCallbackHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
