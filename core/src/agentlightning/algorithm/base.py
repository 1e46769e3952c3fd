"""``Algorithm``: the learning side. It talks to the store; runners do the rollouts."""

from __future__ import annotations

import inspect
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Optional, Union

from agentlightning.types import Dataset, NamedResources

if TYPE_CHECKING:
    from agentlightning.adapter import Adapter
    from agentlightning.proxy import LLMProxy
    from agentlightning.store.base import LightningStore
    from agentlightning.trainer import Trainer

__all__ = ["Algorithm", "FastAlgorithm"]


class Algorithm:
    """Subclass and implement :meth:`run` (sync or ``async``).

    The Trainer hands the algorithm its store, adapter, initial resources and (optionally) an LLM
    proxy before calling ``run(train_dataset, val_dataset)``. An algorithm uses the adapter and proxy
    it was given (:meth:`get_adapter`, :meth:`get_llm_proxy`) and documents its default when none was.
    """

    def __init__(self) -> None:
        self._trainer_ref: Optional[weakref.ref["Trainer"]] = None
        self._llm_proxy_ref: Optional[weakref.ref["LLMProxy"]] = None
        self._adapter_ref: Optional[weakref.ref["Adapter[Any, Any]"]] = None
        self._store: Optional["LightningStore"] = None
        self._initial_resources: Optional[NamedResources] = None

    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.run)

    def set_trainer(self, trainer: "Trainer") -> None:
        self._trainer_ref = weakref.ref(trainer)

    def get_trainer(self) -> "Trainer":
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is None:
            raise ValueError("this algorithm is not attached to a Trainer")
        return trainer

    def set_llm_proxy(self, llm_proxy: Optional["LLMProxy"]) -> None:
        self._llm_proxy_ref = weakref.ref(llm_proxy) if llm_proxy is not None else None

    def get_llm_proxy(self) -> Optional["LLMProxy"]:
        return self._llm_proxy_ref() if self._llm_proxy_ref is not None else None

    def set_adapter(self, adapter: "Adapter[Any, Any]") -> None:
        self._adapter_ref = weakref.ref(adapter) if adapter is not None else None

    def get_adapter(self) -> "Adapter[Any, Any]":
        adapter = self._adapter_ref() if self._adapter_ref is not None else None
        if adapter is None:
            raise ValueError("no adapter was set on this algorithm")
        return adapter

    def set_store(self, store: "LightningStore") -> None:
        self._store = store

    def get_store(self) -> "LightningStore":
        if self._store is None:
            raise ValueError("no store was set on this algorithm")
        return self._store

    def set_initial_resources(self, resources: Optional[NamedResources]) -> None:
        self._initial_resources = resources

    def get_initial_resources(self) -> Optional[NamedResources]:
        return self._initial_resources

    def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> Union[None, Awaitable[None]]:
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def __call__(self, *args: Any, **kwargs: Any) -> Union[None, Awaitable[None]]:
        return self.run(*args, **kwargs)


class FastAlgorithm(Algorithm):
    """An algorithm cheap enough for ``Trainer.dev``: no model training, quick feedback."""
