"""``LitAgentRunner``: dequeues rollouts and runs a :class:`LitAgent` on them, many at once."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import random
import socket
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from agentlightning.emitter import emit_reward, find_final_reward
from agentlightning.errors import InvalidTransitionError
from agentlightning.instrumentation import AutoInstrumentation, auto_instrument
from agentlightning.litagent import LitAgent
from agentlightning.plugins import notify
from agentlightning.store.base import LightningStore
from agentlightning.tracer import Tracer
from agentlightning.types import (
    TERMINAL_ROLLOUT_STATUSES,
    AttemptedRollout,
    Hook,
    NamedResources,
    ParallelWorkerBase,
    Rollout,
    RolloutMode,
    Span,
    SpanCoreFields,
)

from .base import ExecutionEvent, Runner, T

__all__ = ["LitAgentRunner", "RolloutCancelled"]

logger = logging.getLogger(__name__)


class RolloutCancelled(Exception):
    """The store cancelled the rollout (or its attempt) while the agent was running."""


async def _in_own_thread(call: Callable[[], Any], *, name: str) -> Any:
    """Run a blocking call in a daemon thread of its own and await its result (the loop's default
    executor, shared with every ``asyncio.to_thread``, would cap sync agents below ``concurrency``)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(error: Optional[BaseException], result: Any) -> None:
        if future.done():  # the awaiting task was cancelled: the result is dropped
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task, which decides what it means
            error: Optional[BaseException] = exc
            result = None
        else:
            error = None
        try:
            loop.call_soon_threadsafe(settle, error, result)
        except RuntimeError:  # the loop is closed: nobody waits for this result any more
            pass

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


def _default_worker_id() -> str:
    # Unique across hosts and processes, readable in the dashboard.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LitAgentRunner(Runner[T]):
    """Runs up to ``concurrency`` rollouts at once in this process (async agents as tasks, sync agents in
    threads); each attempt is traced, heartbeats, enforces ``timeout_seconds`` and stops when the store
    cancels its rollout."""

    def __init__(
        self,
        tracer: Tracer,
        max_rollouts: Optional[int] = None,
        poll_interval: float = 0.5,
        heartbeat_interval: float = 10.0,
        interval_jitter: float = 0.5,
        concurrency: int = 1,
        graceful_timeout: float = 10.0,
        worker_id: Optional[str] = None,
        heartbeat_launch_mode: str = "thread",
        heartbeat_include_gpu: bool = False,
    ) -> None:
        # heartbeat_launch_mode / heartbeat_include_gpu are 0.3 options with no effect: heartbeats are
        # tasks of the runner's own event loop, and carry no GPU statistics.
        super().__init__()
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        if max_rollouts is not None and max_rollouts < 1:
            raise ValueError(f"max_rollouts must be >= 1 or None, got {max_rollouts!r}")
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {heartbeat_interval!r}")
        self.tracer = tracer
        self.max_rollouts = max_rollouts
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.interval_jitter = interval_jitter
        self.concurrency = concurrency
        self.graceful_timeout = graceful_timeout
        self._fixed_worker_id = worker_id
        self.worker_name: str = worker_id or _default_worker_id()
        self._agent: Optional[LitAgent[Any]] = None
        self._hooks: List[Hook] = []
        self._store: Optional[LightningStore] = None
        self._instrumented: Optional[AutoInstrumentation] = None
        self.completed = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def init(self, agent: LitAgent[Any], *, hooks: Optional[Sequence[Hook]] = None, **kwargs: Any) -> None:
        if not isinstance(agent, LitAgent):
            raise TypeError(f"the runner needs a LitAgent (use @agl.rollout on a function), got {agent!r}")
        self._agent = agent
        self._hooks = list(hooks or [])
        agent.set_runner(self)
        self._instrument()

    def init_worker(self, worker_id: int, store: LightningStore, **kwargs: Any) -> None:
        ParallelWorkerBase.init_worker(self, worker_id)
        self._store = store
        if self._fixed_worker_id is None:
            self.worker_name = f"{_default_worker_id()}-{worker_id}"
        self.tracer.init_worker(worker_id, store)

    def teardown_worker(self, worker_id: int, *args: Any, **kwargs: Any) -> None:
        self.tracer.teardown_worker(worker_id)
        self._store = None

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        if self._instrumented is not None:
            self._instrumented.release()
            self._instrumented = None
        self._agent = None

    def _instrument(self) -> None:
        # Zero-code enablement: every installed framework adapter (minus AGL_DISABLE_INSTRUMENTORS).
        if self._instrumented is not None:
            self._instrumented.release()
        self._instrumented = auto_instrument()

    @property
    def store(self) -> LightningStore:
        if self._store is None:
            raise RuntimeError("the runner has no store; call init_worker(worker_id, store) first")
        return self._store

    @property
    def agent(self) -> LitAgent[Any]:
        if self._agent is None:
            raise RuntimeError("the runner has no agent; call init(agent) first")
        return self._agent

    # -- the loop ----------------------------------------------------------------------------------
    async def iter(self, *, event: Optional[ExecutionEvent] = None) -> None:
        """Dequeue and run rollouts until ``event`` is set or ``max_rollouts`` were started."""
        store = self.store
        running: Dict[asyncio.Task[None], str] = {}
        started = 0
        heartbeat = asyncio.ensure_future(self._worker_heartbeats(running))
        try:
            while not (event is not None and event.is_set()):
                if self.max_rollouts is not None and started >= self.max_rollouts:
                    break
                if len(running) >= self.concurrency:
                    await asyncio.wait(list(running), timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                    self._reap(running)
                    continue
                rollout = await store.dequeue_rollout(worker_id=self.worker_name)
                if rollout is None:
                    await self._idle(running, event)
                    continue
                started += 1
                task = asyncio.ensure_future(self._run_attempt(rollout))
                running[task] = rollout.rollout_id
            await self._drain(running)
        finally:
            heartbeat.cancel()
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _reap(self, running: Dict["asyncio.Task[None]", str]) -> None:
        for task in [t for t in running if t.done()]:
            del running[task]
            if not task.cancelled() and task.exception() is not None:
                logger.error("attempt runner crashed", exc_info=task.exception())

    async def _idle(self, running: Dict["asyncio.Task[None]", str], event: Optional[ExecutionEvent]) -> None:
        delay = max(
            0.0, self.poll_interval + random.uniform(-self.interval_jitter, self.interval_jitter) * self.poll_interval
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not (event is not None and event.is_set()):
            if running:
                await asyncio.wait(list(running), timeout=min(0.05, delay), return_when=asyncio.FIRST_COMPLETED)
                self._reap(running)
            else:
                await asyncio.sleep(min(0.05, delay))

    async def _drain(self, running: Dict["asyncio.Task[None]", str]) -> None:
        """Give in-flight attempts ``graceful_timeout`` seconds, then cancel them."""
        if not running:
            return
        done, pending = await asyncio.wait(list(running), timeout=self.graceful_timeout)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("stopping: cancelled %d unfinished attempt(s)", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)
        self._reap(running)

    async def _worker_heartbeats(self, running: Dict["asyncio.Task[None]", str]) -> None:
        stats_base = {"host": socket.gethostname(), "pid": os.getpid()}
        while True:
            try:
                await self.store.update_worker(
                    self.worker_name, {**stats_base, "active_rollouts": len(running), "completed": self.completed}
                )
            except Exception:  # the store being briefly unreachable must not kill the runner
                logger.warning("worker heartbeat failed", exc_info=True)
            await asyncio.sleep(self.heartbeat_interval)

    # -- one attempt -------------------------------------------------------------------------------
    async def step(
        self,
        input: Any,
        *,
        resources: Optional[NamedResources] = None,
        mode: Optional[RolloutMode] = None,
        event: Optional[ExecutionEvent] = None,
    ) -> Rollout:
        """Run one task right now, bypassing the queue; returns the finished rollout."""
        store = self.store
        resources_id = (await store.add_resources(resources)).resources_id if resources else None
        attempted = await store.start_rollout(input, mode=mode, resources_id=resources_id, worker_id=self.worker_name)
        await self._run_attempt(attempted, raise_on_error=True)
        finished = await store.get_rollout_by_id(attempted.rollout_id)
        assert finished is not None
        return finished

    async def _resources_for(self, rollout: AttemptedRollout) -> NamedResources:
        store = self.store
        if rollout.resources_id is not None:
            found = await store.get_resources_by_id(rollout.resources_id)
            if found is None:
                raise LookupError(
                    f"rollout {rollout.rollout_id} names resources {rollout.resources_id!r}, which do not exist"
                )
            return found.resources
        latest = await store.get_latest_resources()
        return latest.resources if latest is not None else {}

    async def _run_attempt(self, rollout: AttemptedRollout, raise_on_error: bool = False) -> None:
        store = self.store
        agent = self.agent
        rollout_id, attempt_id = rollout.rollout_id, rollout.attempt.attempt_id
        status = "succeeded"
        error: Optional[BaseException] = None
        spans: List[Span] = []
        notify("agl_on_rollout_start", rollout=rollout, attempt=rollout.attempt, worker_id=self.worker_name)
        await self._call_hooks("on_rollout_start", agent=agent, runner=self, rollout=rollout)
        try:
            resources = await self._resources_for(rollout)
            traced = False
            try:
                async with self.tracer.trace_context(
                    name=rollout_id, rollout_id=rollout_id, attempt_id=attempt_id, store=store
                ):
                    traced = True
                    hook_args = {"agent": agent, "runner": self, "tracer": self.tracer, "rollout": rollout}
                    await self._call_hooks("on_trace_start", **hook_args)
                    try:
                        result = await self._supervise(rollout, resources)
                    finally:
                        await self._call_hooks("on_trace_end", **hook_args)
            finally:
                if traced:  # only then is the tracer's last trace this attempt's
                    spans = self.tracer.get_last_trace()
            spans.extend(await self._record_result(rollout, result))
        except asyncio.TimeoutError as exc:
            status, error = "timeout", exc
        except RolloutCancelled as exc:
            status, error = "failed", exc
        except asyncio.CancelledError as exc:  # the runner is stopping
            status, error = "failed", exc
            await self._finish(rollout, status, error, spans)
            raise
        except Exception as exc:  # the agent's own failure is data, recorded on the attempt
            status, error = "failed", exc
            logger.warning("rollout %s attempt %s failed: %r", rollout_id, attempt_id, exc)
        await self._finish(rollout, status, error, spans)
        self.completed += 1
        if raise_on_error and error is not None:
            raise error

    async def _finish(
        self, rollout: AttemptedRollout, status: str, error: Optional[BaseException], spans: List[Span]
    ) -> None:
        store = self.store
        rollout_id, attempt_id = rollout.rollout_id, rollout.attempt.attempt_id
        metadata = None
        if error is not None:
            metadata = {
                **(rollout.attempt.metadata or {}),
                "error": {
                    "type": type(error).__name__,
                    "message": str(error) or type(error).__name__,
                    "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__))[-8000:],
                },
            }
        extra: Dict[str, Any] = {"metadata": metadata} if metadata is not None else {}
        try:
            await asyncio.shield(store.update_attempt(rollout_id, attempt_id, status=status, **extra))
        except InvalidTransitionError as exc:
            # The store ended the attempt first (its watchdog timed it out): its verdict stands,
            # and is what hooks and plugins are told; the error is still recorded.
            logger.info("attempt %s already final: %s", attempt_id, exc)
            try:
                current = await asyncio.shield(store.update_attempt(rollout_id, attempt_id, **extra))
                status = current.status
            except Exception:
                logger.exception("could not record the end of attempt %s", attempt_id)
        except Exception:
            logger.exception("could not record the end of attempt %s", attempt_id)
        await self._call_hooks("on_rollout_end", agent=self.agent, runner=self, rollout=rollout, spans=spans)
        notify(
            "agl_on_rollout_end",
            rollout=rollout,
            attempt=rollout.attempt,
            worker_id=self.worker_name,
            status=status,
            error=error,
        )
        logger.debug("rollout %s %s, final reward %s", rollout_id, status, find_final_reward(spans))

    async def _supervise(self, rollout: AttemptedRollout, resources: NamedResources) -> Any:
        """Run the agent while heartbeating and watching for cancellation and the deadline."""
        store = self.store
        rollout_id, attempt_id = rollout.rollout_id, rollout.attempt.attempt_id
        config = rollout.config
        deadline = rollout.attempt.start_time + config.timeout_seconds if config.timeout_seconds is not None else None
        # Beat often enough that the store's watchdog never takes a quiet agent for a dead one.
        beat = self.heartbeat_interval
        if config.unresponsive_seconds is not None:
            beat = min(beat, config.unresponsive_seconds / 3)
        agent_task = asyncio.ensure_future(self._invoke(rollout, resources))
        watch: Optional[asyncio.Future[List[Rollout]]] = None
        try:
            while True:
                wait = beat if deadline is None else min(beat, max(0.0, deadline - time.time()))
                watch = asyncio.ensure_future(store.wait_for_rollouts(rollout_ids=[rollout_id], timeout=wait))
                done, _ = await asyncio.wait({agent_task, watch}, return_when=asyncio.FIRST_COMPLETED)
                if agent_task in done:
                    return agent_task.result()
                finished = watch.result()
                if deadline is not None and time.time() >= deadline:
                    raise asyncio.TimeoutError(
                        f"rollout {rollout_id} exceeded timeout_seconds={config.timeout_seconds}"
                    )
                if finished and finished[0].status in TERMINAL_ROLLOUT_STATUSES:
                    latest = await store.get_latest_attempt(rollout_id)
                    if latest is not None and latest.attempt_id == attempt_id and latest.status == "timeout":
                        raise asyncio.TimeoutError(f"the store timed out attempt {attempt_id}")
                    why = (
                        f" (attempt {latest.status})" if latest is not None and latest.attempt_id == attempt_id else ""
                    )
                    raise RolloutCancelled(f"rollout {rollout_id} became {finished[0].status} while running{why}")
                try:
                    current = await store.update_attempt(rollout_id, attempt_id, last_heartbeat_time=time.time())
                except InvalidTransitionError:
                    continue
                except Exception:  # a briefly unreachable store must not fail the agent
                    logger.warning("heartbeat of attempt %s failed", attempt_id, exc_info=True)
                    continue
                if current.status == "timeout":
                    raise asyncio.TimeoutError(f"the store timed out attempt {attempt_id}")
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
            if not agent_task.done():
                agent_task.cancel()
                await asyncio.gather(agent_task, return_exceptions=True)

    async def _invoke(self, rollout: AttemptedRollout, resources: NamedResources) -> Any:
        agent = self.agent
        train = rollout.mode == "train"
        if agent.is_async():
            method = agent.training_rollout_async if train else agent.validation_rollout_async
            return await method(rollout.input, resources, rollout)
        sync_method = agent.training_rollout if train else agent.validation_rollout
        context = contextvars.copy_context()  # carries the trace context into the thread
        call = functools.partial(context.run, sync_method, rollout.input, resources, rollout)
        return await _in_own_thread(call, name=f"agl-agent-{rollout.rollout_id}")

    async def _record_result(self, rollout: AttemptedRollout, result: Any) -> List[Span]:
        """Store what the agent returned; returns the spans added."""
        store = self.store
        rollout_id, attempt_id = rollout.rollout_id, rollout.attempt.attempt_id
        if result is None:
            return []
        if isinstance(result, (bool, int, float)):
            core = emit_reward(float(result), propagate=False)
            sequence_id = await store.get_next_span_sequence_id(rollout_id, attempt_id)
            span = Span.from_core_fields(core, rollout_id=rollout_id, attempt_id=attempt_id, sequence_id=sequence_id)
            await store.add_span(span)
            return [span]
        if isinstance(result, list):
            if not result:
                logger.warning("rollout %s returned an empty list of spans", rollout_id)
                return []
            sequence_ids = await store.get_many_span_sequence_ids([(rollout_id, attempt_id)] * len(result))
            spans: List[Span] = []
            for item, sequence_id in zip(result, sequence_ids, strict=True):
                if isinstance(item, Span):
                    spans.append(item)
                elif isinstance(item, ReadableSpan):
                    spans.append(Span.from_opentelemetry(item, rollout_id, attempt_id, sequence_id))
                elif isinstance(item, SpanCoreFields):
                    spans.append(
                        Span.from_core_fields(
                            item, rollout_id=rollout_id, attempt_id=attempt_id, sequence_id=sequence_id
                        )
                    )
                else:
                    raise TypeError(f"rollout returned a list holding {type(item).__name__}; expected spans")
            await store.add_many_spans(spans)
            return spans
        raise TypeError(
            f"rollout returned {type(result).__name__} {result!r:.100}; expected None, a number (the final reward) "
            "or a list of spans"
        )

    async def _call_hooks(self, name: str, **kwargs: Any) -> None:
        for hook in self._hooks:
            try:
                await getattr(hook, name)(**kwargs)
            except Exception:  # a hook bug is logged, never fails the rollout
                logger.exception("hook %r.%s failed", hook, name)
