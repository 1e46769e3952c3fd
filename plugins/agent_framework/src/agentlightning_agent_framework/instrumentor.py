"""The Microsoft Agent Framework instrumentor: adds the adapter's middleware to every agent and chat client.

Importable without Agent Framework; the framework is imported in :meth:`AgentFrameworkInstrumentor._instrument`.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from agentlightning.instrumentation import FrameworkNotAvailableError, FrameworkRequirement, Instrumentor

if TYPE_CHECKING:
    from .middleware import AgentFrameworkRecorder

__all__ = ["INSTRUMENTOR", "AgentFrameworkInstrumentor"]


class AgentFrameworkInstrumentor(Instrumentor):
    """Records every Agent Framework agent run, LLM call and tool call of the process.

    Agent Framework takes middleware per agent or per run and has no global registry, so
    ``instrument()`` adds the adapter's agent middleware first to every agent's pipeline and its chat
    middleware last to every chat client's pipeline (where the pipelines are assembled), and wraps
    ``FunctionTool.invoke``. The framework's own OpenTelemetry spans are left as they are: they go to
    the global TracerProvider, a user's included, which the tracer feeds into the running rollout.
    ``uninstrument()`` restores all three.
    """

    name = "agent_framework"
    requirements = (FrameworkRequirement("agent-framework-core", minimum="1.23", module="agent_framework"),)

    def __init__(self) -> None:
        super().__init__()
        self._recorder: Optional[AgentFrameworkRecorder] = None
        self._recorder_lock = threading.Lock()

    def recorder(self) -> AgentFrameworkRecorder:
        """The process-wide recorder (created on first use; needs Agent Framework)."""
        with self._recorder_lock:
            if self._recorder is None:
                problems = self.missing_requirements()
                if problems:
                    raise FrameworkNotAvailableError(self.name, problems)
                from .middleware import AgentFrameworkRecorder

                self._recorder = AgentFrameworkRecorder()
            return self._recorder

    def _instrument(self) -> None:
        from agent_framework import AgentMiddlewareLayer, ChatMiddlewareLayer, FunctionTool

        recorder = self.recorder()
        self.patch(
            AgentMiddlewareLayer,
            "_get_agent_middleware_pipeline",
            _with_middleware(
                AgentMiddlewareLayer._get_agent_middleware_pipeline, recorder.agent_middleware, first=True
            ),
        )
        self.patch(
            ChatMiddlewareLayer,
            "_get_chat_middleware_pipeline",
            _with_middleware(ChatMiddlewareLayer._get_chat_middleware_pipeline, recorder.chat_middleware, first=False),
        )
        self.patch(FunctionTool, "invoke", recorder.wrap_invoke(FunctionTool.invoke))
        recorder.active = True

    def _uninstrument(self) -> None:
        self.recorder().active = False


def _with_middleware(original: Callable[..., Any], middleware: Any, *, first: bool) -> Callable[..., Any]:
    """A pipeline builder that adds ``middleware`` first (outermost) or last (innermost) to what it is given."""

    @functools.wraps(original)
    def build_pipeline(layer: Any, given: Any) -> Any:
        others: List[Any] = [m for m in given if m is not middleware]
        return original(layer, [middleware, *others] if first else [*others, middleware])

    return build_pipeline


INSTRUMENTOR = AgentFrameworkInstrumentor()
"""The instrumentor the plugin registers; ``agentlightning_agent_framework.instrument()`` turns it on."""
