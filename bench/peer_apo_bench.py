"""The APO of ``agentlightning==0.3.0`` on the benchmark's task; run by apo_bench.py in the peer's own venv.

The peer optimizes one template (the first ``PromptTemplate`` of its initial resources): it gets
``system_prompt``; ``request_prompt`` stays the seed. It has no rollout budget, so apo_bench.py sizes
its beam (``--beam-width``, ``--branch-factor``, ``--rounds``) to the others' budget and the rollouts it
used are counted in its store. Optimizer calls and their tokens are counted on its OpenAI client's HTTP traffic.
Prints one JSON line: the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # the peer's litellm must not fetch a price list
# The peer's AgentOps tracer exports to agentops.ai: point it at a closed local port, keep its log quiet.
for _name in ("AGENTOPS_API_ENDPOINT", "AGENTOPS_APP_URL", "AGENTOPS_EXPORTER_ENDPOINT"):
    os.environ.setdefault(_name, "http://127.0.0.1:9")
os.environ.setdefault("AGENTOPS_LOG_LEVEL", "ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _apo_task import AGENT_MAX_TOKENS, SEED_PROMPTS, datasets, messages_for, score_reply  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

import agentlightning as agl  # noqa: E402
from agentlightning.adapter import TraceToMessages  # noqa: E402
from agentlightning.algorithm.apo import APO  # noqa: E402

ENDPOINT: Dict[str, str] = {}


class CappedTransport(httpx.AsyncHTTPTransport):
    """Adds ``max_tokens`` to the peer's optimizer requests, which set none, so its replies have the others' cap
    whatever the endpoint (an ``agl serve-model --max-tokens`` server capped them by itself)."""

    def __init__(self, max_tokens: int) -> None:
        super().__init__()
        self.max_tokens = max_tokens

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/chat/completions"):
            body = json.loads(await request.aread())
            if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
                body["max_tokens"] = self.max_tokens
                headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
                request = httpx.Request(request.method, request.url, headers=headers, json=body)
        return await super().handle_async_request(request)


class PeerRoomAgent(agl.LitAgent[Dict[str, Any]]):
    async def rollout_async(self, task: Dict[str, Any], resources: Any, rollout: Any) -> float:
        prompts = dict(SEED_PROMPTS, system_prompt=resources["system_prompt"].template)
        client = AsyncOpenAI(base_url=ENDPOINT["url"], api_key="unused", max_retries=0)
        try:
            reply = await client.chat.completions.create(
                model=ENDPOINT["model"],
                messages=messages_for(prompts, task),  # type: ignore[arg-type]
                temperature=0.0,
                max_tokens=AGENT_MAX_TOKENS,
            )
        finally:
            await client.close()
        return score_reply(task, reply.choices[0].message.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--optimizer-url", required=True)
    parser.add_argument("--optimizer-model", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, required=True)
    parser.add_argument("--val", type=int, required=True)
    parser.add_argument("--rooms", type=int, required=True)
    parser.add_argument("--beam-width", type=int, default=1)
    parser.add_argument("--branch-factor", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--gradient-batch-size", type=int, default=2)
    parser.add_argument("--n-runners", type=int, default=4)
    parser.add_argument("--optimizer-max-tokens", type=int, default=250)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ENDPOINT.update(url=args.url, model=args.model)
    train, val = datasets(args.seed, args.train, args.val, args.rooms)

    calls = {"n": 0, "tokens": 0}

    async def count(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            calls["n"] += 1

    async def count_tokens(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions") and response.status_code == 200:
            await response.aread()
            calls["tokens"] += int((response.json().get("usage") or {}).get("total_tokens") or 0)

    client = AsyncOpenAI(
        base_url=args.optimizer_url,
        api_key="unused",
        http_client=httpx.AsyncClient(
            transport=CappedTransport(args.optimizer_max_tokens),
            event_hooks={"request": [count], "response": [count_tokens]},
            timeout=1800,
        ),
    )
    algorithm = APO(
        client,
        gradient_model=args.optimizer_model,
        apply_edit_model=args.optimizer_model,
        gradient_batch_size=args.gradient_batch_size,
        val_batch_size=len(val),
        beam_width=args.beam_width,
        branch_factor=args.branch_factor,
        beam_rounds=args.rounds,
    )
    store = agl.InMemoryLightningStore(thread_safe=True)
    with socket.socket() as sock:  # its store server's port (4747 by default): a free one, so runs can overlap
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    trainer = agl.Trainer(
        algorithm=algorithm,
        n_runners=args.n_runners,
        port=port,
        store=store,
        adapter=TraceToMessages(),
        initial_resources={
            "system_prompt": agl.PromptTemplate(template=SEED_PROMPTS["system_prompt"], engine="f-string")
        },
    )
    started = time.perf_counter()
    trainer.fit(PeerRoomAgent(), train_dataset=train, val_dataset=val)
    minutes = (time.perf_counter() - started) / 60
    rollouts = asyncio.run(store.query_rollouts())
    result = {
        "system": "peer agentlightning==0.3.0 APO",
        "seed": args.seed,
        "best_val": algorithm._history_best_score,  # the peer keeps it on a private attribute
        "best_prompts": {"system_prompt": algorithm.get_best_prompt().template, "request_prompt": "{request}"},
        "rollouts": len(rollouts),
        "optimizer_calls": calls["n"],
        "optimizer_tokens": calls["tokens"],
        "minutes": minutes,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
