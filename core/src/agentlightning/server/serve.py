"""Running the store server with uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import asyncio
import gc
import importlib
import ipaddress
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from agentlightning.errors import AgentLightningError, InsecureBindError
from agentlightning.utils.aio import run_sync

if TYPE_CHECKING:
    from pathlib import Path

    import uvicorn

    from agentlightning.store.base import LightningStore

    from .app import StoreApp

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_WAIT_SECONDS",
    "ServerDependencyError",
    "StoreServer",
    "check_bind_address",
    "tune_gc_for_serving",
    "import_server_dependencies",
    "is_loopback_host",
]


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4747
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_WAIT_SECONDS = 30.0
INSTALL_HINT = 'pip install "agentlightning[server]"'


class ServerDependencyError(AgentLightningError, ImportError):
    """The store server's optional dependencies are not installed."""


def import_server_dependencies() -> None:
    """Import what the server needs, or raise :class:`ServerDependencyError` with the install hint."""
    missing: List[str] = []
    for module, dist in (("fastapi", "fastapi"), ("uvicorn", "uvicorn")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise ServerDependencyError(
            f"the store server needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}"
        )


# Young-generation size for a serving process: the default (700) makes the collector run every few
# requests and, as the store's data grows, sweep all of it again and again (a third of a busy
# server's time). Cycles are still collected, in larger steps.
SERVING_GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc_for_serving() -> None:
    """Tune the garbage collector of a process that only serves the store (``agl store serve``): what is
    alive now is frozen, and young collections run every 50,000 allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` names only loopback addresses (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False  # "" binds every interface
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {str(info[4][0]) for info in infos}
    try:
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except ValueError:
        return False


def check_bind_address(host: str, token: Optional[str]) -> None:
    """Refuse to listen beyond loopback without a token: anyone reaching the port could read and change the store."""
    if token:
        return
    if not is_loopback_host(host):
        raise InsecureBindError(
            f"refusing to listen on {host or 'every interface'!r} without a token: anyone who can reach the port "
            "could read and change the store. Give a token (--token or the AGL_STORE_TOKEN environment variable; "
            "clients send the same AGL_STORE_TOKEN) or listen on 127.0.0.1."
        )


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


class StoreServer:
    """Serves ``store`` over HTTP on ``host:port`` (0: a free port); ``token`` is required off loopback.
    The store is closed by :meth:`stop` only with ``close_store=True``. ``with StoreServer(store, port=0) as s:``
    serves from a thread."""

    def __init__(
        self,
        store: "LightningStore",
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: Optional[str] = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        log_level: str = "warning",
        access_log: bool = False,
        close_store: bool = False,
        cors_allow_origins: Sequence[str] = (),
        run_dir: Optional["Path"] = None,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {port!r}")
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
        if not max_wait_seconds > 0:
            raise ValueError(f"max_wait_seconds must be > 0, got {max_wait_seconds!r}")
        check_bind_address(host, token)
        import_server_dependencies()
        self.store = store
        self.host = host
        self.port = port
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_wait_seconds = max_wait_seconds
        self.log_level = log_level
        self.access_log = access_log
        self.close_store = close_store
        self.cors_allow_origins = list(cors_allow_origins)
        self.run_dir = run_dir
        self.app: Optional["StoreApp"] = None
        self._socket: Optional[socket.socket] = None
        self._server: Optional["uvicorn.Server"] = None
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._error: Optional[BaseException] = None

    # ------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL for clients, e.g. ``http://127.0.0.1:4747`` (the port actually bound once started)."""
        host = self.host or "0.0.0.0"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _build(self) -> "uvicorn.Server":
        import uvicorn

        from .app import create_app

        self.app = create_app(
            self.store,
            token=self.token,
            max_body_bytes=self.max_body_bytes,
            max_wait_seconds=self.max_wait_seconds,
            run_dir=self.run_dir,
        )
        app: Any = self.app
        if self.cors_allow_origins:
            from starlette.middleware.cors import CORSMiddleware

            app = CORSMiddleware(app, allow_origins=self.cors_allow_origins, allow_methods=["*"], allow_headers=["*"])
        self._socket = _bind(self.host, self.port)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level=self.log_level,
            access_log=self.access_log,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,
        )
        return _make_uvicorn_server(config)

    def serve_forever(self, ready: Optional[Callable[["StoreServer"], None]] = None) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn's handlers), then return.

        ``ready(server)`` is called once the port is bound (``server.url`` is final), before serving."""
        server = self._server = self._build()
        assert self._socket is not None
        if ready is not None:
            ready(self)
        try:
            server.run(sockets=[self._socket])
        finally:
            self._socket.close()
            self._server = None
            if self.close_store:
                run_sync(self.store.close())

    def start(self, timeout: float = 30.0) -> "StoreServer":
        """Serve from a background thread; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this StoreServer is already started")
        server = self._server = self._build()
        sockets: List[Any] = [self._socket]
        self._error = None

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(server.serve(sockets=sockets))
            except BaseException as exc:  # reported by start() or stop()
                self._error = exc
            finally:
                try:
                    if self.close_store and server.started:
                        loop.run_until_complete(self.store.close())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=run, name=f"agl-store-server:{self.port}", daemon=True)
        self._thread.start()
        waited = 0.0
        while not server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError(f"the store server failed to start: {self._error!r}")
            if waited > timeout:
                self.stop()
                raise TimeoutError(f"the store server did not start within {timeout} s")
            self._thread.join(0.005)
            waited += 0.005
        return self

    def stop(self, timeout: float = 30.0, *, wait: bool = True) -> None:
        """Stop a server started with :meth:`start` (open requests get a moment to finish).

        ``wait=False`` returns at once; the server thread finishes (and closes the store, with
        ``close_store=True``) in the background, within about 0.1 s."""
        server, thread, loop = self._server, self._thread, self._loop
        if server is None or thread is None:
            return
        server.should_exit = True
        wake = getattr(server, "wake", None)
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake)
            except RuntimeError:  # the loop already closed
                pass
        if not wait:
            self._server = self._thread = self._loop = self._socket = None
            return
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._server = None
        self._thread = None
        self._loop = None

    def __enter__(self) -> "StoreServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _make_uvicorn_server(config: "uvicorn.Config") -> "uvicorn.Server":
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn's server, stopping as soon as asked instead of on its next 0.1 s tick."""

        _event: Optional[asyncio.Event] = None

        def wake(self) -> None:
            if self._event is not None:
                self._event.set()

        async def main_loop(self) -> None:
            self._event = asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 1) % 864000
                try:
                    await asyncio.wait_for(self._event.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass

    return _Server(config)
