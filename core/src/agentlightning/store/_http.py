"""A small HTTP/1.1 client on asyncio streams: keep-alive connections pooled per event loop.

The store client sends many small JSON requests to one server; a general-purpose client (httpx on
anyio) spends about a millisecond of CPU per request on this kind of machine, several times what
the request itself costs. This one does only what the store protocol needs: one request per
connection at a time, ``Content-Length`` bodies out, ``Content-Length``/chunked/until-close
bodies back, TLS through :mod:`ssl`.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

__all__ = ["HttpPool", "HttpResponse", "TransportError", "StaleConnection"]

_MAX_HEADER_BYTES = 64 * 1024


class TransportError(ConnectionError):
    """The request could not be sent or its answer could not be read (connection refused, reset, timeout)."""


class StaleConnection(TransportError):
    """A pooled connection turned out to be closed before any answer came."""


@dataclass
class HttpResponse:
    status: int
    headers: Dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_Connection = Tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _close(connection: _Connection) -> None:
    try:
        connection[1].close()
    except Exception:  # noqa: BLE001 - already broken; nothing to do
        pass


class HttpPool:
    """Connections to one ``http(s)://host:port[/prefix]`` for the event loop it is used on."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Dict[str, str],
        connect_timeout: float,
        max_connections: int,
        tls: Optional[ssl.SSLContext] = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.tls = tls if parts.scheme == "https" else None
        host_header = parts.netloc.rsplit("@", 1)[-1]
        fixed = {"Host": host_header, "Accept": "application/json", "Connection": "keep-alive", **headers}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self.connect_timeout = connect_timeout
        self._idle: List[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

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
        target = self.prefix + path + (f"?{urlencode(params, doseq=True)}" if params else "")
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed}"
        for key, value in (headers or {}).items():
            head += f"{key}: {value}\r\n"
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body or b'')}\r\n"
        raw = head.encode("latin-1") + b"\r\n" + (body or b"")
        async with self._slots:
            while True:
                connection, reused = await self._checkout()
                try:
                    response, keep_alive = await asyncio.wait_for(self._exchange(connection, raw), timeout)
                except StaleConnection:
                    _close(connection)
                    if reused:
                        continue  # the server had closed this idle connection; a fresh one
                    raise
                except asyncio.TimeoutError:
                    _close(connection)
                    raise TransportError(f"no answer from {self.host}:{self.port} within {timeout:g} s") from None
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    _close(connection)
                    raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                except BaseException:  # cancelled: the connection is mid-exchange, never reuse it
                    _close(connection)
                    raise
                if keep_alive and not self._closed:
                    self._idle.append(connection)
                else:
                    _close(connection)
                return response

    async def _checkout(self) -> Tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection[0].at_eof() or connection[1].is_closing():
                _close(connection)
                continue
            return connection, True
        try:
            opened = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise TransportError(
                f"cannot connect to {self.host}:{self.port} within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return opened, False

    async def _exchange(self, connection: _Connection, raw: bytes) -> Tuple[HttpResponse, bool]:
        reader, writer = connection
        try:
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise StaleConnection(f"connection to {self.host}:{self.port} closed before an answer") from None
            raise
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise StaleConnection(f"connection to {self.host}:{self.port} reset: {exc}") from None
        if len(head) > _MAX_HEADER_BYTES:
            raise ValueError("response headers too large")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest.split(" ", 1)[0])
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: List[bytes] = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()
            keep_alive = False
        return HttpResponse(status=status, headers=headers, body=body), keep_alive

    def close(self) -> None:
        """Close the idle connections; connections in use close when their request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)
