"""Turn a plain function into a :class:`LitAgent`: ``@rollout``, ``@llm_rollout``, ``@prompt_rollout``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar, Union, overload

from agentlightning.types import LLM, AttemptedRollout, NamedResources, PromptTemplate, ProxyLLM, Rollout

from .litagent import LitAgent

__all__ = ["FunctionalLitAgent", "rollout", "llm_rollout", "prompt_rollout"]

F = TypeVar("F", bound=Callable[..., Any])


def _pick(resources: NamedResources, kind: type, what: str, name: str) -> Any:
    """The resource the function asks for: the one keyed like its parameter, else the only one of its type."""
    if isinstance(resources.get(name), kind):
        return resources[name]
    matches = [r for r in resources.values() if isinstance(r, kind)]
    if not matches:
        raise ValueError(f"the rollout needs an {what} resource but the resources hold none: {sorted(resources)}")
    if len(matches) > 1:
        names = sorted(k for k, r in resources.items() if isinstance(r, kind))
        raise ValueError(
            f"the resources hold several {what} resources {names}; publish the one this agent should use "
            f"under the name {name!r}"
        )
    return matches[0]


class FunctionalLitAgent(LitAgent[Any]):
    """A :class:`LitAgent` around ``func(task, llm|prompt_template[, rollout])``. Still callable as ``func``."""

    def __init__(self, rollout_func: Callable[..., Any], *, strip_proxy: bool = True) -> None:
        super().__init__()
        self._func = rollout_func
        self._strip_proxy = strip_proxy
        self._is_coroutine = inspect.iscoroutinefunction(rollout_func)
        params = list(inspect.signature(rollout_func).parameters)
        self._wants_llm = "llm" in params
        self._wants_prompt = "prompt_template" in params
        self._wants_rollout = "rollout" in params
        functools.update_wrapper(self, rollout_func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)

    def is_async(self) -> bool:
        return self._is_coroutine

    def _kwargs(self, resources: NamedResources, rollout: Rollout) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self._wants_llm:
            llm = _pick(resources, LLM, "LLM", "llm")
            if isinstance(llm, ProxyLLM) and self._strip_proxy:
                if not isinstance(rollout, AttemptedRollout):
                    raise ValueError("a ProxyLLM can only be resolved for an AttemptedRollout")
                llm = llm.with_attempted_rollout(rollout)
            kwargs["llm"] = llm
        if self._wants_prompt:
            kwargs["prompt_template"] = _pick(resources, PromptTemplate, "PromptTemplate", "prompt_template")
        if self._wants_rollout:
            kwargs["rollout"] = rollout
        return kwargs

    def rollout(self, task: Any, resources: NamedResources, rollout: Rollout) -> Any:
        if self._is_coroutine:
            raise RuntimeError(f"{self._func.__name__} is async; the runner must call rollout_async")
        return self._func(task, **self._kwargs(resources, rollout))

    async def rollout_async(self, task: Any, resources: NamedResources, rollout: Rollout) -> Any:
        if not self._is_coroutine:
            raise RuntimeError(f"{self._func.__name__} is sync; the runner must call rollout")
        return await self._func(task, **self._kwargs(resources, rollout))


def _check_signature(func: Callable[..., Any], second: str) -> None:
    params = list(inspect.signature(func).parameters)
    if len(params) < 2 or params[0] != "task" or params[1] != second:
        raise TypeError(
            f"{getattr(func, '__name__', func)!r} must take (task, {second}[, rollout]); its parameters are {params}"
        )
    extra = [p for p in params[2:] if p != "rollout"]
    if extra:
        raise TypeError(
            f"{getattr(func, '__name__', func)!r}: unexpected parameters {extra}; only 'rollout' may follow"
        )


@overload
def llm_rollout(func: F) -> FunctionalLitAgent: ...
@overload
def llm_rollout(*, strip_proxy: bool = True) -> Callable[[F], FunctionalLitAgent]: ...
def llm_rollout(
    func: Optional[F] = None, *, strip_proxy: bool = True
) -> Union[FunctionalLitAgent, Callable[[F], FunctionalLitAgent]]:
    """``def agent(task, llm[, rollout])`` -> :class:`FunctionalLitAgent`."""

    def wrap(f: F) -> FunctionalLitAgent:
        _check_signature(f, "llm")
        return FunctionalLitAgent(f, strip_proxy=strip_proxy)

    return wrap(func) if func is not None else wrap


@overload
def prompt_rollout(func: F) -> FunctionalLitAgent: ...
@overload
def prompt_rollout() -> Callable[[F], FunctionalLitAgent]: ...
def prompt_rollout(func: Optional[F] = None) -> Union[FunctionalLitAgent, Callable[[F], FunctionalLitAgent]]:
    """``def agent(task, prompt_template[, rollout])`` -> :class:`FunctionalLitAgent`."""

    def wrap(f: F) -> FunctionalLitAgent:
        _check_signature(f, "prompt_template")
        return FunctionalLitAgent(f)

    return wrap(func) if func is not None else wrap


@overload
def rollout(func: F) -> FunctionalLitAgent: ...
@overload
def rollout(*, strip_proxy: bool = True) -> Callable[[F], FunctionalLitAgent]: ...
def rollout(
    func: Optional[F] = None, *, strip_proxy: bool = True
) -> Union[FunctionalLitAgent, Callable[[F], FunctionalLitAgent]]:
    """Accepts ``(task, llm[, rollout])``, ``(task, prompt_template[, rollout])`` or ``(task[, rollout])``."""

    def wrap(f: F) -> FunctionalLitAgent:
        params = list(inspect.signature(f).parameters)
        second = params[1] if len(params) > 1 else None
        if params[:1] == ["task"] and second in ("llm", "prompt_template"):
            _check_signature(f, second)
            return FunctionalLitAgent(f, strip_proxy=strip_proxy)
        if params in (["task"], ["task", "rollout"]):
            return FunctionalLitAgent(f)
        raise NotImplementedError(
            f"@rollout cannot wrap {getattr(f, '__name__', f)!r} with parameters {params}; accepted shapes: "
            "(task, llm[, rollout]), (task, prompt_template[, rollout]) and (task[, rollout])"
        )

    return wrap(func) if func is not None else wrap
