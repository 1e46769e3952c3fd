"""The optimizer LLM (any OpenAI-compatible endpoint) and the run's budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Budget", "BudgetExhausted", "OptimizerEndpoint", "OptimizerEndpointError", "OptimizerLLM"]


@dataclass(frozen=True)
class OptimizerEndpoint:
    """Where the optimizer LLM answers: an OpenAI API root (``.../v1``), a key and a model name."""

    base_url: str
    model: str
    api_key: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"the optimizer base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("the optimizer endpoint needs a model name")


class OptimizerEndpointError(RuntimeError):
    """The optimizer endpoint could not be reached or refused a call: the run stops, the store keeps its work."""


class BudgetExhausted(Exception):
    """The next step would go over a budget; the run ends cleanly with the best prompts so far."""


@dataclass
class Budget:
    """Maximum rollouts, optimizer calls and optimizer tokens of a run (``None``: no limit), and what is used.

    A batch of rollouts is enqueued only when it fits whole, so every score compares like with like;
    an optimizer call is made only while calls and tokens are under their limits (its own tokens may
    pass the token limit: they are known only once it answers).
    """

    max_rollouts: Optional[int] = None
    max_optimizer_calls: Optional[int] = None
    max_tokens: Optional[int] = None
    rollouts: int = 0
    optimizer_calls: int = 0
    tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("max_rollouts", "max_optimizer_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")

    def reserve_rollouts(self, count: int) -> None:
        if self.max_rollouts is not None and self.rollouts + count > self.max_rollouts:
            raise BudgetExhausted(
                f"rollout budget: {self.rollouts} used, the next batch needs {count}, limit {self.max_rollouts}"
            )
        self.rollouts += count

    def reserve_call(self) -> None:
        if self.max_optimizer_calls is not None and self.optimizer_calls >= self.max_optimizer_calls:
            raise BudgetExhausted(f"optimizer call budget: {self.optimizer_calls} calls made, limit reached")
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            raise BudgetExhausted(f"optimizer token budget: {self.tokens} tokens used, limit {self.max_tokens}")
        self.optimizer_calls += 1

    def as_dict(self) -> Dict[str, Any]:
        return {
            "rollouts": self.rollouts,
            "optimizer_calls": self.optimizer_calls,
            "tokens": self.tokens,
            "max_rollouts": self.max_rollouts,
            "max_optimizer_calls": self.max_optimizer_calls,
            "max_tokens": self.max_tokens,
        }


class OptimizerLLM:
    """Chat completions against an :class:`OptimizerEndpoint`; each call returns ``(text, tokens)``."""

    def __init__(
        self, endpoint: OptimizerEndpoint, *, temperature: float, max_tokens: int, timeout: float = 600.0
    ) -> None:
        from openai import AsyncOpenAI

        self.endpoint = endpoint
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        # One retry: an endpoint that is down should stop the run quickly, not after minutes of back-off.
        self._client = AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key or "unused", max_retries=1, timeout=timeout
        )

    async def complete(self, messages: List[Dict[str, str]]) -> Tuple[str, int]:
        import openai

        where = f"{self.endpoint.base_url} (model {self.endpoint.model!r})"
        try:
            response = await self._client.chat.completions.create(
                model=self.endpoint.model,
                messages=messages,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except openai.APITimeoutError as exc:  # a subclass of APIConnectionError: test it first
            raise OptimizerEndpointError(
                f"the optimizer endpoint {where} did not answer within {self.timeout:g} s (twice); "
                "a slower endpoint needs a larger optimizer_timeout"
            ) from exc
        except openai.APIConnectionError as exc:
            raise OptimizerEndpointError(f"the optimizer endpoint {where} is unreachable: {exc}") from exc
        except openai.APIStatusError as exc:
            raise OptimizerEndpointError(
                f"the optimizer endpoint {where} answered HTTP {exc.status_code}: {exc.message}"
            ) from exc
        text = response.choices[0].message.content if response.choices else None
        usage = response.usage
        tokens = (
            usage.total_tokens
            if usage is not None
            else (sum(len(m["content"]) for m in messages) + len(text or "")) // 4
        )
        return text or "", int(tokens)

    async def close(self) -> None:
        await self._client.close()
