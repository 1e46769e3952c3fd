"""The OpenAI Agents SDK instrumentor: installs the tracing processor as the SDK's only exporting processor.

Importable without the SDK; the framework is imported in :meth:`OpenAIAgentsInstrumentor._instrument`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from agentlightning.instrumentation import FrameworkNotAvailableError, FrameworkRequirement, Instrumentor

if TYPE_CHECKING:
    from .processor import LightningTracingProcessor

__all__ = ["INSTRUMENTOR", "OpenAIAgentsInstrumentor"]

logger = logging.getLogger(__name__)


def _registered_processors(provider: Any) -> Optional[Tuple[Any, ...]]:
    """The processors of the SDK's default trace provider; None for a provider that does not show them."""
    multi = getattr(provider, "_multi_processor", None)
    processors = getattr(multi, "_processors", None)
    return tuple(processors) if isinstance(processors, (tuple, list)) else None


def _exports_to_openai(processor: Any) -> bool:
    """The SDK's batch processor around its OpenAI backend exporter (the default one, or one a user added)."""
    from agents.tracing.processors import BackendSpanExporter

    return isinstance(getattr(processor, "_exporter", None), BackendSpanExporter)


class OpenAIAgentsInstrumentor(Instrumentor):
    """Records every Agents SDK run of the process through one :class:`LightningTracingProcessor`.

    ``instrument()`` puts the processor first among the SDK's trace processors and takes out those
    that export to OpenAI's tracing backend, so nothing leaves the machine; other processors a user
    registered keep running. It also wraps the SDK's model and tool calls to learn what the span data
    lacks (see :mod:`agentlightning_openai_agents.hooks`). ``uninstrument()`` puts the processors back
    as they were (keeping any registered meanwhile) and removes the wrappers.
    """

    name = "openai_agents"
    requirements = (FrameworkRequirement("openai-agents", minimum="0.24", module="agents"),)

    def __init__(self) -> None:
        super().__init__()
        self._processor: Optional[LightningTracingProcessor] = None
        self._processor_lock = threading.Lock()
        self._saved_processors: Optional[Tuple[Any, ...]] = None

    def processor(self) -> LightningTracingProcessor:
        """The process-wide tracing processor (created on first use; needs openai-agents)."""
        with self._processor_lock:
            if self._processor is None:
                problems = self.missing_requirements()
                if problems:
                    raise FrameworkNotAvailableError(self.name, problems)
                from .processor import LightningTracingProcessor

                self._processor = LightningTracingProcessor()
            return self._processor

    def _instrument(self) -> None:
        from agents.tracing import get_trace_provider

        processor = self.processor()
        provider = get_trace_provider()
        registered = _registered_processors(provider)
        if registered is None:  # a custom provider: add ours, leave the rest alone
            provider.register_processor(processor)
        else:
            self._saved_processors = registered
            kept = [p for p in registered if p is not processor and not _exports_to_openai(p)]
            if len(kept) < len(registered) - (processor in registered):
                logger.info("openai_agents: the SDK's OpenAI trace export is off while Agent Lightning records")
            provider.set_processors([processor, *kept])
        self._wrap_model_and_tool_calls(processor)
        processor.active = True

    def _uninstrument(self) -> None:
        from agents.tracing import get_trace_provider

        processor = self.processor()
        processor.active = False
        provider = get_trace_provider()
        registered = _registered_processors(provider)
        if registered is not None and self._saved_processors is not None:
            saved = self._saved_processors
            added: List[Any] = [p for p in registered if p is not processor and p not in saved]
            provider.set_processors([*saved, *added])
        self._saved_processors = None

    def _wrap_model_and_tool_calls(self, processor: LightningTracingProcessor) -> None:
        from agents import tool as tool_module
        from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
        from agents.models.openai_responses import OpenAIResponsesModel
        from agents.tool_context import ToolContext

        from .hooks import wrap_fetch_response, wrap_from_agent_context, wrap_tool_failure

        targets: List[Tuple[Any, str, Any]] = [
            (OpenAIChatCompletionsModel, "_fetch_response", wrap_fetch_response),
            (OpenAIResponsesModel, "_fetch_response", wrap_fetch_response),
            (tool_module, "maybe_invoke_function_tool_failure_error_function", wrap_tool_failure),
            (ToolContext, "from_agent_context", wrap_from_agent_context),
        ]
        for owner, attribute, wrap in targets:
            original = getattr(owner, attribute, None)
            if original is None:  # an SDK without this step: its spans just lack what it would add
                logger.info("openai_agents: %s.%s not found; spans will lack what it adds", owner.__name__, attribute)
                continue
            self.patch(owner, attribute, wrap(original, processor))


INSTRUMENTOR = OpenAIAgentsInstrumentor()
"""The instrumentor the plugin registers; ``agentlightning_openai_agents.instrument()`` turns it on."""
