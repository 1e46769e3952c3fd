"""APO: textual gradients and beam search over several named prompt templates of one agent.

One run:

1. the seed (the ``PromptTemplate`` resources of ``initial_resources``) is scored on a fixed
   validation batch;
2. each round, each prompt set in the beam (a *parent*) plays a batch of training tasks; for each of
   its ``branch_factor`` branches the optimizer LLM reads the rollouts' messages (``TraceToMessages``)
   and rewards and writes a critique (the *textual gradient*); for each template being optimized (all
   of them with ``mode="joint"``, one per round in turn with ``mode="in_turn"``) it rewrites the
   template to apply the critique: in a call of its own per template (``proposal="critique_then_edit"``)
   or in the critique's reply (``proposal="one_call"``: one call a candidate), or the reply names
   instructions to add at the end of each template (``proposal="append"``: one call a candidate; the
   rest of the template, its answer form and placeholders included, stays as it is). Each rewrite is checked
   (not empty, a prompt, not over-long, the same placeholders); a rejected one is logged with its
   reason and the branch keeps the parent's version; a branch with no accepted rewrite gives no candidate;
3. the candidates are scored on the validation batch, and the best ``beam_width`` of beam +
   candidates form the next beam.

Every rollout of a stage is enqueued at once, so the Trainer's runners play them in parallel;
rollouts are cached by (prompt set, task, mode), so a prompt set is never scored twice on a task.
The run stops cleanly when the next step would pass a budget (``max_rollouts``,
``max_optimizer_calls``, ``max_tokens``) and publishes the best prompts found.

**Kept in the store.** Each run has a journal: a rollout (never queued; ``metadata`` key
``agentlightning.apo``) whose spans record every optimizer call (request key, reply, tokens), every
candidate (prompts, critique, score, outcome) and every round. Evaluation rollouts carry the run id,
prompt key and task key in their metadata. ``resume=True`` (or ``Trainer.fit(resume=True)``) replays
the run from the store: cached rollouts and journaled optimizer replies are reused, so a run killed
midway continues where it stopped without paying twice. The best prompts are published as a new
resources version (the user's ``initial_resources`` with the best templates), written to the run
folder (``apo/``: ``best_prompts.json``, ``candidates.jsonl``, ``rounds.md``, ``scores.png``) and printed.

**Models.** The agent's LLM is the ``agent_llm`` resource (default ``"main_llm"``): an ``LLM`` in
``initial_resources`` is put behind the LLM proxy (the Trainer's, else one of the run's own) so that
every call is recorded; without one, the serving backend ``serving`` (by name, ``"embedded"`` by
default) serves ``agent_model``. The optimizer is any OpenAI-compatible endpoint
(``optimizer={"base_url", "model", "api_key"}``), by default that same served model. An optimizer
endpoint that cannot be reached stops the run with :class:`OptimizerEndpointError` naming it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import logging
import random
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from agentlightning.adapter import Adapter, TraceToMessages
from agentlightning.algorithm.base import Algorithm
from agentlightning.emitter.reward import find_final_reward
from agentlightning.proxy import LLMProxy, ProxyBackend
from agentlightning.serving import ServingBackend, start_serving_backend
from agentlightning.store.base import LightningStore
from agentlightning.types import (
    LLM,
    Dataset,
    EnqueueRolloutRequest,
    NamedResources,
    PromptTemplate,
    ProxyLLM,
    RolloutConfig,
    Span,
)

from .history import rounds_table, write_run_files
from .optimizer import Budget, BudgetExhausted, OptimizerEndpoint, OptimizerEndpointError, OptimizerLLM
from .prompts import (
    APPEND_FIELDS,
    CRITIQUE_FIELDS,
    DEFAULT_APPEND_TEMPLATE,
    DEFAULT_CRITIQUE_TEMPLATE,
    DEFAULT_EDIT_TEMPLATE,
    DEFAULT_ONE_CALL_TEMPLATE,
    EDIT_FIELDS,
    ONE_CALL_FIELDS,
    EditRejected,
    Experiment,
    added_instructions,
    appended_template,
    check_edited_prompt,
    check_instruction_template,
    placeholders,
    render_experiments,
    render_prompts,
    rewritten_templates,
)

__all__ = ["APO", "Candidate", "METADATA_KEY"]

logger = logging.getLogger(__name__)

METADATA_KEY = "agentlightning.apo"
"""The rollout metadata key of APO's journal and evaluation rollouts."""
RECORD_ATTRIBUTE = "agentlightning.apo.record"
AGENT_BACKEND_NAME = "apo-agent"
_TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Candidate:
    """A prompt set: one text per optimized template name, where it came from and how it scored."""

    id: str
    prompts: Dict[str, str]
    round: int
    parent: Optional[str] = None
    edited: List[str] = field(default_factory=list)
    critique: Optional[str] = None
    rejected: Dict[str, str] = field(default_factory=dict)
    score: Optional[float] = None
    outcome: str = ""

    @property
    def key(self) -> str:
        return _digest(self.prompts)


@dataclass
class _Outcome:
    rollout_id: str
    status: str
    reward: Optional[float]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class APO(Algorithm):
    """Automatic prompt optimization of several named ``PromptTemplate`` resources (see the module docs).

    Args:
        optimizer: the optimizer LLM, an :class:`OptimizerEndpoint` or ``{"base_url", "model", "api_key"}``;
            ``None``: the model served by ``serving``.
        prompts: names of the ``PromptTemplate`` resources to optimize (default: every one in
            ``initial_resources``); the others stay as given.
        mode: ``"joint"`` edits every template from each critique; ``"in_turn"`` edits one template
            per round, cycling through them.
        beam_width, branch_factor, rounds: the beam size, the candidates each parent yields per round,
            and the number of rounds.
        gradient_batch_size: training tasks each parent plays in a round; its branches' critiques read them.
        val_batch_size: validation tasks every prompt set is scored on (``None``: all of them).
        max_rollouts, max_optimizer_calls, max_tokens: budgets (``None``: no limit).
        proposal: ``"critique_then_edit"``: a critique call, then an edit call per template;
            ``"one_call"``: one call writes the critique and the rewritten templates (``one_call_template``),
            so a call budget affords more candidates; ``"append"``: one call writes the critique and
            instructions added at the end of each template (``append_template``), for optimizer models
            too small to rewrite a prompt without losing what already works.
        critique_template, edit_template, one_call_template, append_template: the optimizer's instructions
            (``str.format`` templates with the fields of ``CRITIQUE_FIELDS`` / ``EDIT_FIELDS`` /
            ``ONE_CALL_FIELDS`` / ``APPEND_FIELDS``).
        max_prompt_chars: a rewritten template longer than this is rejected.
        optimizer_temperature, optimizer_max_tokens: sampling of the optimizer's replies.
        optimizer_concurrency: optimizer calls in flight at once.
        optimizer_timeout: seconds one optimizer call may take (tried twice) before the run stops.
        agent_llm: the resource name of the agent's LLM (``None``: APO publishes no LLM; the agent
            brings its own and its calls must be traced by a framework adapter).
        agent_model, serving, serving_options: the model the serving backend serves when no agent
            LLM or optimizer endpoint is given (``None``: the embedded default model).
        sampling, val_sampling: the agent's sampling parameters in training / validation rollouts.
        seed: draws of the validation batch and of each critique's training batch.
        run_dir: where ``apo/`` goes (default: the Trainer's run folder).
        resume: continue the newest APO run in the store (also ``Trainer.fit(resume=True)``).
        rollout_timeout: seconds a batch of rollouts may take; unfinished ones are cancelled and score 0.
        progress: print one line per stage.
    """

    def __init__(
        self,
        *,
        optimizer: Union[OptimizerEndpoint, Mapping[str, Any], None] = None,
        prompts: Optional[Sequence[str]] = None,
        mode: Literal["joint", "in_turn"] = "joint",
        beam_width: int = 2,
        branch_factor: int = 2,
        rounds: int = 2,
        gradient_batch_size: int = 4,
        val_batch_size: Optional[int] = None,
        max_rollouts: Optional[int] = None,
        max_optimizer_calls: Optional[int] = None,
        max_tokens: Optional[int] = None,
        proposal: Literal["critique_then_edit", "one_call", "append"] = "critique_then_edit",
        critique_template: str = DEFAULT_CRITIQUE_TEMPLATE,
        edit_template: str = DEFAULT_EDIT_TEMPLATE,
        one_call_template: str = DEFAULT_ONE_CALL_TEMPLATE,
        append_template: str = DEFAULT_APPEND_TEMPLATE,
        max_prompt_chars: int = 4000,
        optimizer_temperature: float = 1.0,
        optimizer_max_tokens: int = 768,
        optimizer_concurrency: int = 4,
        optimizer_timeout: float = 600.0,
        agent_llm: Optional[str] = "main_llm",
        agent_model: Optional[str] = None,
        serving: str = "embedded",
        serving_options: Optional[Mapping[str, Any]] = None,
        sampling: Optional[Mapping[str, Any]] = None,
        val_sampling: Optional[Mapping[str, Any]] = None,
        seed: int = 0,
        run_dir: Union[str, Path, None] = None,
        resume: bool = False,
        rollout_timeout: float = 1800.0,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("joint", "in_turn"):
            raise ValueError(f"mode must be 'joint' or 'in_turn', got {mode!r}")
        if proposal not in ("critique_then_edit", "one_call", "append"):
            raise ValueError(f"proposal must be 'critique_then_edit', 'one_call' or 'append', got {proposal!r}")
        for name, value in (
            ("beam_width", beam_width),
            ("branch_factor", branch_factor),
            ("gradient_batch_size", gradient_batch_size),
            ("optimizer_concurrency", optimizer_concurrency),
            ("max_prompt_chars", max_prompt_chars),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if val_batch_size is not None and val_batch_size < 1:
            raise ValueError(f"val_batch_size must be >= 1 or None, got {val_batch_size}")
        check_instruction_template(critique_template, CRITIQUE_FIELDS, "critique")
        check_instruction_template(edit_template, EDIT_FIELDS, "edit")
        check_instruction_template(one_call_template, ONE_CALL_FIELDS, "one-call")
        check_instruction_template(append_template, APPEND_FIELDS, "append")
        self.optimizer = OptimizerEndpoint(**optimizer) if isinstance(optimizer, Mapping) else optimizer
        self.prompt_names = list(prompts) if prompts is not None else None
        self.mode = mode
        self.beam_width = beam_width
        self.branch_factor = branch_factor
        self.rounds = rounds
        self.gradient_batch_size = gradient_batch_size
        self.val_batch_size = val_batch_size
        self.budget = Budget(max_rollouts, max_optimizer_calls, max_tokens)
        self.proposal = proposal
        self.critique_template = critique_template
        self.edit_template = edit_template
        self.one_call_template = one_call_template
        self.append_template = append_template
        self.max_prompt_chars = max_prompt_chars
        self.optimizer_temperature = optimizer_temperature
        self.optimizer_max_tokens = optimizer_max_tokens
        self.optimizer_concurrency = optimizer_concurrency
        self.optimizer_timeout = optimizer_timeout
        self.agent_llm = agent_llm
        self.agent_model = agent_model
        self.serving = serving
        self.serving_options = dict(serving_options or {})
        self.sampling = {"temperature": 0.7, "max_tokens": 256, **dict(sampling or {})}
        self.val_sampling = {**self.sampling, "temperature": 0.0, **dict(val_sampling or {})}
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.rollout_timeout = rollout_timeout
        self.progress = progress
        self._reset()

    def _reset(self) -> None:
        """Forget a previous run: each run() starts from the store alone."""
        self.budget = Budget(self.budget.max_rollouts, self.budget.max_optimizer_calls, self.budget.max_tokens)
        # The outcome a caller (or a test) can read after run().
        self.run_id: Optional[str] = None
        self.best: Optional[Candidate] = None
        self.best_resources_id: Optional[str] = None
        self.candidates: List[Candidate] = []
        self.round_records: List[Dict[str, Any]] = []
        self.stop_reason: Optional[str] = None
        self.cache_hits = 0
        self._cache: Dict[Tuple[str, str, str], _Outcome] = {}
        self._memo: Dict[str, Tuple[str, int]] = {}
        self._journaled: set[str] = set()
        self._journal_ids: Tuple[str, str] = ("", "")
        self._published: Dict[Tuple[str, str], str] = {}
        self._base_resources: NamedResources = {}
        self._agent_resource: Optional[LLM] = None

    # ------------------------------------------------------------------------------------ public
    def get_best_prompts(self) -> Dict[str, str]:
        """The best prompt set of the last run (template name -> text)."""
        if self.best is None:
            raise ValueError("APO has not run yet")
        return dict(self.best.prompts)

    def get_best_prompt(self) -> PromptTemplate:
        """0.3 compatibility: the best version of the (first) optimized template."""
        name = next(iter(self.get_best_prompts()))
        return PromptTemplate(template=self.get_best_prompts()[name], engine="f-string")

    # -------------------------------------------------------------------------------------- run
    async def run(
        self, train_dataset: Optional[Dataset[Any]] = None, val_dataset: Optional[Dataset[Any]] = None
    ) -> None:
        if not train_dataset:
            raise ValueError("APO needs a non-empty train_dataset (the critiques are written from its rollouts)")
        if not val_dataset:
            raise ValueError("APO needs a non-empty val_dataset (candidates are scored on it)")
        store = self.get_store()
        initial = dict(self.get_initial_resources() or {})
        names = self._template_names(initial)
        run_dir = self._resolve_run_dir() / "apo"
        self._reset()
        await self._open_journal(store)
        server: Optional[ServingBackend] = None
        proxy: Optional[LLMProxy] = None
        owns_proxy = False
        optimizer: Optional[OptimizerLLM] = None
        self._log(
            f"run {self.run_id}: optimizing {names} ({self.mode}), beam {self.beam_width} x "
            f"branches {self.branch_factor}, {self.rounds} rounds"
        )
        try:
            server, proxy, owns_proxy, base = await self._set_up_models(store, initial)
            optimizer = OptimizerLLM(
                self._optimizer_endpoint(server),
                temperature=self.optimizer_temperature,
                max_tokens=self.optimizer_max_tokens,
                timeout=self.optimizer_timeout,
            )
            self._base_resources = base
            await self._search(store, optimizer, initial, names, train_dataset, val_dataset)
            await self._finish(store, initial, run_dir)
        finally:
            if optimizer is not None:
                await optimizer.close()
            if proxy is not None:
                if owns_proxy:
                    proxy.stop_thread()
                else:
                    remaining = [b for b in proxy.backends if b.name != AGENT_BACKEND_NAME]
                    if remaining:
                        proxy.update_backends(remaining)
            if server is not None:
                await asyncio.to_thread(server.close)

    # --------------------------------------------------------------------------------- set-up
    def _template_names(self, initial: NamedResources) -> List[str]:
        templates = [name for name, r in initial.items() if isinstance(r, PromptTemplate)]
        names = self.prompt_names if self.prompt_names is not None else templates
        if not names:
            raise ValueError("APO needs PromptTemplate resources in initial_resources to optimize; found none")
        for name in names:
            resource = initial.get(name)
            if not isinstance(resource, PromptTemplate):
                raise ValueError(
                    f"APO cannot optimize {name!r}: it is not a PromptTemplate in initial_resources "
                    f"(PromptTemplates there: {templates})"
                )
            if resource.engine != "f-string":
                raise ValueError(f"APO edits f-string templates; {name!r} uses the {resource.engine!r} engine")
        return list(names)

    def _resolve_run_dir(self) -> Path:
        if self.run_dir is not None:
            return self.run_dir
        trainer = self._trainer_or_none()
        if trainer is not None and getattr(trainer, "run_dir", None) is not None:
            return Path(trainer.run_dir)
        return Path("agl_runs") / f"apo-{time.strftime('%Y%m%d-%H%M%S')}"

    def _trainer_or_none(self) -> Any:
        try:
            return self.get_trainer()
        except ValueError:
            return None

    def _model_path(self) -> str:
        if self.agent_model is not None:
            return self.agent_model
        # The embedded plugin ships the default model; imported by name so this plugin does not need it.
        default_model = importlib.import_module("agentlightning_embedded.default_model")
        return str(default_model.ensure_default_model())

    async def _set_up_models(
        self, store: LightningStore, initial: NamedResources
    ) -> Tuple[Optional[ServingBackend], Optional[LLMProxy], bool, NamedResources]:
        """Start what serves the agent and the optimizer; returns the resources every rollout gets."""
        existing = initial.get(self.agent_llm) if self.agent_llm else None
        needs_server = (self.agent_llm is not None and not isinstance(existing, LLM)) or self.optimizer is None
        server: Optional[ServingBackend] = None
        if needs_server:
            self._log(f"starting the {self.serving!r} serving backend")
            model_path = await asyncio.to_thread(self._model_path)
            server = await asyncio.to_thread(start_serving_backend, self.serving, model_path, **self.serving_options)
        base: NamedResources = {k: v for k, v in initial.items() if not isinstance(v, PromptTemplate)}
        if self.agent_llm is None or isinstance(existing, ProxyLLM):
            return server, None, False, base
        if isinstance(existing, LLM):
            backend = ProxyBackend(
                existing.endpoint, models=[existing.model], api_key=existing.api_key, name=AGENT_BACKEND_NAME
            )
            model = existing.model
        else:
            assert server is not None
            backend = ProxyBackend(
                server.base_url,
                models=[server.model_name],
                request_extras=server.request_extras(),
                name=AGENT_BACKEND_NAME,
            )
            model = server.model_name
        proxy = self.get_llm_proxy()
        owns_proxy = False
        if proxy is None:
            proxy, owns_proxy = LLMProxy(store, [backend]).start_in_thread(), True
        else:
            proxy.update_backends([*(b for b in proxy.backends if b.name != AGENT_BACKEND_NAME), backend])
            if not proxy.running:
                proxy, owns_proxy = proxy.start_in_thread(), True
        self._agent_resource = proxy.as_resource(model=model)
        return server, proxy, owns_proxy, base

    def _optimizer_endpoint(self, server: Optional[ServingBackend]) -> OptimizerEndpoint:
        if self.optimizer is not None:
            return self.optimizer
        assert server is not None
        return OptimizerEndpoint(server.base_url, server.model_name)

    def _resources_for(self, prompts: Mapping[str, str], mode: str, initial: NamedResources) -> NamedResources:
        resources: NamedResources = dict(self._base_resources)
        if self.agent_llm is not None and self._agent_resource is not None:
            sampling = self.sampling if mode == "train" else self.val_sampling
            existing = initial.get(self.agent_llm)
            merged = {**(existing.sampling_parameters if isinstance(existing, LLM) else {}), **sampling}
            resources[self.agent_llm] = self._agent_resource.model_copy(update={"sampling_parameters": merged})
        for name, text in prompts.items():
            resources[name] = PromptTemplate(template=text, engine="f-string")
        return resources

    # -------------------------------------------------------------------------------- journal
    async def _open_journal(self, store: LightningStore) -> None:
        """Find the run to resume in the store (its journal, rollouts and budget use), or start a new one."""
        resume = self.resume or bool(getattr(self._trainer_or_none(), "resume", False))
        journal = None
        if resume:
            journals = [
                r for r in await store.query_rollouts() if ((r.metadata or {}).get(METADATA_KEY) or {}).get("journal")
            ]
            journal = max(journals, key=lambda r: r.start_time) if journals else None
            if journal is None:
                self._log("resume: no APO run in the store; starting a new one")
        if journal is None:
            self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            started = await store.start_rollout(
                input={"algorithm": "apo", "run": self.run_id},
                metadata={METADATA_KEY: {"journal": True, "run": self.run_id}},
            )
            self._journal_ids = (started.rollout_id, started.attempt.attempt_id)
            return
        self.run_id = journal.metadata[METADATA_KEY]["run"]  # type: ignore[index]
        attempts = await store.query_attempts(journal.rollout_id)
        self._journal_ids = (journal.rollout_id, attempts[-1].attempt_id)
        for span in await store.query_spans(journal.rollout_id):
            raw = span.attributes.get(RECORD_ATTRIBUTE)
            if not isinstance(raw, str):
                continue
            record = json.loads(raw)
            self._journaled.add(record["record_id"])
            if span.name == "agentlightning.apo.optimizer_call":
                self._memo[record["key"]] = (record["reply"], record["tokens"])
                self.budget.optimizer_calls += 1
                self.budget.tokens += record["tokens"]
        unfinished = 0
        for rollout in await store.query_rollouts():
            meta = (rollout.metadata or {}).get(METADATA_KEY) or {}
            if meta.get("run") != self.run_id or meta.get("journal"):
                continue
            self.budget.rollouts += 1
            if rollout.status in ("succeeded", "failed"):
                spans = await store.query_spans(rollout.rollout_id, "latest")
                reward = find_final_reward(list(spans)) if rollout.status == "succeeded" else None
                self._cache[(meta["prompt_key"], meta["task_key"], meta["mode"])] = _Outcome(
                    rollout.rollout_id, rollout.status, reward
                )
            elif rollout.status not in _TERMINAL:
                unfinished += 1
                await store.cancel_rollout(rollout.rollout_id)
        self._log(
            f"resuming APO run {self.run_id}: {len(self._cache)} rollouts and {len(self._memo)} optimizer replies "
            f"from the store ({unfinished} unfinished rollouts cancelled and played again)"
        )

    async def _record(self, name: str, record_id: str, payload: Mapping[str, Any]) -> None:
        if record_id in self._journaled:
            return
        self._journaled.add(record_id)
        store = self.get_store()
        rollout_id, attempt_id = self._journal_ids
        sequence_id = await store.get_next_span_sequence_id(rollout_id, attempt_id)
        body = json.dumps({"record_id": record_id, **payload}, default=str)
        span = Span.from_attributes(
            attributes={RECORD_ATTRIBUTE: body},
            rollout_id=rollout_id,
            attempt_id=attempt_id,
            sequence_id=sequence_id,
            name=name,
        )
        await store.add_span(span)

    # ------------------------------------------------------------------------------- rollouts
    async def _play(
        self,
        store: LightningStore,
        initial: NamedResources,
        jobs: Sequence[Tuple[Mapping[str, str], Any]],
        mode: str,
    ) -> List[_Outcome]:
        """Play every (prompt set, task) not in the cache, all at once; return the outcomes in order."""
        keys = [(_digest(prompts), _digest(task), mode) for prompts, task in jobs]
        missing: Dict[Tuple[str, str, str], Tuple[Mapping[str, str], Any]] = {}
        for key, job in zip(keys, jobs, strict=True):
            if key in self._cache or key in missing:
                self.cache_hits += 1  # scored before, or twice in this batch: played once
            else:
                missing[key] = job
        if missing:
            self.budget.reserve_rollouts(len(missing))
            requests: List[EnqueueRolloutRequest] = []
            config = RolloutConfig(timeout_seconds=self.rollout_timeout)
            for key, (prompts, task) in missing.items():
                resources_id = self._published.get((key[0], mode))
                if resources_id is None:
                    resources_id = f"apo-{self.run_id}-{key[0]}-{mode}"
                    await store.update_resources(resources_id, self._resources_for(prompts, mode, initial))
                    self._published[(key[0], mode)] = resources_id
                requests.append(
                    EnqueueRolloutRequest(
                        input=task,
                        mode="train" if mode == "train" else "val",
                        resources_id=resources_id,
                        config=config,
                        metadata={
                            METADATA_KEY: {"run": self.run_id, "prompt_key": key[0], "task_key": key[1], "mode": mode}
                        },
                    )
                )
            rollouts = await store.enqueue_many_rollouts(requests)
            ids = [r.rollout_id for r in rollouts]
            finished = {
                r.rollout_id: r for r in await store.wait_for_rollouts(rollout_ids=ids, timeout=self.rollout_timeout)
            }
            for key, rollout_id in zip(missing, ids, strict=True):
                rollout = finished.get(rollout_id)
                if rollout is None:
                    logger.warning(
                        "rollout %s did not finish within %.0f s; it scores 0", rollout_id, self.rollout_timeout
                    )
                    await store.cancel_rollout(rollout_id)
                    self._cache[key] = _Outcome(rollout_id, "timeout", None)
                    continue
                reward = None
                if rollout.status == "succeeded":
                    reward = find_final_reward(list(await store.query_spans(rollout_id, "latest")))
                self._cache[key] = _Outcome(rollout_id, rollout.status, reward)
        return [self._cache[key] for key in keys]

    async def _score(
        self, store: LightningStore, initial: NamedResources, candidates: Sequence[Candidate], val_tasks: Sequence[Any]
    ) -> None:
        jobs = [(c.prompts, task) for c in candidates for task in val_tasks]
        outcomes = await self._play(store, initial, jobs, "val")
        for index, candidate in enumerate(candidates):
            rewards = outcomes[index * len(val_tasks) : (index + 1) * len(val_tasks)]
            candidate.score = sum(o.reward or 0.0 for o in rewards) / len(rewards)

    def _messages_adapter(self) -> Adapter[Sequence[Span], List[Dict[str, Any]]]:
        """The Trainer's adapter when it has one, else :class:`TraceToMessages`."""
        try:
            adapter: Adapter[Sequence[Span], List[Dict[str, Any]]] = self.get_adapter()
        except ValueError:
            adapter = TraceToMessages()
        return adapter

    async def _experiment(self, store: LightningStore, task: Any, outcome: _Outcome) -> Experiment:
        messages: List[Dict[str, Any]] = []
        if outcome.status in ("succeeded", "failed"):
            records = self._messages_adapter().adapt(list(await store.query_spans(outcome.rollout_id, "latest")))
            if records and isinstance(records[-1], dict):
                messages = list(records[-1].get("messages", []))
        return Experiment(task=task, messages=messages, reward=outcome.reward)

    # ------------------------------------------------------------------------------- optimizer
    async def _ask(self, optimizer: OptimizerLLM, key_parts: Sequence[Any], prompt: str) -> str:
        """One optimizer call, or its journaled reply when the run is replayed."""
        messages = [{"role": "user", "content": prompt}]
        key = _digest([self.run_id, *key_parts, messages, optimizer.endpoint.model])
        if key in self._memo:
            return self._memo[key][0]
        self.budget.reserve_call()
        reply, tokens = await optimizer.complete(messages)
        self.budget.tokens += tokens
        self._memo[key] = (reply, tokens)
        await self._record(
            "agentlightning.apo.optimizer_call",
            f"call:{key}",
            {"key": key, "step": list(key_parts), "request": prompt, "reply": reply, "tokens": tokens},
        )
        return reply

    async def _propose(
        self,
        store: LightningStore,
        optimizer: OptimizerLLM,
        parent: Candidate,
        candidate_id: str,
        round_index: int,
        targets: Sequence[str],
        batch: Sequence[Any],
        outcomes: Sequence[_Outcome],
    ) -> Candidate:
        experiments = [await self._experiment(store, task, o) for task, o in zip(batch, outcomes, strict=True)]
        instruction = {
            "critique_then_edit": self.critique_template,
            "one_call": self.one_call_template,
            "append": self.append_template,
        }[self.proposal]
        single = self.proposal != "critique_then_edit"  # the reply carries the templates' new text too
        critique = await self._ask(
            optimizer,
            [candidate_id, self.proposal if single else "critique"],
            instruction.format(
                prompts=render_prompts(parent.prompts),
                experiments=render_experiments(experiments),
                targets=", ".join(f'"{t}"' for t in targets),
            ),
        )
        candidate = Candidate(
            id=candidate_id, prompts=dict(parent.prompts), round=round_index, parent=parent.id, critique=critique
        )
        if not critique.strip():
            candidate.rejected = {t: "empty reply" if single else "empty critique" for t in targets}
            return candidate
        blocks: Dict[str, str] = {}
        tag = "<prompt>"
        if self.proposal == "one_call":
            blocks = rewritten_templates(critique, targets, parent.prompts)
        elif self.proposal == "append":
            blocks, tag = added_instructions(critique, targets), "<add>"
        for name in targets:
            original = parent.prompts[name]
            try:
                if single and not blocks.get(name):
                    raise EditRejected(f"no {tag} block for it in the reply")
                if self.proposal == "append":
                    edited = appended_template(blocks[name], original, max_chars=self.max_prompt_chars)
                else:
                    reply = (
                        blocks[name] if single else await self._edit(optimizer, candidate_id, name, original, critique)
                    )
                    edited = check_edited_prompt(reply, original, max_chars=self.max_prompt_chars)
                candidate.prompts[name] = edited
                candidate.edited.append(name)
            except EditRejected as exc:
                candidate.rejected[name] = exc.reason
                logger.warning("APO %s: discarded the optimizer's edit of %r: %s", candidate_id, name, exc.reason)
                self._log(f"  {candidate_id}: edit of {name!r} discarded ({exc.reason})")
        return candidate

    async def _edit(self, optimizer: OptimizerLLM, candidate_id: str, name: str, original: str, critique: str) -> str:
        """The edit call of ``critique_then_edit``: the template rewritten to apply the critique."""
        return await self._ask(
            optimizer,
            [candidate_id, "edit", name],
            self.edit_template.format(
                name=name,
                prompt=original,
                critique=critique.strip(),
                placeholders=", ".join("{" + p + "}" for p in placeholders(original)) or "none",
            ),
        )

    # ---------------------------------------------------------------------------------- search
    async def _search(
        self,
        store: LightningStore,
        optimizer: OptimizerLLM,
        initial: NamedResources,
        names: Sequence[str],
        train_dataset: Dataset[Any],
        val_dataset: Dataset[Any],
    ) -> None:
        rng = random.Random(self.seed)
        val_count = len(val_dataset) if self.val_batch_size is None else min(self.val_batch_size, len(val_dataset))
        val_tasks = [val_dataset[i] for i in sorted(rng.sample(range(len(val_dataset)), val_count))]
        seed = Candidate(id="seed", prompts={n: initial[n].template for n in names}, round=0)  # type: ignore[union-attr]
        self.candidates = [seed]
        self.best = seed
        beam = [seed]
        try:
            started = time.perf_counter()
            await self._score(store, initial, [seed], val_tasks)
            seed.outcome = "seed"
            await self._close_round(0, beam, [seed], started)
            for round_index in range(1, self.rounds + 1):
                started = time.perf_counter()
                targets = list(names) if self.mode == "joint" else [names[(round_index - 1) % len(names)]]
                branches: List[Tuple[Candidate, str, List[Any]]] = []
                count = min(self.gradient_batch_size, len(train_dataset))
                for p_index, parent in enumerate(beam):
                    # One training batch a parent: its branches read the same rollouts (played once).
                    draw = random.Random(f"{self.seed}-{round_index}-{p_index}")
                    batch = [train_dataset[i] for i in draw.sample(range(len(train_dataset)), count)]
                    for b_index in range(self.branch_factor):
                        branches.append((parent, f"r{round_index}-p{p_index}-b{b_index}", batch))
                branches = self._affordable(branches, len(val_tasks), round_index)
                outcomes = await self._play(
                    store, initial, [(parent.prompts, task) for parent, _, batch in branches for task in batch], "train"
                )
                self._log(f"round {round_index}: {len(outcomes)} training rollouts, writing critiques for {targets}")
                proposed, stop = await self._propose_all(store, optimizer, round_index, targets, branches, outcomes)
                fresh = await self._keep_new(proposed, beam)
                if stop is not None and not isinstance(stop, BudgetExhausted):
                    for candidate in fresh:
                        candidate.outcome = "not scored (run stopped)"
                        await self._record_candidate(candidate)
                    raise stop
                # At an optimizer budget, the candidates written before it are still scored (their
                # validation rollouts were set aside by _affordable), then the run stops.
                await self._score(store, initial, fresh, val_tasks)
                pool = sorted([*beam, *fresh], key=lambda c: -(c.score or 0.0))  # stable: older wins ties
                beam = pool[: self.beam_width]
                for candidate in fresh:
                    candidate.outcome = "kept in beam" if candidate in beam else "dropped"
                await self._close_round(round_index, beam, fresh, started)
                if stop is not None:
                    raise stop
        except BudgetExhausted as exc:
            self.stop_reason = str(exc)
            for candidate in self.candidates:
                if candidate.score is None and not candidate.outcome:
                    candidate.outcome = "not scored (budget reached)"
                    await self._record_candidate(candidate)
            self._log(f"stopping at the budget: {exc}")
        except OptimizerEndpointError as exc:
            self.stop_reason = str(exc)
            await self._record(
                "agentlightning.apo.stopped", "stopped", {"error": str(exc), "budget": self.budget.as_dict()}
            )
            self._log(f"stopping: {exc}")
            raise
        finally:
            scored = [c for c in self.candidates if c.score is not None]
            self.best = max(scored, key=lambda c: c.score or 0.0) if scored else seed

    def _affordable(
        self, branches: List[Tuple[Candidate, str, List[Any]]], val_count: int, round_index: int
    ) -> List[Tuple[Candidate, str, List[Any]]]:
        """The branches whose training rollouts (those not played yet) and candidate scoring (at worst,
        uncached) still fit the rollout budget, so no rollout or optimizer call is paid for a candidate
        that could not be scored."""
        limit = self.budget.max_rollouts
        if limit is None or not branches:
            return branches
        remaining = limit - self.budget.rollouts
        planned: set[Tuple[str, str, str]] = set()
        kept: List[Tuple[Candidate, str, List[Any]]] = []
        for parent, candidate_id, batch in branches:
            new = {(parent.key, _digest(task), "train") for task in batch} - planned - self._cache.keys()
            cost = len(new) + val_count
            if cost > remaining:
                if not kept:
                    raise BudgetExhausted(
                        f"rollout budget: {self.budget.rollouts} used, a branch needs {cost} (its training "
                        f"rollouts and the candidate's validation), limit {limit}"
                    )
                break
            kept.append((parent, candidate_id, batch))
            planned |= new
            remaining -= cost
        if len(kept) < len(branches):
            self._log(f"round {round_index}: the rollout budget affords {len(kept)} of {len(branches)} branches")
        return kept

    async def _propose_all(
        self,
        store: LightningStore,
        optimizer: OptimizerLLM,
        round_index: int,
        targets: Sequence[str],
        branches: Sequence[Tuple[Candidate, str, List[Any]]],
        outcomes: Sequence[_Outcome],
    ) -> Tuple[List[Candidate], Optional[BaseException]]:
        """Every branch's critique and edits, ``optimizer_concurrency`` at a time; and what stopped them, if anything."""
        limit = asyncio.Semaphore(self.optimizer_concurrency)
        offsets = [sum(len(b[2]) for b in branches[:i]) for i in range(len(branches))]

        async def propose(i: int) -> Candidate:
            parent, candidate_id, batch = branches[i]
            async with limit:
                played = outcomes[offsets[i] : offsets[i] + len(batch)]
                return await self._propose(store, optimizer, parent, candidate_id, round_index, targets, batch, played)

        results = await asyncio.gather(*(propose(i) for i in range(len(branches))), return_exceptions=True)
        proposed: List[Candidate] = []
        stop: Optional[BaseException] = None
        for result in results:
            if isinstance(result, BaseException):
                # An endpoint failure outranks a budget stop: it is an error the user must see.
                if stop is None or isinstance(result, OptimizerEndpointError):
                    stop = result
            else:
                proposed.append(result)
        return proposed, stop

    async def _keep_new(self, proposed: Sequence[Candidate], beam: Sequence[Candidate]) -> List[Candidate]:
        """Candidates with at least one accepted edit and a prompt set not seen before."""
        seen = {c.key for c in self.candidates}
        fresh: List[Candidate] = []
        for candidate in proposed:
            self.candidates.append(candidate)
            if not candidate.edited:
                candidate.outcome = "no usable edit: " + "; ".join(f"{k}: {v}" for k, v in candidate.rejected.items())
                await self._record_candidate(candidate)
            elif candidate.key in seen:
                candidate.outcome = "duplicate of an earlier prompt set"
                await self._record_candidate(candidate)
            else:
                seen.add(candidate.key)
                fresh.append(candidate)
        return fresh

    async def _record_candidate(self, candidate: Candidate) -> None:
        await self._record("agentlightning.apo.candidate", f"candidate:{candidate.id}", asdict(candidate))

    async def _close_round(
        self, round_index: int, beam: Sequence[Candidate], fresh: Sequence[Candidate], started: float
    ) -> None:
        for candidate in fresh:
            await self._record_candidate(candidate)
        scores = [c.score or 0.0 for c in beam]
        record = {
            "round": round_index,
            "beam": [c.id for c in beam],
            "best_score": max(scores),
            "mean_score": sum(scores) / len(scores),
            "candidates": len(fresh),
            "budget": self.budget.as_dict(),
            "cache_hits": self.cache_hits,
            "seconds": time.perf_counter() - started,
        }
        self.round_records.append(record)
        await self._record("agentlightning.apo.round", f"round:{round_index}", record)
        self._log(
            f"round {round_index}: best {record['best_score']:.3f} ({beam[0].id}), beam mean {record['mean_score']:.3f}, "
            f"scored {len(fresh)} prompt set(s); used {self.budget.rollouts} rollouts, {self.budget.optimizer_calls} optimizer "
            f"calls, {self.budget.tokens} tokens ({record['seconds']:.0f}s)"
        )

    # ---------------------------------------------------------------------------------- finish
    async def _finish(self, store: LightningStore, initial: NamedResources, run_dir: Path) -> None:
        """Publish the best prompts as a new resources version, write the run folder, print them."""
        assert self.best is not None
        best = self.best
        resources: NamedResources = dict(initial)
        for name, text in best.prompts.items():
            resources[name] = PromptTemplate(template=text, engine="f-string")
        update = await store.add_resources(resources)
        self.best_resources_id = update.resources_id
        seed_score = self.candidates[0].score
        summary = {
            "run": self.run_id,
            "best_candidate": best.id,
            "best_score": best.score,
            "seed_score": seed_score,
            "resources_id": update.resources_id,
            "stop_reason": self.stop_reason,
            "budget": self.budget.as_dict(),
            "cache_hits": self.cache_hits,
        }
        await self._record("agentlightning.apo.result", "result", {"prompts": best.prompts, **summary})
        rollout_id, attempt_id = self._journal_ids
        try:
            await store.update_attempt(rollout_id, attempt_id, status="succeeded")
        except ValueError:  # a replayed run whose journal is already closed
            pass
        paths = write_run_files(
            run_dir,
            best=best.prompts,
            summary=summary,
            candidates=[asdict(c) for c in self.candidates],
            rounds=self.round_records,
        )
        if self.progress:
            print(rounds_table([asdict(c) for c in self.candidates]))
            print(
                f"\nBest prompts ({best.id}, validation score "
                f"{'-' if best.score is None else f'{best.score:.3f}'}; seed "
                f"{'-' if seed_score is None else f'{seed_score:.3f}'}), published as resources {update.resources_id}:"
            )
            for name, text in best.prompts.items():
                print(f"--- {name} ---\n{text}")
            print(f"Run folder: {run_dir}  ({', '.join(p.name for p in paths.values())})")

    def _log(self, message: str) -> None:
        logger.info(message)
        if self.progress:
            print(f"APO {message}", flush=True)
