"""Helpers of the Node.js agent tests: child processes whose output is read while they run, and the
store server plus the LLM proxy started the way a user starts them (`agl store serve`, `agl proxy`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

from agentlightning_testing.fake_openai import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "node_agent"
AGL = Path(sys.executable).with_name("agl")


class Process:
    """A child process whose output is collected by a thread (readable while it runs)."""

    def __init__(self, name: str, args: List[str], cwd: Path = ROOT) -> None:
        self.name = name
        self.lines: List[str] = []
        self.popen = subprocess.Popen(
            args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name} printed no line matching {pattern!r}:\n{self.output}")

    def stop(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self._reader.join(5)
        return code


def start_store_and_proxy(processes: List[Process], fake: FakeOpenAIServer, store_uri: str) -> Tuple[str, str]:
    """Start `agl store serve` and `agl proxy` (in front of ``fake``) on free ports; returns their URLs.

    The processes are appended to ``processes`` as they start, so the caller stops them whatever happens."""
    server = Process("store server", [str(AGL), "store", "serve", "--store", store_uri, "--port", "0"])
    processes.append(server)
    store_url = server.wait_for_line(r"listening:\s+(http://\S+)").group(1)
    proxy = Process(
        "proxy", [str(AGL), "proxy", "--backend", fake.base_url, "--store", store_url, "--port", "0", "--token-ids"]
    )
    processes.append(proxy)
    proxy_url = proxy.wait_for_line(r"listening:\s+(http://\S+)").group(1)
    return store_url, proxy_url
