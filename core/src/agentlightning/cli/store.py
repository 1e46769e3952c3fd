"""``agl store ...``: commands that work on a LightningStore chosen by URI.

* ``agl store stats URI``: print a store's statistics (read-only).
* ``agl store serve --store URI``: serve a store over HTTP (REST API + OTLP trace ingest).
* ``agl store [--port N --host H --cors-origin O ...]``: the 0.3 form, serving an in-memory store.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agentlightning.cli import CLIError

__all__ = ["add_parser", "open_read_only", "read_only_uri", "read_statistics", "run_serve", "run_stats"]

URI_HELP = "Store URI, for example sqlite:///path/to/store.db or memory://."


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "store",
        help="Inspect or serve a LightningStore.",
        description="Commands that open a LightningStore from its URI.",
    )

    from agentlightning.server.serve import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT_SECONDS, DEFAULT_PORT

    def add_listening_options(group: Any, host_help: str, port_help: str) -> None:
        group.add_argument(
            "--host", default=DEFAULT_HOST, help=f"Address to listen on (default: {DEFAULT_HOST}{host_help}"
        )
        group.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Port to listen on (default: {port_help}).")
        group.add_argument(
            "--cors-origin",
            action="append",
            default=None,
            metavar="ORIGIN",
            help="Let browser apps served from ORIGIN (e.g. http://localhost:5173) call the API; repeat for several.",
        )
        log_help = "Server log level (default: warning)."
        group.add_argument("--log-level", type=str.lower, default="warning", choices=LOG_LEVELS, help=log_help)

    # The 0.3 form: `agl store` with any of these options serves an in-memory store (bare `agl store`
    # prints this help instead of starting a server nobody asked for).
    legacy = parser.add_argument_group("serving an in-memory store (the 0.3 form: agl store --port N)")
    add_listening_options(legacy, ").", str(DEFAULT_PORT))
    legacy.add_argument("--backend", choices=["memory", "mongo"], default="memory", help="Only memory is available.")
    legacy.add_argument("--mongo-uri", default=None, help="Not available (there is no MongoDB backend).")
    legacy.add_argument("--n-workers", type=int, default=1, help="Accepted for 0.3 compatibility; one process serves.")
    legacy.add_argument("--tracker", nargs="*", default=None, help="Accepted for 0.3 compatibility; no effect.")
    legacy_defaults = {action.dest: action.default for action in legacy._group_actions}

    def serve_or_help(args: argparse.Namespace) -> int:
        if all(getattr(args, dest) == default for dest, default in legacy_defaults.items()):
            parser.print_help()
            return 2
        return run_legacy_serve(args)

    parser.set_defaults(handler=serve_or_help)
    store_commands = parser.add_subparsers(title="store commands", metavar="STORE_COMMAND")

    stats = store_commands.add_parser(
        "stats",
        help="Print a store's statistics.",
        description="Open the store at URI, print its statistics and close it. Nothing is written.",
    )
    stats.add_argument("uri", metavar="URI", help=URI_HELP)
    stats.add_argument("--json", action="store_true", help="Print the statistics as JSON instead of a table.")
    stats.set_defaults(handler=run_stats)

    serve = store_commands.add_parser(
        "serve",
        help="Serve a store over HTTP for runners in other processes and on other hosts.",
        description=(
            "Serve the store at --store over HTTP: every LightningStore operation as a REST API under /v1/agl "
            "(OpenAPI document at /openapi.json, browsable at /docs), and OpenTelemetry OTLP/HTTP trace ingest at "
            '/v1/traces when agentlightning-otlp is installed. Runners use it with store="http://HOST:PORT". '
            'Needs the server extra: pip install "agentlightning[server]". Stop with Ctrl-C.'
        ),
    )
    serve.add_argument(
        "--store",
        metavar="URI",
        default=DEFAULT_SERVE_STORE,
        help=f"The store to serve (default: {DEFAULT_SERVE_STORE}). {URI_HELP} A SQLite file keeps every "
        "acknowledged write across a restart; memory:// is gone when the server stops.",
    )
    on_any_other = ", this machine only). Listening on any other address (0.0.0.0, a LAN address) requires --token."
    add_listening_options(serve, on_any_other, f"{DEFAULT_PORT}; 0 picks a free port and prints it")
    serve.add_argument(
        "--token",
        default=None,
        help="Require 'Authorization: Bearer TOKEN' on every request (401 otherwise). Prefer the environment variable: "
        "a --token value is visible to other users in the process list. Default: the "
        "AGL_STORE_TOKEN environment variable, if set. Clients send the AGL_STORE_TOKEN of their environment.",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help=f"Largest request body accepted, in bytes, also after gzip decompression (default: {DEFAULT_MAX_BODY_BYTES}, "
        "32 MiB); larger requests get 413.",
    )
    serve.add_argument(
        "--max-wait-seconds",
        type=float,
        default=DEFAULT_MAX_WAIT_SECONDS,
        metavar="S",
        help=f"Longest time one wait_for_rollouts request is held (default: {DEFAULT_MAX_WAIT_SECONDS:g}); "
        "clients ask again until their own timeout, so any timeout works.",
    )
    serve.add_argument("--access-log", action="store_true", help="Log every request (one line each).")
    serve.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="A run folder whose metrics.jsonl the dashboard (served at / by agentlightning-dashboard) plots.",
    )
    serve.set_defaults(handler=run_serve)


DEFAULT_SERVE_STORE = "sqlite:///agl_store.db"
LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


def run_legacy_serve(args: argparse.Namespace) -> int:
    """``agl store --port N ...`` (0.3): serve a new in-memory store."""
    if args.backend == "mongo" or args.mongo_uri:
        raise CLIError(
            "there is no MongoDB backend; for a durable store run: agl store serve --store sqlite:///path/to/store.db"
        )
    if args.n_workers != 1 or args.tracker:
        print("agl store: --n-workers and --tracker have no effect here; one process serves", flush=True)
    from agentlightning.server.serve import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT_SECONDS

    serve_args = argparse.Namespace(**vars(args))
    serve_args.store, serve_args.token, serve_args.access_log = "memory://", None, False
    serve_args.max_body_bytes, serve_args.max_wait_seconds = DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAIT_SECONDS
    return run_serve(serve_args)


def read_only_uri(uri: str) -> str:
    """``uri`` with read-only access asked for where the backend supports it (``sqlite:`` gets ``mode=ro``).

    Read-only access never creates a missing file and works while another process writes the store.
    """
    parts = urlsplit(uri)
    if parts.scheme != "sqlite" or "mode" in parse_qs(parts.query):
        return uri
    # Appended as text: urlunsplit() would collapse the empty host of sqlite:////abs/path.db.
    base, hash_mark, fragment = uri.partition("#")
    separator = "&" if parts.query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}mode=ro{hash_mark}{fragment}"


def _open(uri: str, opening_uri: str) -> Any:
    """``open_store(opening_uri)``; an unknown scheme, a malformed URI or a bad path is a :class:`CLIError`."""
    from agentlightning.errors import UnknownStoreURIError
    from agentlightning.store import open_store

    try:
        return open_store(opening_uri)
    except UnknownStoreURIError as exc:
        raise CLIError(str(exc)) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise CLIError(f"cannot open store {uri!r}: {exc}") from exc


async def open_read_only(uri: str) -> Any:
    """The store at ``uri`` opened for reading (:func:`read_only_uri`); a bad URI or path is a :class:`CLIError`."""
    opened = _open(uri, read_only_uri(uri))
    try:
        return await opened if inspect.isawaitable(opened) else opened
    except (OSError, ValueError) as exc:  # a backend that opens asynchronously
        raise CLIError(f"cannot open store {uri!r}: {exc}") from exc


async def read_statistics(uri: str) -> dict[str, Any]:
    """Open the store at ``uri``, read its statistics and close it."""
    store = await open_read_only(uri)
    try:
        return dict(await store.statistics())
    finally:
        await store.close()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={val}" for key, val in sorted(value.items())) or "-"
    return str(value)


def run_stats(args: argparse.Namespace) -> int:
    stats = asyncio.run(read_statistics(args.uri))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True, default=str))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Statistics of {_without_password(args.uri)}")
    table.add_column("Statistic", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for key, value in stats.items():
        table.add_row(key, _format(value))
    Console().print(table)
    return 0


def _without_password(uri: str) -> str:
    """The URI as printed: a password in it (postgresql://user:secret@host/db) becomes ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _banner(server: Any, uri: str) -> str:
    from agentlightning.plugins import install_hint, registered

    url = server.url
    routes = registered("server_routes")

    def plugin_url(name: str, path: str) -> str:
        return f"{url}{path}" if name in routes else "not installed. " + install_hint("server_routes", name)

    token_note = (
        "token required: runners need AGL_STORE_TOKEN set to the same token"
        if server.token
        else "no token: only this machine can connect"
    )
    lines = [
        "Agent Lightning store server",
        f"  store:      {_without_password(uri)}",
        f"  listening:  {url}  ({token_note})",
        f"  REST API:   {url}/v1/agl   (OpenAPI: {url}/openapi.json, docs: {url}/docs)",
        f"  OTLP/HTTP:  {plugin_url('otlp', '/v1/traces')}",
        f"  dashboard:  {plugin_url('dashboard', '/')}",
        "Point runners at it:",
        f'  Trainer(store="{url}", ...)   or   agentlightning.store.open_store("{url}")',
    ]
    if server.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"  (from other hosts, use this machine's address instead of {url.split('//')[1].split(':')[0]})")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def run_serve(args: argparse.Namespace) -> int:
    import sys

    from agentlightning.env_var import LightningEnvVar, resolve_str_env_var
    from agentlightning.errors import InsecureBindError
    from agentlightning.server.serve import (
        ServerDependencyError,
        StoreServer,
        check_bind_address,
        import_server_dependencies,
        tune_gc_for_serving,
    )

    token = args.token or resolve_str_env_var(LightningEnvVar.AGL_STORE_TOKEN)
    uri: str = args.store
    if urlsplit(uri).scheme in ("http", "https"):
        raise CLIError(f"--store must be a local store (sqlite:///path.db or memory://), not another server: {uri!r}")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.max_body_bytes < 1:
        raise CLIError(f"--max-body-bytes must be positive, got {args.max_body_bytes}")
    if not args.max_wait_seconds > 0:
        raise CLIError(f"--max-wait-seconds must be positive, got {args.max_wait_seconds}")
    run_dir = getattr(args, "run_dir", None)  # the 0.3 form `agl store --port N` has no --run-dir
    if run_dir is not None and not run_dir.is_dir():
        raise CLIError(f"--run-dir {str(run_dir)!r} is not a folder")
    try:
        check_bind_address(args.host, token)  # before opening anything
        import_server_dependencies()
    except (InsecureBindError, ServerDependencyError) as exc:
        raise CLIError(str(exc)) from exc
    store = _open(uri, uri)
    server = StoreServer(
        store,
        cors_allow_origins=getattr(args, "cors_origin", None) or [],
        host=args.host,
        port=args.port,
        token=token,
        max_body_bytes=args.max_body_bytes,
        max_wait_seconds=args.max_wait_seconds,
        log_level=args.log_level,
        access_log=args.access_log,
        close_store=True,
        run_dir=run_dir,
    )

    def ready(running: Any) -> None:
        print(_banner(running, uri), flush=True)

    tune_gc_for_serving()  # this process only serves the store
    try:
        server.serve_forever(ready=ready)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after a graceful shutdown
        pass
    except OSError as exc:
        asyncio.run(store.close())
        raise CLIError(str(exc)) from exc
    print("store server stopped", file=sys.stderr, flush=True)
    return 0
