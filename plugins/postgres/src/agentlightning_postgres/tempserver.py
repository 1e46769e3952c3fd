"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` in a temporary folder, a free
loopback port, password login, removed when stopped.

>>> with TemporaryPostgres() as server:
...     store = open_store(server.uri)

As a command, it runs another command with ``AGL_TEST_POSTGRES_URI`` (or the variable named by
``--env``) set to the server's URI and stops the server afterwards (what the ``plugins/postgres`` and
``bench`` nox sessions do)::

    python -m agentlightning_postgres.tempserver pytest tests/core/store -k postgres
    python -m agentlightning_postgres.tempserver --env AGL_BENCH_POSTGRES_URI python bench/store_bench.py

PostgreSQL refuses to run as root: when this process is root, the server runs as the ``postgres``
user (``runuser``), which Debian's ``postgresql`` package creates. The binaries are looked up in
``$AGL_POSTGRES_BINDIR``, then ``pg_config --bindir``, then ``/usr/lib/postgresql/<newest>/bin``,
then ``PATH``.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import List, Optional, Sequence, Type

__all__ = ["TemporaryPostgres", "find_bindir", "URI_ENV_VAR"]

URI_ENV_VAR = "AGL_TEST_POSTGRES_URI"
SERVICE_USER = "postgres"


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; FileNotFoundError if none."""
    candidates: List[Path] = []
    if os.environ.get("AGL_POSTGRES_BINDIR"):
        candidates.append(Path(os.environ["AGL_POSTGRES_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            candidates.append(Path(out.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates.extend(v / "bin" for v in versions)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise FileNotFoundError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found; install Debian's `postgresql` package "
        "(apt-get install -y postgresql) or set AGL_POSTGRES_BINDIR"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryPostgres:
    """A PostgreSQL server of its own: started by :meth:`start`, deleted by :meth:`stop`.

    ``restart()`` and ``stop_server()``/``start_server()`` keep the data (to test clients riding out
    a server that goes away). ``fsync`` is off: the data only needs to survive the server process,
    not the machine.
    """

    def __init__(self, *, user: str = "agl", database: str = "agl", port: Optional[int] = None) -> None:
        self.user = user
        self.database = database
        self.password = secrets.token_hex(12)
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.bindir = find_bindir()
        self.folder: Optional[Path] = None
        self._run_as: Optional[str] = SERVICE_USER if os.geteuid() == 0 else None

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None, "the server was not started"
        return self.folder / "data"

    def _command(self, args: Sequence[str]) -> List[str]:
        if self._run_as is None:
            return list(args)
        return ["runuser", "-u", self._run_as, "--", *args]

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._command(args), capture_output=True, text=True)
        if result.returncode != 0:
            log = self.folder / "server.log" if self.folder else None
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                + (f"\nserver log:\n{tail}" if tail else "")
            )

    def start(self) -> "TemporaryPostgres":
        self.folder = Path(tempfile.mkdtemp(prefix="agl-postgres-"))
        if self._run_as is not None:
            try:
                entry = pwd.getpwnam(self._run_as)
            except KeyError:
                raise RuntimeError(
                    f"running as root, and there is no {self._run_as!r} user to run PostgreSQL as; "
                    "install Debian's `postgresql` package (it creates that user)"
                ) from None
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        password_file.chmod(0o600)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        self.start_server()
        # The superuser's own database exists as `postgres`; the store's is created here.
        if self.database != "postgres":
            self._psql(f'CREATE DATABASE "{self.database}"')
        return self

    def _psql(self, sql: str) -> None:
        env = {**os.environ, "PGPASSWORD": self.password}
        psql = self.bindir / "psql"
        args = [str(psql), "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", "postgres", "-qc", sql]
        result = subprocess.run(args, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")

    def start_server(self) -> None:
        """Start (or start again) the server on its port, with the data it has."""
        # Little WAL kept: a throwaway server needs no archive or replicas, and its folder stays small.
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -k {self.folder} "
            "-c fsync=off -c full_page_writes=off -c max_connections=300 "
            "-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=256MB -c min_wal_size=64MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.folder / "server.log") if self.folder else "server.log",
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (``mode``: smart, fast or immediate)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop_server()
        self.start_server()

    def stop(self) -> None:
        """Stop the server and delete its folder. Idempotent."""
        if self.folder is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self.stop_server("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command with a temporary server's URI in ``AGL_TEST_POSTGRES_URI``; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    variable = URI_ENV_VAR
    if args[:1] == ["--env"] and len(args) > 1:
        variable, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m agentlightning_postgres.tempserver [--env VARIABLE] COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with TemporaryPostgres() as server:
        print(f"temporary PostgreSQL server on {server.host}:{server.port} (binaries: {server.bindir})", flush=True)
        child = subprocess.Popen(args, env={**os.environ, variable: server.uri})
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


if __name__ == "__main__":
    sys.exit(main())
