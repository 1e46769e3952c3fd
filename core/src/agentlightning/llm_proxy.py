"""0.3 module path of the LLM proxy; it lives in :mod:`agentlightning.proxy`."""

from agentlightning.proxy import LLMProxy, ProxyBackend

__all__ = ["LLMProxy", "ProxyBackend"]
