"""The store client's transport: one aiohttp session (keep-alive connection pool) per event loop.

A thin layer so that the client deals in bytes and status codes, and in one error type for
everything that is the network's fault (refused, reset, timed out), which it may retry.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Dict, Optional

import aiohttp

__all__ = ["HttpPool", "HttpResponse", "TransportError"]


class TransportError(ConnectionError):
    """The request could not be sent or its answer could not be read (connection refused, reset, timeout)."""


@dataclass
class HttpResponse:
    status: int
    headers: Dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpPool:
    """Pooled connections to one ``http(s)://host:port[/prefix]`` for the event loop it is used on."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Dict[str, str],
        connect_timeout: float,
        max_connections: int,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json", **headers}
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._tls = tls
        self._session: Optional[aiohttp.ClientSession] = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._tls if self._tls else True)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, auto_decompress=True, raise_for_status=False
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Optional[bytes] = None,
        params: Optional[Dict[str, str]] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: float,
    ) -> HttpResponse:
        limits = aiohttp.ClientTimeout(total=timeout, connect=self._connect_timeout)
        try:
            async with self._get_session().request(
                method, self.base_url + path, data=body, params=params, headers=headers, timeout=limits
            ) as response:
                content = await response.read()
                return HttpResponse(status=response.status, headers=dict(response.headers), body=content)
        except asyncio.TimeoutError:
            raise TransportError(f"no answer from {self.base_url} within {timeout:g} s") from None
        except aiohttp.ClientError as exc:  # refused, reset, disconnected, malformed answer
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the pooled connections, on the pool's own loop."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def close(self) -> None:
        """Schedule :meth:`aclose` (call on the pool's own loop, e.g. with ``call_soon_threadsafe``)."""
        asyncio.ensure_future(self.aclose())
