"""Test utilities for Agent Lightning and its adapters.

``agentlightning_testing.fake_openai`` (a local OpenAI-compatible server) needs only core dependencies.
``agentlightning_testing.conformance`` (the shared adapter test classes) imports pytest, so it is not
imported here.
"""

from .fake_openai import BAD_MODEL, DEFAULT_TEXT, FakeOpenAIServer, FakeReply, FakeToolCall, ReceivedRequest

__all__ = ["BAD_MODEL", "DEFAULT_TEXT", "FakeOpenAIServer", "FakeReply", "FakeToolCall", "ReceivedRequest"]
