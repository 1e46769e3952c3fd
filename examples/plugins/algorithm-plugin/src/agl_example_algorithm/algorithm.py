"""``PromptSearch``: play each candidate prompt template on the tasks, publish the best one."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from agentlightning.algorithm import Algorithm
from agentlightning.emitter.reward import find_final_reward
from agentlightning.types import Dataset, EnqueueRolloutRequest, PromptTemplate


class PromptSearch(Algorithm):
    """Try every template of ``candidates`` on the training tasks and keep the best mean reward.

    The winning template is published under ``resource_name`` (the name the agent's ``@rollout``
    function takes it by), so the rollouts that follow, validation included, use it. ``scores`` maps
    each template to its mean reward; ``best`` is the winner.
    """

    def __init__(
        self, candidates: Sequence[str], *, resource_name: str = "prompt_template", timeout: float = 120.0
    ) -> None:
        super().__init__()
        if not candidates:
            raise ValueError("PromptSearch needs at least one candidate template")
        self.candidates = list(candidates)
        self.resource_name = resource_name
        self.timeout = timeout
        self.scores: Dict[str, float] = {}
        self.best: Optional[str] = None

    async def _mean_reward(self, template: str, tasks: List[Any], mode: str) -> float:
        store = self.get_store()
        resources = await store.add_resources(
            {self.resource_name: PromptTemplate(template=template, engine="f-string")}
        )
        requests = [EnqueueRolloutRequest(input=task, mode=mode, resources_id=resources.resources_id) for task in tasks]
        rollout_ids = [rollout.rollout_id for rollout in await store.enqueue_many_rollouts(requests)]
        await store.wait_for_rollouts(rollout_ids=rollout_ids, timeout=self.timeout)
        rewards = [find_final_reward(await store.query_spans(rollout_id, "latest")) for rollout_id in rollout_ids]
        return sum(reward or 0.0 for reward in rewards) / len(rewards)

    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        if not train_dataset:
            raise ValueError("PromptSearch needs a non-empty train_dataset")
        tasks = [train_dataset[i] for i in range(len(train_dataset))]
        for template in self.candidates:
            self.scores[template] = await self._mean_reward(template, tasks, "train")
        self.best = max(self.candidates, key=lambda template: self.scores[template])
        if val_dataset:
            validation = [val_dataset[i] for i in range(len(val_dataset))]
            self.scores[f"val:{self.best}"] = await self._mean_reward(self.best, validation, "val")
