"""The plugin module (entry point ``agentlightning``): serving backend ``embedded``, ``agl serve-model`` and
the ``huggingface`` tokenizer of the LLM proxy.

Registrations are lazy, so loading the plugin imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentlightning import hookimpl
from agentlightning.hookspecs import AddCommand
from agentlightning.plugins import LazyObject
from agentlightning.serving import ServingBackendFactory

__all__ = ["agl_register_commands", "agl_register_serving_backends", "agl_register_tokenizers"]


@hookimpl
def agl_register_serving_backends(register: Callable[[str, ServingBackendFactory], None]) -> None:
    register("embedded", LazyObject("agentlightning_embedded.backend:start_embedded_backend"))


@hookimpl
def agl_register_commands(register: Callable[[str, AddCommand], None]) -> None:
    register("serve-model", LazyObject("agentlightning_embedded.cli:add_parser"))


@hookimpl
def agl_register_tokenizers(register: Callable[[str, Callable[[str], Any]], None]) -> None:
    register("huggingface", LazyObject("agentlightning_embedded.retokenizer:Retokenizer"))
