"""The LangChain instrumentor: registers the callback handler globally through LangChain's configure hook.

Importable without LangChain; the framework is imported in :meth:`LangChainInstrumentor._instrument`.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Optional

from agentlightning.instrumentation import FrameworkNotAvailableError, FrameworkRequirement, Instrumentor

if TYPE_CHECKING:
    from .callback import LightningCallbackHandler

__all__ = ["INSTRUMENTOR", "LangChainInstrumentor"]


class LangChainInstrumentor(Instrumentor):
    """Adds one :class:`~agentlightning_langchain.callback.LightningCallbackHandler` to every LangChain run.

    ``instrument()`` registers a context variable with ``langchain_core``'s ``register_configure_hook``;
    its default value is the handler, so every callback manager LangChain builds (in any thread or
    task, for LangChain agents and LangGraph graphs alike) gets the handler without any change to the
    agent. A context that sets the variable to None opts out. It also keeps the provider's response id
    on streamed ``langchain-openai`` chunks (which otherwise drop it), so streamed calls join the LLM
    proxy's spans too. ``uninstrument()`` removes both.
    """

    name = "langchain"
    requirements = (FrameworkRequirement("langchain-core", minimum="1.7.2", module="langchain_core"),)

    def __init__(self) -> None:
        super().__init__()
        self._handler: Optional[LightningCallbackHandler] = None
        self._handler_lock = threading.Lock()
        self._hook_var: Optional[ContextVar[Any]] = None

    def handler(self) -> LightningCallbackHandler:
        """The process-wide handler (created on first use; needs langchain-core)."""
        with self._handler_lock:
            if self._handler is None:
                problems = self.missing_requirements()
                if problems:
                    raise FrameworkNotAvailableError(self.name, problems)
                from .callback import LightningCallbackHandler

                self._handler = LightningCallbackHandler()
            return self._handler

    @property
    def hook_var(self) -> Optional[ContextVar[Any]]:
        """The context variable registered with LangChain's configure hook (None before the first instrument())."""
        return self._hook_var

    def _instrument(self) -> None:
        from langchain_core.tracers.context import register_configure_hook

        handler = self.handler()
        if self._hook_var is None:
            # One variable for the process, reused across instrument() cycles.
            self._hook_var = ContextVar("agentlightning_langchain_handler", default=handler)
        register_configure_hook(self._hook_var, inheritable=True)
        self._keep_stream_response_ids()

    def _uninstrument(self) -> None:
        from langchain_core.tracers import context as langchain_context

        # langchain-core offers no unregister; its hook list is a plain module-level list.
        hooks = langchain_context._configure_hooks
        hooks[:] = [hook for hook in hooks if hook[0] is not self._hook_var]

    def _keep_stream_response_ids(self) -> None:
        """Copy each streamed chunk's ``id`` (the provider's response id) into its response metadata."""
        if importlib.util.find_spec("langchain_openai") is None:
            return
        try:
            from langchain_openai.chat_models.base import BaseChatOpenAI
        except ImportError:
            return
        convert = getattr(BaseChatOpenAI, "_convert_chunk_to_generation_chunk", None)
        if convert is None:  # a langchain-openai without this step: streams just lack the id
            return

        @functools.wraps(convert)
        def convert_keeping_id(model: Any, chunk: Any, *args: Any, **kwargs: Any) -> Any:
            generation = convert(model, chunk, *args, **kwargs)
            response_id = chunk.get("id") if isinstance(chunk, dict) else None
            message = getattr(generation, "message", None)
            if isinstance(response_id, str) and message is not None:
                # Every chunk carries the same id; LangChain keeps equal ids when it merges chunks.
                message.response_metadata.setdefault("id", response_id)
            return generation

        self.patch(BaseChatOpenAI, "_convert_chunk_to_generation_chunk", convert_keeping_id)


INSTRUMENTOR = LangChainInstrumentor()
"""The instrumentor the plugin registers; ``agentlightning_langchain.instrument()`` turns it on."""
