"""The peer's LLM proxy for ``proxy_bench.py``: ``agentlightning==0.3.0``'s ``LLMProxy`` in a process of its own.

Run it with the peer's own interpreter (its own virtual environment, never this project's)::

    LITELLM_LOCAL_MODEL_COST_MAP=True <peer-venv>/bin/python bench/peer_proxy_server.py \
        --backend http://127.0.0.1:PORT/v1 --rollouts 10

It starts 0.3's ``LLMProxy`` (LiteLLM's proxy server behind 0.3's middleware and OpenTelemetry
exporter) with ``launch_mode="thread"`` around an ``InMemoryLightningStore(thread_safe=True)``,
forwarding the model ``fake-model`` to the OpenAI-compatible server at ``--backend``. That is the
fastest way 0.3 runs its proxy: the store is in the proxy's own process (its default ``mp`` mode
needs a store server reached over HTTP). It starts ``--rollouts`` rollouts (each with its first
attempt) and prints one line, :data:`TAG` followed by JSON, with each attempt's proxied OpenAI
``base_url``. Then it serves until its stdin ends (the benchmark closes it, finishes or dies);
it then waits until the spans of the last calls are in the store, prints a second line with
what the store holds, stops the proxy and exits.

0.3 records each call as a tree of OpenTelemetry spans (LiteLLM's and FastAPI's, about ten of
them) that share the call's sequence id, so the number of calls recorded is the number of
distinct ``(rollout, sequence id)`` pairs among the stored spans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from _server_process import exit_after, stdin_closed

# The peer imports litellm, which otherwise downloads a price list at import time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("AGENTOPS_API_KEY", "")

TAG = "@@agl-proxy-bench"  # marks the lines meant for the benchmark among whatever the libraries print
HOST = "127.0.0.1"  # loopback only
MODEL = "fake-model"


def _say(document: dict[str, Any]) -> None:
    sys.stdout.write(f"{TAG} {json.dumps(document)}\n")
    sys.stdout.flush()


def _quiet_logging() -> None:
    """0.3 and LiteLLM log at INFO; keep warnings and errors only, so that logging costs no call time."""
    logging.basicConfig(level=logging.WARNING)
    for name in ("agentlightning", "uvicorn", "uvicorn.error", "uvicorn.access", "LiteLLM", "LiteLLM Proxy", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def _recorded(store: Any, rollout_ids: list[str]) -> tuple[int, int]:
    """(spans stored, calls recorded) over the given rollouts."""
    spans = 0
    calls: set[tuple[str, int]] = set()
    for rollout_id in rollout_ids:
        for span in await store.query_spans(rollout_id):
            spans += 1
            calls.add((rollout_id, span.sequence_id))
    return spans, len(calls)


async def serve(backend: str, rollouts: int, settle_s: float) -> None:
    from agentlightning import InMemoryLightningStore, LLMProxy

    store = InMemoryLightningStore(thread_safe=True)  # "thread" mode refuses a store that is not thread-safe
    proxy = LLMProxy(
        port=None,
        host=HOST,
        model_list=[{"model_name": MODEL, "litellm_params": {"model": f"hosted_vllm/{MODEL}", "api_base": backend}}],
        store=store,
        launch_mode="thread",
    )
    await proxy.start()
    try:
        rollout_ids: list[str] = []
        base_urls: list[str] = []
        for index in range(rollouts):
            rollout = await store.start_rollout(input={"bench": "proxy", "index": index})
            resource = proxy.as_resource(rollout.rollout_id, rollout.attempt.attempt_id, model=MODEL)
            rollout_ids.append(rollout.rollout_id)
            base_urls.append(f"{resource.endpoint}/v1")
        _say({"base_urls": base_urls, "rollout_ids": rollout_ids, "pid": os.getpid()})

        await stdin_closed()
        # The spans of a call are exported when LiteLLM's logging of it ends, which may come after the
        # response: wait until the count stops changing.
        spans, calls = await _recorded(store, rollout_ids)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = await _recorded(store, rollout_ids)
            if now == (spans, calls):
                break
            spans, calls = now
        _say({"spans": spans, "calls_recorded": calls})
    finally:
        await proxy.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", required=True, help="the OpenAI-compatible base URL to forward to (ending in /v1)")
    parser.add_argument("--rollouts", type=int, default=1, help="rollouts (attempts) to serve routes for")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the last spans, at most")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds this process may live, at most")
    args = parser.parse_args()
    exit_after(args.time_limit)
    _quiet_logging()
    try:
        asyncio.run(serve(args.backend, args.rollouts, args.settle))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the benchmark reports it
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
