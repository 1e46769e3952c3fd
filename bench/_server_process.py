"""A store server in its own process, driven over a line protocol on its stdin/stdout.

Shared by ``http_bench.py`` (this project) and ``peer_http_bench.py`` (the peer); like
``_workload.py`` it imports nothing from ``agentlightning``, so both sides run the same code.

The benchmark process starts one server process per system and keeps it for the whole
measurement: importing a server stack takes seconds (more than ten for the peer), and every run
of the workload needs a fresh, empty store. So the server process waits for commands:

* ``open``: open a fresh store, serve it on a free loopback port, answer ``url http://127.0.0.1:PORT``;
* ``close``: stop that server, drop (or delete) its store, answer ``closed``;
* end of input (the benchmark closed the pipe, finished or died): close what is open and exit.

Every answer line starts with :data:`TAG` so that anything a library prints on stdout is skipped.
Both sides are bounded in time: the benchmark waits at most ``timeout`` seconds for each answer,
and the server process exits on its own after ``--max-seconds``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["TAG", "ServerProcess", "serve_commands", "exit_after"]

TAG = "@@agl-bench"


class ServerProcess:
    """The benchmark's handle on a server process; a context manager that always ends the process."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.timeout = timeout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the server's errors show up in the benchmark's stderr
            text=True,
            bufsize=1,
            env=env,
            cwd=cwd,
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        try:
            self._expect("ready", self.timeout)
        except BaseException:
            self.shutdown()
            raise

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith(TAG + " "):
                self._lines.put(line[len(TAG) + 1 :].strip())
        self._lines.put(None)

    def _expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the server process gave no {word!r} within {timeout:g} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=10)
                raise RuntimeError(f"the server process exited (code {code}) before answering {word!r}")
            answer, _, rest = line.partition(" ")
            if answer == "error":
                raise RuntimeError(f"the server process failed: {rest}")
            if answer == word:
                return rest

    def _send(self, command: str) -> None:
        if self.proc.stdin is None or self.proc.poll() is not None:
            raise RuntimeError(f"the server process is gone (code {self.proc.returncode})")
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def open(self) -> str:
        """Serve a fresh store; return its base URL."""
        self._send("open")
        return self._expect("url", self.timeout)

    def close(self) -> None:
        """Stop serving the current store and drop it (nothing to do once the process is gone: the error
        that ended it, or that it caused, is the one to report)."""
        if self.proc.poll() is not None:
            return
        self._send("close")
        self._expect("closed", self.timeout)

    def shutdown(self) -> None:
        """End the process: close its stdin (it exits by itself), else terminate, else kill."""
        proc = self.proc
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        elif proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _answer(*words: str) -> None:
    sys.stdout.write(" ".join((TAG, *words)) + "\n")
    sys.stdout.flush()


def exit_after(seconds: float) -> None:
    """Make this (server) process exit after ``seconds`` whatever it is doing: a bound on its lifetime."""

    def watchdog() -> None:
        time.sleep(seconds)
        sys.stderr.write(f"server process: exiting after its limit of {seconds:g} s\n")
        sys.stderr.flush()
        os._exit(3)

    threading.Thread(target=watchdog, name="agl-bench-watchdog", daemon=True).start()


async def stdin_closed() -> None:
    """Return once stdin reaches its end: the benchmark closed it, finished or died.

    Read in a daemon thread, which never keeps the process alive.
    """
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def read() -> None:
        try:
            for _ in sys.stdin:
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(closed.set)

    threading.Thread(target=read, name="agl-bench-stdin", daemon=True).start()
    await closed.wait()


async def serve_commands(open_store: Callable[[], Awaitable[str]], close_store: Callable[[], Awaitable[None]]) -> None:
    """The server process's side: answer ``open``/``close`` commands from stdin until it ends.

    ``open_store()`` serves a fresh store and returns its URL; ``close_store()`` stops it. Runs in the
    event loop that the server itself may share (the peer's server runs as a task in it), so stdin is
    read in a daemon thread.
    """
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:  # a daemon thread: never keeps the process alive
        try:
            for text in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, text)
            loop.call_soon_threadsafe(commands.put_nowait, "")
        except (RuntimeError, ValueError, OSError):  # the loop or stdin is already closed: exiting anyway
            pass

    threading.Thread(target=read_stdin, name="agl-bench-commands", daemon=True).start()
    is_open = False
    _answer("ready", str(os.getpid()))
    try:
        while True:
            line = await commands.get()
            if not line:
                return
            command = line.strip()
            try:
                if command == "open":
                    if is_open:
                        await close_store()
                        is_open = False
                    url = await open_store()
                    is_open = True
                    _answer("url", url)
                elif command == "close":
                    if is_open:
                        await close_store()
                        is_open = False
                    _answer("closed")
                elif command:
                    _answer("error", f"unknown command {command!r}")
            except Exception as exc:  # reported to the benchmark, which stops
                _answer("error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
    finally:
        if is_open:
            await close_store()
