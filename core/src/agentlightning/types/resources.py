"""Resources published by algorithms and consumed by agents (LLM endpoints, prompt templates)."""

from __future__ import annotations

from typing import Annotated, Any, Dict, Literal, Optional, Union

from pydantic import BaseModel, Field

__all__ = [
    "Resource",
    "LLM",
    "ProxyLLM",
    "PromptTemplate",
    "ResourceUnion",
    "NamedResources",
    "ResourcesUpdate",
]


class Resource(BaseModel):
    """Base of every resource; ``resource_type`` is the discriminator."""

    resource_type: Any


class LLM(Resource):
    """An OpenAI-compatible endpoint serving ``model``."""

    resource_type: Literal["llm"] = "llm"
    endpoint: str
    model: str
    api_key: Optional[str] = None
    sampling_parameters: Dict[str, Any] = Field(default_factory=dict)

    def get_base_url(self, *args: Any, **kwargs: Any) -> str:
        return self.endpoint


class ProxyLLM(LLM):
    """An LLM behind the Agent Lightning proxy; each attempt gets its own route."""

    resource_type: Literal["proxy_llm"] = "proxy_llm"  # type: ignore[assignment]

    def get_base_url(self, rollout_id: Optional[str] = None, attempt_id: Optional[str] = None) -> str:
        if rollout_id is None and attempt_id is None:
            return self.endpoint
        if rollout_id is None or attempt_id is None:
            raise ValueError(
                f"rollout_id and attempt_id must be given together (got rollout_id={rollout_id!r}, attempt_id={attempt_id!r})"
            )
        base = self.endpoint.rstrip("/")
        suffix = ""
        if base.endswith("/v1"):
            base, suffix = base[: -len("/v1")], "/v1"
        return f"{base}/rollout/{rollout_id}/attempt/{attempt_id}{suffix}"

    def with_attempted_rollout(self, rollout: Any) -> LLM:
        """A concrete :class:`LLM` whose endpoint is this attempt's route."""
        return LLM(
            endpoint=self.get_base_url(rollout.rollout_id, rollout.attempt.attempt_id),
            model=self.model,
            api_key=self.api_key,
            sampling_parameters=dict(self.sampling_parameters),
        )


class PromptTemplate(Resource):
    """A prompt with placeholders; only the f-string engine is rendered by :meth:`format`."""

    resource_type: Literal["prompt_template"] = "prompt_template"
    template: str
    engine: Literal["jinja", "f-string", "poml"] = "f-string"

    def format(self, **kwargs: Any) -> str:
        if self.engine != "f-string":
            raise NotImplementedError(f"PromptTemplate.format supports engine 'f-string' only, not {self.engine!r}")
        return self.template.format(**kwargs)


ResourceUnion = Annotated[Union[LLM, ProxyLLM, PromptTemplate], Field(discriminator="resource_type")]
NamedResources = Dict[str, ResourceUnion]


class ResourcesUpdate(BaseModel):
    """A versioned set of named resources in the store."""

    resources_id: str
    create_time: float
    update_time: float
    version: int
    resources: NamedResources
