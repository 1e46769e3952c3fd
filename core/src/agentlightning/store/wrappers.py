"""The 0.3 wrapper stores ``LightningStoreThreaded`` and ``LightningStoreServer``: every backend is
already thread and loop safe, so they forward calls; ``LightningStoreServer`` also serves the store."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .base import LightningStore, LightningStoreCapabilities

if TYPE_CHECKING:
    from agentlightning.server.serve import StoreServer

__all__ = ["DelegatingStore", "LightningStoreServer", "LightningStoreThreaded"]

logger = logging.getLogger(__name__)


def _forward(name: str) -> Callable[..., Any]:
    method = getattr(LightningStore, name)
    if inspect.iscoroutinefunction(method):

        async def forward_async(self: "DelegatingStore", *args: Any, **kwargs: Any) -> Any:
            return await getattr(self.store, name)(*args, **kwargs)

        forward: Callable[..., Any] = forward_async
    else:

        def forward_sync(self: "DelegatingStore", *args: Any, **kwargs: Any) -> Any:
            return getattr(self.store, name)(*args, **kwargs)

        forward = forward_sync
    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = method.__doc__
    forward.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return forward


class DelegatingStore(LightningStore):
    """A :class:`LightningStore` that forwards every store method to ``store``."""

    def __init__(self, store: LightningStore) -> None:
        if not isinstance(store, LightningStore):
            raise TypeError(f"expected a LightningStore to wrap, got {type(store).__name__}")
        self.store = store

    @property
    def capabilities(self) -> LightningStoreCapabilities:
        return self.store.capabilities

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"


# Every public method of the protocol (abstract or with a default) forwards to the wrapped store.
for _name, _member in vars(LightningStore).items():
    if not _name.startswith("_") and inspect.isfunction(_member):
        setattr(DelegatingStore, _name, _forward(_name))
DelegatingStore.__abstractmethods__ = frozenset()


class LightningStoreThreaded(DelegatingStore):
    """0.3's thread-safe facade. Backends are thread-safe themselves now, so it takes no lock (0.3
    held a thread lock across ``await``, which could stall an event loop) and only forwards."""

    @property
    def capabilities(self) -> LightningStoreCapabilities:
        return LightningStoreCapabilities(**{**self.store.capabilities, "thread_safe": True, "async_safe": True})


class LightningStoreServer(DelegatingStore):
    """Serve ``store`` over HTTP (``await server.start()``; clients use :attr:`endpoint`) and use it
    directly from this process. ``port=None`` is 0.3's 4747; the server always runs on a thread here
    (0.3's multi-process mode is not offered). Pickled, a started server arrives as a client of its endpoint.
    """

    def __init__(
        self,
        store: LightningStore,
        host: Optional[str] = None,
        port: Optional[int] = None,
        cors_allow_origins: Optional[Sequence[str]] = None,
        launch_mode: str = "thread",
        launcher_args: Any = None,
        n_workers: int = 1,
        tracker: Any = None,
    ) -> None:
        super().__init__(store)
        from agentlightning.server.serve import DEFAULT_HOST, DEFAULT_PORT

        if launch_mode not in ("thread", "asyncio", "mp"):
            raise ValueError(f"launch_mode must be 'thread', 'asyncio' or 'mp', got {launch_mode!r}")
        if n_workers != 1:
            logger.warning("LightningStoreServer(n_workers=%r): one server process is used", n_workers)
        if port is None:
            logger.warning("LightningStoreServer: no port given, using %d", DEFAULT_PORT)
        self.host = host or DEFAULT_HOST
        self.port = DEFAULT_PORT if port is None else port
        self.cors_allow_origins = list(cors_allow_origins or [])
        self.launch_mode = launch_mode
        self._server: Optional["StoreServer"] = None

    @property
    def endpoint(self) -> str:
        """``http://host:port`` of the server (the port bound, once started)."""
        if self._server is not None:
            return self._server.url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def otlp_traces_endpoint(self) -> str:
        return f"{self.endpoint}/v1/traces"

    @property
    def capabilities(self) -> LightningStoreCapabilities:
        # What the wrapped store offers, plus OTLP trace ingest at /v1/traces.
        return LightningStoreCapabilities(**{**self.store.capabilities, "otlp_traces": True})

    def _make_server(self) -> "StoreServer":
        from agentlightning.server.serve import StoreServer

        return StoreServer(self.store, host=self.host, port=self.port, cors_allow_origins=self.cors_allow_origins)

    async def start(self) -> None:
        """Start serving (from a background thread); returns once the server accepts connections."""
        import asyncio

        if self._server is None:
            server = self._make_server()
            await asyncio.to_thread(server.start)
            self._server = server
            self.port = server.port

    async def stop(self) -> None:
        """Stop serving. The wrapped store stays open: it belongs to the caller."""
        import asyncio

        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.stop)

    def run_forever(self) -> None:
        """Serve in this thread until interrupted (SIGINT/SIGTERM)."""
        server = self._make_server()
        server.serve_forever()

    def is_running(self) -> bool:
        return self._server is not None

    def __reduce__(self) -> Any:
        if self._server is None:
            raise TypeError("a LightningStoreServer can be sent to another process only once started")
        from .client import HttpLightningStore

        return (HttpLightningStore, (self.endpoint,))
