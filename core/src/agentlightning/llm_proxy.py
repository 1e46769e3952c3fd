"""0.3 module path of the LLM proxy (which lives in :mod:`agentlightning.proxy`), and 0.3's
LiteLLM-style model list: ``LLMProxy(model_list=[{"model_name": ..., "litellm_params": {...}}], store=...)``.

Only OpenAI-compatible backends can be named this way: ``hosted_vllm/<model>`` (a vLLM server at
``api_base``; the proxy asks it for token ids) and ``openai/<model>`` (``api_base`` defaults to
OpenAI's API, the key to ``OPENAI_API_KEY``). LiteLLM itself is not used.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, TypedDict

from agentlightning.proxy import LLMProxy, ProxyBackend

__all__ = ["LLMProxy", "ModelConfig", "ProxyBackend", "backends_from_model_list"]

OPENAI_API_BASE = "https://api.openai.com/v1"


class ModelConfig(TypedDict):
    """One entry of a 0.3 model list: the name clients ask for, and where LiteLLM would send it."""

    model_name: str
    litellm_params: Dict[str, Any]


def _secret(value: Optional[str]) -> Optional[str]:
    """LiteLLM's ``os.environ/NAME`` indirection, resolved now."""
    if value and value.startswith("os.environ/"):
        return os.environ.get(value.split("/", 1)[1])
    return value


def backends_from_model_list(
    model_list: Sequence[Mapping[str, Any]], callbacks: Optional[Sequence[str]] = None
) -> List[ProxyBackend]:
    """The proxy backends that serve a 0.3 model list (``callbacks``: 0.3's ``return_token_ids`` and
    ``logprobs`` ask backends for those; ``None`` means 0.3's default, ``return_token_ids``)."""
    wanted = {"return_token_ids"} if callbacks is None else set(callbacks)
    backends: List[ProxyBackend] = []
    for entry in model_list:
        try:
            name = str(entry["model_name"])
            params = dict(entry["litellm_params"])
            target = str(params["model"])
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"a model_list entry needs model_name and litellm_params.model, got {entry!r}: missing {exc}"
            ) from None
        provider, _, upstream = target.partition("/")
        api_base = params.get("api_base") or params.get("base_url")
        extras: Dict[str, Any] = {}
        if provider == "hosted_vllm":
            if not api_base:
                raise ValueError(f"model {name!r}: hosted_vllm needs litellm_params.api_base (the vLLM server URL)")
            if "return_token_ids" in wanted:
                extras["return_token_ids"] = True
        elif provider == "openai":
            api_base = api_base or OPENAI_API_BASE
        else:
            raise ValueError(
                f"model {name!r}: {target!r} is not an OpenAI-compatible backend; use hosted_vllm/<model> or "
                "openai/<model> with api_base, or give the proxy ProxyBackend objects"
            )
        if "logprobs" in wanted:
            extras["logprobs"] = True
        api_key = _secret(params.get("api_key")) or (os.environ.get("OPENAI_API_KEY") if provider == "openai" else None)
        backends.append(
            ProxyBackend(
                str(api_base),
                models=[name],
                api_key=api_key,
                request_extras=extras,
                name=f"{name}@{api_base}",
                upstream_model=upstream or name,
            )
        )
    return backends
