"""Serving backends: a model server an algorithm starts, feeds new weights, and puts behind the proxy.
Plugins register factories through ``agl_register_serving_backends``; core implements none."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Callable, Protocol, Union, runtime_checkable

__all__ = ["ServingBackend", "ServingBackendFactory", "WeightsSource", "start_serving_backend"]

WeightsSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]
"""A checkpoint folder (Hugging Face / PEFT ``save_pretrained`` layout) or an in-memory state dict."""


@runtime_checkable
class ServingBackend(Protocol):
    """A running, OpenAI-compatible model server whose weights can change while it serves.

    Return contract: the factory returns it started and ready (``base_url`` answers); :meth:`close`
    stops it and is idempotent. Weight updates apply between two requests' decoding steps, never in
    the middle of one, and return the new :attr:`weights_version` (strictly increasing).
    """

    @property
    def base_url(self) -> str:
        """The OpenAI API root, ending in ``/v1``: what the LLM proxy forwards to."""
        ...

    @property
    def model_name(self) -> str:
        """The model name requests must send (and ``/v1/models`` lists)."""
        ...

    @property
    def weights_version(self) -> int:
        """How many weight or adapter updates it has applied (0 after start)."""
        ...

    @property
    def accepts_state_dicts(self) -> bool:
        """True when :meth:`load_weights`/:meth:`load_lora` take in-memory state dicts, not only folders."""
        ...

    def load_weights(self, source: WeightsSource) -> int:
        """Serve new full weights (same architecture); returns the new :attr:`weights_version`."""
        ...

    def load_lora(self, source: WeightsSource, config: Any = None) -> int:
        """Serve a LoRA adapter over the base weights, replacing the previous one.

        ``config`` is the adapter's ``peft.LoraConfig`` when ``source`` is a state dict (a folder
        holds its own). Returns the new :attr:`weights_version`.
        """
        ...

    def request_extras(self) -> dict[str, Any]:
        """Fields the proxy adds to every request so the server returns token ids and logprobs."""
        ...

    def close(self) -> None:
        """Stop the server and free what it holds."""
        ...


ServingBackendFactory = Callable[..., ServingBackend]
"""``factory(model, *, served_model_name=None, **options) -> ServingBackend`` (started and ready)."""


def start_serving_backend(name: str, model: str, **options: Any) -> ServingBackend:
    """Start the serving backend registered as ``name`` for ``model``.

    Raises :class:`~agentlightning.plugins.UnknownComponentError` when no installed plugin registers
    ``name`` (the message lists the known backends), and ``TypeError`` when the factory returns
    something that is not a :class:`ServingBackend`.
    """
    from agentlightning.plugins import resolve

    factory: ServingBackendFactory = resolve("serving_backends", name)
    backend = factory(model, **options)
    if not isinstance(backend, ServingBackend):
        raise TypeError(f"serving backend {name!r} returned {type(backend).__name__}, not a ServingBackend")
    return backend
