"""OpenAI-compatible LLM proxy that records every call with exact token ids (``agl proxy``)."""

from agentlightning.proxy.server import AGENT_NAME_HEADER, CallTokenizer, LLMProxy, ProxyBackend, ProxyStats

__all__ = ["AGENT_NAME_HEADER", "CallTokenizer", "LLMProxy", "ProxyBackend", "ProxyStats"]
