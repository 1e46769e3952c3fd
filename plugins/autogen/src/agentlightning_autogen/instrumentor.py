"""The AutoGen instrumentor: wraps AgentChat agents, the OpenAI model clients and tools.

Importable without AutoGen; the framework is imported in :meth:`AutoGenInstrumentor._instrument`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from agentlightning.instrumentation import FrameworkNotAvailableError, FrameworkRequirement, Instrumentor

if TYPE_CHECKING:
    from .recorder import AutoGenRecorder, LLMEventFilter

__all__ = ["INSTRUMENTOR", "AutoGenInstrumentor", "agent_classes"]

logger = logging.getLogger(__name__)


def agent_classes() -> List[Any]:
    """AgentChat's agent classes that define their own ``on_messages_stream`` (the turn every run goes through)."""
    from autogen_agentchat import agents

    classes: List[Any] = []
    for name in getattr(agents, "__all__", dir(agents)):
        klass = getattr(agents, name, None)
        if isinstance(klass, type) and "on_messages_stream" in vars(klass):
            classes.append(klass)
    return classes


class AutoGenInstrumentor(Instrumentor):
    """Records every AutoGen AgentChat agent, OpenAI model client call and tool run of the process.

    AutoGen has no global callback registry that carries what training needs (its event logger has
    no LLM errors, no tool call ids and no response id for streams), so ``instrument()`` wraps, in
    place: each AgentChat agent class's ``on_messages_stream``, the OpenAI model client's ``create``,
    ``create_stream`` and the two steps that show the wire request and the stream's chunks, and
    ``BaseTool.run_json``. It also reads the raw chat completion from AutoGen's ``LLMCallEvent``
    through a filter on the ``autogen_core.events`` logger (see
    :class:`~agentlightning_autogen.recorder.LLMEventFilter`). ``uninstrument()`` undoes all of it.
    Agents on model clients other than OpenAI's still get agent and tool spans.
    """

    name = "autogen"
    requirements = (
        FrameworkRequirement("autogen-agentchat", minimum="0.7", module="autogen_agentchat"),
        FrameworkRequirement("autogen-core", minimum="0.7", module="autogen_core"),
    )

    def __init__(self) -> None:
        super().__init__()
        self._recorder: Optional[AutoGenRecorder] = None
        self._recorder_lock = threading.Lock()
        self._event_filter: Optional[LLMEventFilter] = None
        self._saved_level: Optional[int] = None

    def recorder(self) -> AutoGenRecorder:
        """The process-wide recorder (created on first use; needs AutoGen)."""
        with self._recorder_lock:
            if self._recorder is None:
                problems = self.missing_requirements()
                if problems:
                    raise FrameworkNotAvailableError(self.name, problems)
                from .recorder import AutoGenRecorder

                self._recorder = AutoGenRecorder()
            return self._recorder

    def _instrument(self) -> None:
        from autogen_core import EVENT_LOGGER_NAME
        from autogen_core.tools import BaseTool

        from .recorder import LLMEventFilter

        recorder = self.recorder()
        for klass in agent_classes():
            self.patch(klass, "on_messages_stream", recorder.wrap_agent_stream(klass.on_messages_stream))
        self.patch(BaseTool, "run_json", recorder.wrap_run_json(BaseTool.run_json))
        client = _openai_client_class()
        if client is not None:
            targets: List[Tuple[str, Any]] = [
                ("create", recorder.wrap_create),
                ("create_stream", recorder.wrap_create_stream),
                ("_process_create_args", recorder.wrap_process_create_args),
                ("_create_stream_chunks", recorder.wrap_stream_chunks),
                ("_create_stream_chunks_beta_client", recorder.wrap_stream_chunks),
            ]
            for attribute, wrap in targets:
                original = getattr(client, attribute, None)
                if original is None:  # a client without this step: its spans lack what it adds
                    logger.info(
                        "autogen: %s.%s not found; LLM spans will lack what it adds", client.__name__, attribute
                    )
                    continue
                self.patch(client, attribute, wrap(original))
            # The raw completion is logged at INFO: lower the event logger to INFO only if it is above.
            events = logging.getLogger(EVENT_LOGGER_NAME)
            self._saved_level = events.level
            effective = events.getEffectiveLevel()
            self._event_filter = LLMEventFilter(passes_from=effective)
            events.addFilter(self._event_filter)
            if effective > logging.INFO:
                events.setLevel(logging.INFO)
        recorder.active = True

    def _uninstrument(self) -> None:
        from autogen_core import EVENT_LOGGER_NAME

        self.recorder().active = False
        if self._event_filter is not None:
            events = logging.getLogger(EVENT_LOGGER_NAME)
            events.removeFilter(self._event_filter)
            if self._saved_level is not None:
                events.setLevel(self._saved_level)
        self._event_filter = None
        self._saved_level = None


def _openai_client_class() -> Any:
    """AutoGen's OpenAI model client base class, or None where autogen-ext[openai] is missing."""
    try:
        module = importlib.import_module("autogen_ext.models.openai._openai_client")
    except ImportError:
        logger.info("autogen: autogen-ext[openai] is not installed; agent and tool spans only")
        return None
    return getattr(module, "BaseOpenAIChatCompletionClient", None)


INSTRUMENTOR = AutoGenInstrumentor()
"""The instrumentor the plugin registers; ``agentlightning_autogen.instrument()`` turns it on."""
