"""``@algo``: a function as an :class:`Algorithm`, receiving only the arguments it names."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Awaitable, Callable, Optional, Union

from agentlightning.types import Dataset

from .base import Algorithm

__all__ = ["algo", "FunctionalAlgorithm"]

_INJECTABLE = ("store", "adapter", "llm_proxy", "initial_resources", "train_dataset", "val_dataset")


class FunctionalAlgorithm(Algorithm):
    """Wraps ``func``; calls it with the subset of store/adapter/llm_proxy/initial_resources/datasets it declares."""

    def __init__(self, func: Callable[..., Any]) -> None:
        super().__init__()
        self._func = func
        params = inspect.signature(func).parameters
        unknown = [
            name
            for name, p in params.items()
            if name not in _INJECTABLE
            and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if unknown:
            raise TypeError(
                f"@algo function {func.__name__!r} has parameters the trainer cannot supply: {unknown}; "
                f"it may take any of {', '.join(_INJECTABLE)}"
            )
        self._wanted = [name for name in _INJECTABLE if name in params]
        functools.update_wrapper(self, func)

    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self._func)

    def _kwargs(self, train_dataset: Optional[Dataset[Any]], val_dataset: Optional[Dataset[Any]]) -> dict[str, Any]:
        for name, value in (("train_dataset", train_dataset), ("val_dataset", val_dataset)):
            if value is not None and name not in self._wanted:
                raise TypeError(f"@algo function {self._func.__name__!r} does not accept {name}, but one was given")
        available = {
            "store": lambda: self.get_store(),
            "adapter": lambda: self._adapter_ref() if self._adapter_ref is not None else None,
            "llm_proxy": self.get_llm_proxy,
            "initial_resources": self.get_initial_resources,
            "train_dataset": lambda: train_dataset,
            "val_dataset": lambda: val_dataset,
        }
        return {name: available[name]() for name in self._wanted}

    def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> Union[None, Awaitable[None]]:
        return self._func(**self._kwargs(train_dataset, val_dataset))  # type: ignore[no-any-return]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)


def algo(func: Callable[..., Any]) -> FunctionalAlgorithm:
    """``@algo async def my_algo(store, train_dataset): ...``"""
    return FunctionalAlgorithm(func)
