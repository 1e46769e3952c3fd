"""``agl proxy``: run the LLM proxy that records every call with exact token ids into a store."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any, List, Optional

from agentlightning.cli import CLIError

__all__ = ["DEFAULT_PROXY_PORT", "add_parser", "parse_backend", "run_proxy"]

DEFAULT_PROXY_PORT = 4750


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "proxy",
        help="Run the LLM proxy that records LLM calls with exact token ids.",
        description=(
            "An OpenAI-compatible proxy. Agents use http://HOST:PORT/rollout/ROLLOUT_ID/attempt/ATTEMPT_ID/v1 as "
            "their base_url; every call is forwarded to a backend and stored as a span of that attempt in --store, "
            "with the request, the response, prompt and completion token ids, logprobs, usage and latency. "
            "Streamed calls are relayed chunk by chunk. Stop with Ctrl-C."
        ),
    )
    parser.add_argument(
        "--backend",
        action="append",
        required=True,
        metavar="[MODEL=]URL",
        help="An OpenAI-compatible base URL to forward to, e.g. http://127.0.0.1:8000/v1. Prefix MODEL= to send "
        "only that model there (repeat --backend for several; several for one model are used in turn).",
    )
    parser.add_argument(
        "--store",
        default="sqlite:///agl_store.db",
        metavar="URI",
        help="Where spans go: sqlite:///path.db (default: sqlite:///agl_store.db) or the URL of a store server "
        "(http://127.0.0.1:4747).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1).")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PROXY_PORT, help=f"Port (default: {DEFAULT_PROXY_PORT}; 0: any free)."
    )
    parser.add_argument(
        "--token-ids",
        action="store_true",
        help="Ask the backends for token ids and logprobs (vLLM's return_token_ids). agl serve-model always "
        "returns them; OpenAI's own API rejects the parameter.",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="NAME_OR_PATH",
        help="Hugging Face tokenizer of the served model: computes token ids for backends that return none (marked "
        "as re-tokenized) and reports drift where the backend's ids differ. Needs agentlightning-embedded.",
    )
    parser.add_argument("--api-key", default=None, help="API key sent to the backends (default: the client's).")
    parser.set_defaults(handler=run_proxy)


def parse_backend(spec: str, *, token_ids: bool, tokenizer: Optional[str], api_key: Optional[str]) -> Any:
    """A :class:`~agentlightning.proxy.ProxyBackend` from ``[MODEL=]URL``."""
    from agentlightning.proxy import ProxyBackend

    model, _, url = spec.partition("=") if "=" in spec.split("://", 1)[0] else ("", "", spec)
    make = ProxyBackend.vllm if token_ids else ProxyBackend  # vLLM's switches ask for token ids and logprobs
    try:
        return make(url, models=[model] if model else None, tokenizer=tokenizer, api_key=api_key)
    except LookupError as exc:  # no plugin registers the tokenizer
        raise CLIError(f"--tokenizer: {exc}") from exc
    except ValueError as exc:
        raise CLIError(f"bad --backend {spec!r}: {exc}") from exc


async def _serve(proxy: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await proxy.start()
    print(_banner(proxy), flush=True)
    try:
        await stop.wait()
    finally:
        await proxy.stop()
        await proxy.store.close()
        stats = proxy.stats.as_dict()
        print(f"stopped after {stats['calls']} call(s); spans not stored: {stats['spans_pending']}", file=sys.stderr)


def _banner(proxy: Any) -> str:
    lines = [
        "Agent Lightning LLM proxy",
        f"  listening:  {proxy.url}",
        *(f"  backend:    {b.base_url}  models: {', '.join(b.models) if b.models else 'any'}" for b in proxy.backends),
        "Point an agent's OpenAI client at one attempt:",
        f"  OpenAI(base_url='{proxy.url}/rollout/<rollout_id>/attempt/<attempt_id>/v1', api_key='...')",
        f"Statistics (calls, token-id sources, drift): {proxy.url}/v1/agl/proxy/stats",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def run_proxy(args: argparse.Namespace) -> int:
    from agentlightning.errors import UnknownStoreURIError
    from agentlightning.proxy import LLMProxy
    from agentlightning.store import open_store

    backends: List[Any] = [
        parse_backend(spec, token_ids=args.token_ids, tokenizer=args.tokenizer, api_key=args.api_key)
        for spec in args.backend
    ]
    try:
        store = open_store(args.store)
    except (UnknownStoreURIError, ValueError, OSError) as exc:
        raise CLIError(f"cannot open store {args.store!r}: {exc}") from exc
    proxy = LLMProxy(store, backends, host=args.host, port=args.port)
    try:
        asyncio.run(_serve(proxy))
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    return 0
