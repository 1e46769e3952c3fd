"""``LitAgent``: the unit a runner executes, one rollout at a time."""

from __future__ import annotations

import warnings
import weakref
from typing import TYPE_CHECKING, Any, Dict, Generic, Optional, TypeVar

from agentlightning.types import NamedResources, Rollout, RolloutRawResult

if TYPE_CHECKING:
    from agentlightning.runner import Runner
    from agentlightning.tracer import Tracer
    from agentlightning.trainer import Trainer

__all__ = ["LitAgent"]

T = TypeVar("T")

_ASYNC_METHODS = ("rollout_async", "training_rollout_async", "validation_rollout_async")


class LitAgent(Generic[T]):
    """Subclass and implement :meth:`rollout` (sync) or :meth:`rollout_async`.

    ``task`` is the rollout input, ``resources`` the named resources the rollout was pinned to,
    ``rollout`` the :class:`~agentlightning.AttemptedRollout` being executed. Return a float (the
    final reward), ``None`` (rewards were emitted as spans), or a list of spans.
    """

    def __init__(self, *, trained_agents: Optional[str] = None) -> None:
        if trained_agents is not None:
            warnings.warn(
                "LitAgent(trained_agents=...) is deprecated; select agents with the adapter's agent_match",
                DeprecationWarning,
                stacklevel=2,
            )
        self.trained_agents = trained_agents
        self._trainer_ref: Optional[weakref.ref["Trainer"]] = None
        self._runner_ref: Optional[weakref.ref["Runner[Any]"]] = None

    def __getstate__(self) -> Dict[str, Any]:
        # Pickled to run in another process (spawn, Ray actors): the links stay behind with their objects.
        state = self.__dict__.copy()
        state["_trainer_ref"] = state["_runner_ref"] = None
        return state

    def is_async(self) -> bool:
        """True when a subclass implements one of the ``*_async`` methods."""
        return any(getattr(type(self), name) is not getattr(LitAgent, name) for name in _ASYNC_METHODS)

    # -- links to the trainer and runner (weak, so the agent never keeps them alive) ---------------
    def set_trainer(self, trainer: "Trainer") -> None:
        self._trainer_ref = weakref.ref(trainer)

    def get_trainer(self) -> "Trainer":
        trainer = self._trainer_ref() if self._trainer_ref is not None else None
        if trainer is None:
            raise ValueError("this agent is not attached to a Trainer")
        return trainer

    @property
    def trainer(self) -> "Trainer":
        return self.get_trainer()

    def set_runner(self, runner: "Runner[Any]") -> None:
        self._runner_ref = weakref.ref(runner)

    def get_runner(self) -> "Runner[Any]":
        runner = self._runner_ref() if self._runner_ref is not None else None
        if runner is None:
            raise ValueError("this agent is not attached to a Runner")
        return runner

    @property
    def runner(self) -> "Runner[Any]":
        return self.get_runner()

    def get_tracer(self) -> "Tracer":
        """The tracer of the runner executing this agent, else the trainer's."""
        runner = self._runner_ref() if self._runner_ref is not None else None
        tracer: Optional["Tracer"] = getattr(runner, "tracer", None) if runner is not None else None
        if tracer is not None:
            return tracer
        return self.get_trainer().tracer

    @property
    def tracer(self) -> "Tracer":
        return self.get_tracer()

    # -- the rollout methods ----------------------------------------------------------------------
    def rollout(self, task: T, resources: NamedResources, rollout: Rollout) -> RolloutRawResult:
        raise NotImplementedError(f"{type(self).__name__} implements neither rollout() nor rollout_async()")

    async def rollout_async(self, task: T, resources: NamedResources, rollout: Rollout) -> RolloutRawResult:
        raise NotImplementedError(f"{type(self).__name__} implements neither rollout() nor rollout_async()")

    def training_rollout(self, task: T, resources: NamedResources, rollout: Rollout) -> RolloutRawResult:
        return self.rollout(task, resources, rollout)

    def validation_rollout(self, task: T, resources: NamedResources, rollout: Rollout) -> RolloutRawResult:
        return self.rollout(task, resources, rollout)

    async def training_rollout_async(self, task: T, resources: NamedResources, rollout: Rollout) -> RolloutRawResult:
        return await self.rollout_async(task, resources, rollout)

    async def validation_rollout_async(self, task: T, resources: NamedResources, rollout: Rollout) -> RolloutRawResult:
        return await self.rollout_async(task, resources, rollout)
