"""The AgentScope instrumentor: adds the adapter's middleware to every AgentScope agent.

Importable without AgentScope; the framework is imported in :meth:`AgentScopeInstrumentor._instrument`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from agentlightning.instrumentation import FrameworkNotAvailableError, FrameworkRequirement, Instrumentor

if TYPE_CHECKING:
    from .middleware import LightningMiddleware

__all__ = ["INSTRUMENTOR", "MIDDLEWARE_LISTS", "AgentScopeInstrumentor"]

MIDDLEWARE_LISTS: Tuple[str, ...] = (
    "_reply_middlewares",
    "_model_call_middlewares",
    "_acting_middlewares",
    "_check_permission_middlewares",
)
"""The per-hook middleware lists ``Agent.__init__`` builds, for the hooks the adapter implements."""


class _WithLightning:
    """A data descriptor on ``Agent`` for one of its per-hook middleware lists.

    AgentScope has no global middleware registry: ``Agent.__init__`` sorts the ``middlewares`` it is
    given into one list per hook, once. This descriptor keeps the agent's own list where ``__init__``
    put it (the instance's ``__dict__``) and reads it back with the adapter's middleware appended
    (innermost, so it sees what the model and tools really got). Agents built before ``instrument()``
    get it too, and removing the descriptor leaves every agent exactly as it was built.
    """

    def __init__(self, attribute: str, middleware: Any) -> None:
        self.attribute = attribute
        self.middleware = middleware

    def __get__(self, agent: Any, owner: Optional[type] = None) -> Any:
        if agent is None:
            return self
        own: List[Any] = agent.__dict__.get(self.attribute, [])
        if any(isinstance(middleware, type(self.middleware)) for middleware in own):
            return own  # the agent was given the middleware by hand: record its calls once
        return [*own, self.middleware]

    def __set__(self, agent: Any, value: Any) -> None:
        agent.__dict__[self.attribute] = value

    def __delete__(self, agent: Any) -> None:
        agent.__dict__.pop(self.attribute, None)


class AgentScopeInstrumentor(Instrumentor):
    """Gives every AgentScope ``Agent`` one :class:`~agentlightning_agentscope.middleware.LightningMiddleware`.

    ``instrument()`` installs :class:`_WithLightning` descriptors on ``agentscope.agent.Agent`` for the
    reply, model call, acting and permission-check hooks; ``uninstrument()`` removes them.
    """

    name = "agentscope"
    requirements = (FrameworkRequirement("agentscope", minimum="2.0.10"),)

    def __init__(self) -> None:
        super().__init__()
        self._middleware: Optional[LightningMiddleware] = None
        self._middleware_lock = threading.Lock()
        self._installed: Dict[str, Any] = {}

    def middleware(self) -> LightningMiddleware:
        """The process-wide middleware (created on first use; needs agentscope)."""
        with self._middleware_lock:
            if self._middleware is None:
                problems = self.missing_requirements()
                if problems:
                    raise FrameworkNotAvailableError(self.name, problems)
                from .middleware import LightningMiddleware

                self._middleware = LightningMiddleware()
            return self._middleware

    def _instrument(self) -> None:
        from agentscope.agent import Agent

        middleware = self.middleware()
        for attribute in MIDDLEWARE_LISTS:
            if attribute in vars(Agent):  # someone else's class attribute: not ours to shadow
                raise RuntimeError(f"agentscope.agent.Agent.{attribute} is already defined on the class")
        for attribute in MIDDLEWARE_LISTS:
            setattr(Agent, attribute, _WithLightning(attribute, middleware))
            self._installed[attribute] = Agent

    def _uninstrument(self) -> None:
        while self._installed:
            attribute, owner = self._installed.popitem()
            if isinstance(vars(owner).get(attribute), _WithLightning):
                delattr(owner, attribute)


INSTRUMENTOR = AgentScopeInstrumentor()
"""The instrumentor the plugin registers; ``agentlightning_agentscope.instrument()`` turns it on."""
