"""``agl dashboard --store URI``: watch a store in a browser, read-only, while a run writes it.

The page is the one ``agl store serve`` shows at ``/``. A SQLite store is opened read-only
(``?mode=ro``) and opened again whenever its file changes (at most once per ``--refresh`` seconds),
so the page follows a run another process writes; any other URI (``http://``) is read through.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from agentlightning.cli import CLIError
from agentlightning.cli.store import read_only_uri

__all__ = ["add_parser", "run_dashboard", "SqliteFollower"]

DEFAULT_PORT = 4748


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agentlightning.server.serve import DEFAULT_HOST

    parser = subparsers.add_parser(
        "dashboard",
        help="Watch a store (a training run) live in a browser.",
        description=(
            "Serve the dashboard for the store at --store: the run overview, rollouts, each rollout's spans, "
            "resources versions, workers and the run's metrics.jsonl. Nothing is written: a SQLite store is "
            "opened read-only and followed while a run writes it."
        ),
    )
    parser.add_argument("--store", metavar="URI", required=True, help="sqlite:///path/store.db, http://host:port, ...")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="The run folder whose metrics.jsonl is plotted (default: the SQLite file's folder when it holds one).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"Address to listen on (default: {DEFAULT_HOST}).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Port (default: {DEFAULT_PORT}; 0: any).")
    parser.add_argument(
        "--token",
        default=None,
        help="Require this bearer token (the page asks for it); needed beyond loopback. Default: AGL_STORE_TOKEN.",
    )
    parser.add_argument("--refresh", type=float, default=1.0, metavar="S", help="Reload a changed SQLite file (s).")
    parser.set_defaults(handler=run_dashboard)


def _sqlite_path(uri: str) -> Optional[Path]:
    parts = urlsplit(uri)
    if parts.scheme != "sqlite":
        return None
    path = unquote(parts.path)
    return Path(path[1:] if path.startswith("/") else path)


class SqliteFollower:
    """Opens the SQLite file again, read-only, when it changed, and hands the new store to the server.

    A read-only store is a snapshot taken when it opens; reopening is what makes a run's new rollouts
    and spans appear. A replaced store is closed 30 s later, once requests using it are done. Reopening
    a big store takes a while: the next check waits four times as long as the last reopening took, so
    following a run never keeps a core busy."""

    def __init__(self, path: Path, server: Any, interval: float) -> None:
        self.path = path
        self.server = server
        self.interval = interval
        self._stop = threading.Event()
        self._seen = self._signature()
        self._retired: List[Tuple[float, Any]] = []
        self._thread = threading.Thread(target=self._run, name="agl-dashboard-follow", daemon=True)

    def _signature(self) -> Tuple[Tuple[int, int], ...]:
        found: List[Tuple[int, int]] = []
        for suffix in ("", "-wal"):
            try:
                stat = Path(f"{self.path}{suffix}").stat()
                found.append((stat.st_mtime_ns, stat.st_size))
            except FileNotFoundError:
                found.append((0, 0))
        return tuple(found)

    def start(self) -> "SqliteFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following and close the stores it opened (the server closes the one it was given)."""
        self._stop.set()
        self._thread.join(5)
        current = [self.server.app.context.store] if self.server.app is not None else []
        for store in [s for _, s in self._retired] + current:
            if store is not self.server.store:
                _close(store)

    def _run(self) -> None:
        from agentlightning.store.sqlite import SqliteLightningStore

        pause = self.interval
        while not self._stop.wait(pause):
            pause = self.interval
            signature = self._signature()
            if signature != self._seen and self.server.app is not None:
                started = time.monotonic()
                try:
                    fresh = SqliteLightningStore(self.path, read_only=True)
                except Exception as exc:  # noqa: BLE001 - a file mid-checkpoint: try again next time
                    print(f"dashboard: could not reload {self.path}: {exc}", flush=True)
                    continue
                self._seen = signature
                self._retired.append((time.monotonic() + 30.0, self.server.app.context.store))
                self.server.app.context.store = fresh
                pause += 4 * (time.monotonic() - started)
            while self._retired and self._retired[0][0] < time.monotonic():
                store = self._retired.pop(0)[1]
                if store is not self.server.store:
                    _close(store)


def _close(store: Any) -> None:
    try:
        asyncio.run(store.close())
    except Exception as exc:  # noqa: BLE001 - closing a read-only snapshot: nothing to lose
        print(f"dashboard: closing a replaced store: {exc}", flush=True)


def run_dashboard(args: argparse.Namespace) -> int:
    from agentlightning.env_var import LightningEnvVar, resolve_str_env_var
    from agentlightning.errors import InsecureBindError, UnknownStoreURIError
    from agentlightning.server.serve import (
        ServerDependencyError,
        StoreServer,
        check_bind_address,
        import_server_dependencies,
    )
    from agentlightning.store import open_store

    token = args.token or resolve_str_env_var(LightningEnvVar.AGL_STORE_TOKEN)
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if not args.refresh > 0:
        raise CLIError(f"--refresh must be positive, got {args.refresh}")
    sqlite_path = _sqlite_path(args.store)
    run_dir: Optional[Path] = args.run_dir
    if run_dir is None and sqlite_path is not None and (sqlite_path.parent / "metrics.jsonl").exists():
        run_dir = sqlite_path.parent
    if run_dir is not None and not run_dir.is_dir():
        raise CLIError(f"--run-dir {str(run_dir)!r} is not a folder")
    try:
        check_bind_address(args.host, token)
        import_server_dependencies()
    except (InsecureBindError, ServerDependencyError) as exc:
        raise CLIError(str(exc)) from exc
    try:
        store = open_store(read_only_uri(args.store))
    except UnknownStoreURIError as exc:
        raise CLIError(str(exc)) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise CLIError(f"cannot open store {args.store!r}: {exc}") from exc
    server = StoreServer(store, host=args.host, port=args.port, token=token, close_store=True, run_dir=run_dir)
    follower: Optional[SqliteFollower] = None

    def ready(running: Any) -> None:
        nonlocal follower
        if sqlite_path is not None:
            follower = SqliteFollower(sqlite_path, running, args.refresh).start()
        note = "the page asks for the token" if token else "no token: only this machine can connect"
        print(f"Agent Lightning dashboard\n  store:      {args.store} (read-only)", flush=True)
        if run_dir is not None:
            print(f"  run folder: {run_dir}", flush=True)
        print(f"  open:       {running.url}/  ({note})\nPress Ctrl-C to stop.", flush=True)

    try:
        server.serve_forever(ready=ready)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        if follower is not None:
            follower.stop()
    return 0
