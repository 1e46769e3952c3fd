"""LLM proxy benchmark: the latency a proxy adds to each call, this project against the peer ``agentlightning==0.3.0``.

A fast local OpenAI-compatible backend (``agentlightning_testing.fake_openai.FakeOpenAIServer``)
runs in a process of its own; each proxy runs in another, pointed at it; the client here sends
chat completions one at a time over kept-alive connections and times each one from sending the
request to the last byte of the answer. Calls straight to the backend are interleaved with calls
through the proxy, in blocks, so that whatever drifts on the machine affects both alike. The added
latency of a proxy is its percentile (p50, p99) minus the same percentile of the direct calls
measured with it.

Systems: this project's proxy as ``agl proxy --store sqlite:///<tmp>/proxy-bench.db`` runs it (the
CLI in a process of its own), this project's ``LLMProxy`` on ``memory://`` (this script with
``--serve ours``), and 0.3's ``LLMProxy`` (``peer_proxy_server.py``, run with the peer's
interpreter). After the calls, each proxy's store is read back: the calls it recorded must be
the calls made, so that no proxy is timed while recording nothing. A last row, for reference, is
a bare aiohttp relay that records nothing (``--serve relay``): what the extra hop alone costs.

``nox -s bench_proxy`` creates the peer's environment and runs this script; by hand::

    python bench/proxy_bench.py --peer-python .nox/_peer-agentlightning-0.3.0/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import aiohttp
from _server_process import exit_after, stdin_closed

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEFAULT_PEER_PYTHON = ROOT / ".nox" / "_peer-agentlightning-0.3.0" / "bin" / "python"
RESULTS_DIR = BENCH_DIR / "results"
TAG = "@@agl-proxy-bench"  # marks the lines meant for the benchmark; the same in peer_proxy_server.py
MODEL = "fake-model"

# The target: this project's proxy adds at most this much to the median call.
TARGET_ADDED_P50_MS = 1.0

# One small chat completion, the same bytes for every system. It asks for token ids and logprobs,
# as a training proxy does on every call, so the backend does the same work with or without a proxy.
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What is two plus two?"},
    ],
    "max_tokens": 32,
    "temperature": 0.0,
    "return_token_ids": True,
    "logprobs": True,
}
HEADERS = {"Content-Type": "application/json"}

PEER_NAME = "peer agentlightning==0.3.0 LLMProxy (LiteLLM), in-memory store"
RELAY_NAME = "reference: bare aiohttp relay, records nothing"
OURS_NAMES = {
    "sqlite": "agentlightning (this project): agl proxy --store sqlite://",
    "memory": "agentlightning (this project): LLMProxy on memory://",
}


# ----------------------------------------------------------------------------------------------
# child processes
def _say(document: dict[str, Any]) -> None:
    sys.stdout.write(f"{TAG} {json.dumps(document)}\n")
    sys.stdout.flush()


class Child:
    """A server process of the benchmark; a context manager that always ends it.

    Its stdout is read in a thread (lines tagged with :data:`TAG` carry JSON for the benchmark);
    its stderr goes to a temporary file, shown when it fails. Stopping it closes its stdin (the
    benchmark's own server processes exit when it ends) or sends SIGINT (``agl proxy``'s Ctrl-C).
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.name = name
        # Owned by the child for its whole life and closed in __exit__, hence no with-block here.
        self._stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr_tail(self, chars: int = 3000) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-chars:]

    def _failure(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {what}; its stderr ends with:\n{self.stderr_tail()}")

    def expect(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first line of stdout that ``pattern`` matches (lines before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"printed no line matching {pattern.pattern!r} within {timeout:g} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise self._failure(f"exited (code {self.proc.wait(timeout=10)}) before printing {pattern.pattern!r}")
            match = pattern.search(line)
            if match is not None:
                return match

    def message(self, timeout: float) -> dict[str, Any]:
        """The next JSON document the process prints after :data:`TAG`."""
        document: dict[str, Any] = json.loads(self.expect(_TAGGED, timeout).group(1))
        return document

    def stop(self, *, interrupt: bool = False, timeout: float = 60.0) -> list[dict[str, Any]]:
        """End the process (close its stdin, or SIGINT); return the tagged documents it printed on the way."""
        proc = self.proc
        if proc.poll() is None:
            if interrupt:
                proc.send_signal(signal.SIGINT)
            self._close_stdin()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._close_stdin()
        self._reader.join(timeout=10)
        documents: list[dict[str, Any]] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            match = _TAGGED.search(line) if line is not None else None
            if match is not None:
                documents.append(json.loads(match.group(1)))
        return documents

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:  # it is gone already
                pass

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=15)
        self._stderr.close()


_TAGGED = re.compile("^" + re.escape(TAG) + r" (\{.*\})\s*$")
_LISTENING = re.compile(r"listening:\s+(http://\S+)")


def serve_backend() -> None:
    """The backend process: a FakeOpenAIServer answering with its default text until stdin ends."""
    from agentlightning_testing.fake_openai import FakeOpenAIServer

    server = FakeOpenAIServer().start()
    stop = threading.Event()

    def forget_requests() -> None:
        # The server keeps every request it receives for tests to inspect; nobody reads them here, and
        # an ever-longer list would make its garbage collections slower as the run goes on.
        while not stop.wait(2.0):
            server.reset()

    threading.Thread(target=forget_requests, name="proxy-bench-forget", daemon=True).start()
    try:
        _say({"base_url": server.base_url, "pid": os.getpid()})
        asyncio.run(stdin_closed())
    finally:
        stop.set()
        server.stop()


async def _recorded_calls(store: Any, rollout_ids: Sequence[str]) -> tuple[int, int]:
    """(spans stored, calls recorded: distinct (rollout, sequence id) pairs) over ``rollout_ids``."""
    spans = 0
    calls: set[tuple[str, int]] = set()
    for rollout_id in rollout_ids:
        for span in await store.query_spans(rollout_id):
            spans += 1
            calls.add((rollout_id, span.sequence_id))
    return spans, len(calls)


async def serve_ours(store_uri: str, backend: str, rollouts: int) -> None:
    """This project's proxy on ``store_uri`` in this process: start rollouts, serve until stdin ends, count."""
    from agentlightning.proxy import LLMProxy, ProxyBackend
    from agentlightning.store import open_store

    store = open_store(store_uri)
    try:
        started = [await store.start_rollout(input={"bench": "proxy", "index": i}) for i in range(rollouts)]
        proxy = LLMProxy(store, [ProxyBackend.vllm(backend)], host="127.0.0.1", port=0)
        await proxy.start()
        try:
            base_urls = [proxy.base_url_for(r.rollout_id, r.attempt.attempt_id) for r in started]
            _say({"base_urls": base_urls, "pid": os.getpid()})
            await stdin_closed()
        finally:
            await proxy.stop()  # stores any span still pending
        spans, calls = await _recorded_calls(store, [r.rollout_id for r in started])
        _say({"spans": spans, "calls_recorded": calls, "spans_pending": proxy.stats.spans_pending})
    finally:
        await store.close()


async def serve_relay(backend: str) -> None:
    """A reference, not a system: the least a Python proxy does. One aiohttp server relaying each call to
    the backend over a kept-alive aiohttp client (streams chunk by chunk), recording nothing. It shows
    what the extra hop alone costs on this machine."""
    from aiohttp import web

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(f"{backend}/chat/completions", data=body, headers=HEADERS) as upstream:
            if upstream.content_type != "text/event-stream":
                payload = await upstream.read()
                return web.Response(body=payload, status=upstream.status, content_type=upstream.content_type)
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", relay)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = int(runner.addresses[0][1])
        _say({"base_urls": [f"http://127.0.0.1:{port}/v1"], "pid": os.getpid()})
        await stdin_closed()
    finally:
        await runner.cleanup()
        await session.close()


# ----------------------------------------------------------------------------------------------
# measuring
@dataclass
class Pairing:
    """The latencies (ns) of one system's calls and of the direct calls interleaved with them."""

    direct_ns: list[int] = field(default_factory=list)
    proxied_ns: list[int] = field(default_factory=list)
    proxied_calls: int = 0  # every call made through the proxy, warm-up included (each one must be recorded)
    proxy_cpu_s: float | None = None  # CPU time the proxy's process spent over the timed blocks


async def _timed_call(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> int:
    """Send one request; return the nanoseconds from sending it to the last byte of its answer."""
    start = time.perf_counter_ns()
    async with session.post(url, data=body, headers=HEADERS) as response:
        payload = await response.read()
    elapsed = time.perf_counter_ns() - start
    if response.status != 200:
        raise RuntimeError(f"{url} answered {response.status}: {payload[:500]!r}")
    if stream and not payload.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"{url} ended a stream without [DONE]: {payload[-300:]!r}")
    return elapsed


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads) so far; None where /proc is missing.

    Unlike latency, it hardly depends on how busy the machine is: the figure to trust on a loaded one.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def measure_pairing(
    direct_url: str,
    proxied_urls: Sequence[str],
    *,
    calls: int,
    warmup: int,
    block: int,
    stream: bool,
    proxy_pid: int | None = None,
) -> Pairing:
    """``calls`` timed calls through the proxy and as many straight to the backend, after ``warmup`` of each.

    Calls are sequential and interleaved in blocks of ``block``: direct then proxied, then proxied then
    direct (so neither side always comes first). Successive proxied blocks use the next attempt's route.
    """
    body = json.dumps({**REQUEST, "stream": True} if stream else REQUEST).encode()
    direct = f"{direct_url}/chat/completions"
    routes = [f"{url}/chat/completions" for url in proxied_urls]
    pairing = Pairing()
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for i in range(warmup):  # opens the connections and warms every code path; not recorded
            await _timed_call(session, direct, body, stream)
            await _timed_call(session, routes[i % len(routes)], body, stream)
            pairing.proxied_calls += 1
        gc.collect()
        gc.disable()  # the client's own collections would land in random calls
        cpu_before = process_cpu_seconds(proxy_pid) if proxy_pid else None
        try:
            for index in range(math.ceil(calls / block)):
                size = min(block, calls - index * block)
                route = routes[index % len(routes)]
                order = ((direct, pairing.direct_ns), (route, pairing.proxied_ns))
                for url, sink in order if index % 2 == 0 else order[::-1]:
                    for _ in range(size):
                        sink.append(await _timed_call(session, url, body, stream))
                    if url == route:
                        pairing.proxied_calls += size
                gc.collect()  # between blocks, untimed
        finally:
            gc.enable()
        cpu_after = process_cpu_seconds(proxy_pid) if proxy_pid else None
        if cpu_before is not None and cpu_after is not None:
            pairing.proxy_cpu_s = cpu_after - cpu_before
    return pairing


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, interpolating between neighbours."""
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(samples_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(ns / 1e6 for ns in samples_ns)
    return {
        "calls": len(ordered),
        "p50_ms": _percentile(ordered, 50),
        "p90_ms": _percentile(ordered, 90),
        "p99_ms": _percentile(ordered, 99),
        "mean_ms": sum(ordered) / len(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


@dataclass(frozen=True)
class Plan:
    calls: int
    warmup: int
    block: int
    stream_calls: int
    rollouts: int
    time_limit: float


def measure_system(direct_url: str, proxied_urls: Sequence[str], plan: Plan, proxy_pid: int) -> dict[str, Any]:
    """Both modes (non-streamed, then streamed) against one running proxy (process ``proxy_pid``)."""

    async def both() -> dict[str, Any]:
        modes: dict[str, Any] = {}
        made = 0
        for mode, calls in (("whole", plan.calls), ("stream", plan.stream_calls)):
            if calls <= 0:
                continue
            pairing = await measure_pairing(
                direct_url,
                proxied_urls,
                calls=calls,
                warmup=min(plan.warmup, calls),
                block=plan.block,
                stream=mode == "stream",
                proxy_pid=proxy_pid,
            )
            made += pairing.proxied_calls
            direct, proxied = latency_stats(pairing.direct_ns), latency_stats(pairing.proxied_ns)
            modes[mode] = {
                "direct": direct,
                "proxied": proxied,
                "added_p50_ms": proxied["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": proxied["p99_ms"] - direct["p99_ms"],
                "added_mean_ms": proxied["mean_ms"] - direct["mean_ms"],
                # The proxy process's CPU time per timed call (it is idle during the direct blocks).
                "proxy_cpu_ms_per_call": None if pairing.proxy_cpu_s is None else pairing.proxy_cpu_s * 1e3 / calls,
            }
        return {"modes": modes, "calls_made": made}

    return asyncio.run(asyncio.wait_for(both(), timeout=plan.time_limit))


def _check_recorded(result: dict[str, Any], final: dict[str, Any]) -> None:
    result["spans_stored"] = final["spans"]
    result["calls_recorded"] = final["calls_recorded"]
    result["all_recorded"] = final["calls_recorded"] == result["calls_made"]


# ----------------------------------------------------------------------------------------------
# the systems
def run_ours_sqlite(backend_url: str, plan: Plan) -> dict[str, Any]:
    """``agl proxy --store sqlite:///<tmp>/proxy-bench.db`` in a process of its own, as a user runs it."""
    from agentlightning.store import SqliteLightningStore

    with tempfile.TemporaryDirectory(prefix="agl-proxy-bench-") as tmp:
        path = Path(tmp) / "proxy-bench.db"

        # The proxy process holds the file's writer lock while it runs: the rollouts are created first.
        async def create_rollouts() -> list[tuple[str, str]]:
            store = SqliteLightningStore(path)
            try:
                started = [
                    await store.start_rollout(input={"bench": "proxy", "index": i}) for i in range(plan.rollouts)
                ]
            finally:
                await store.close()
            return [(r.rollout_id, r.attempt.attempt_id) for r in started]

        attempts = asyncio.run(create_rollouts())
        argv = [sys.executable, "-m", "agentlightning.cli", "proxy", "--backend", backend_url]
        argv += ["--store", f"sqlite:///{path}", "--port", "0", "--token-ids"]
        with Child("agl proxy", argv) as child:
            url = child.expect(_LISTENING, timeout=120).group(1)
            proxied = [f"{url}/rollout/{rollout_id}/attempt/{attempt_id}/v1" for rollout_id, attempt_id in attempts]
            result = measure_system(backend_url, proxied, plan, child.proc.pid)
            child.stop(interrupt=True)  # Ctrl-C: it stores what is pending and releases the file
            if child.proc.returncode != 0:
                raise RuntimeError(f"agl proxy exited with code {child.proc.returncode}:\n{child.stderr_tail()}")

        async def count() -> tuple[int, int]:
            store = SqliteLightningStore(path)
            try:
                return await _recorded_calls(store, [rollout_id for rollout_id, _ in attempts])
            finally:
                await store.close()

        spans, calls = asyncio.run(count())
    _check_recorded(result, {"spans": spans, "calls_recorded": calls})
    return {"system": OURS_NAMES["sqlite"], "kind": "sqlite", **result}


def run_ours_memory(backend_url: str, plan: Plan) -> dict[str, Any]:
    """This project's ``LLMProxy`` on ``memory://`` in a process of its own (this script with ``--serve ours``)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "ours", "--store", "memory://"]
    argv += ["--backend", backend_url, f"--rollouts={plan.rollouts}", f"--time-limit={plan.time_limit + 120}"]
    with Child("our proxy on memory://", argv) as child:
        started = child.message(timeout=120)
        result = measure_system(backend_url, started["base_urls"], plan, child.proc.pid)
        finals = child.stop()
        if not finals:
            raise RuntimeError(f"our proxy on memory:// reported no span count:\n{child.stderr_tail()}")
    _check_recorded(result, finals[-1])
    return {"system": OURS_NAMES["memory"], "kind": "memory", **result}


def run_peer(peer_python: Path, backend_url: str, plan: Plan) -> dict[str, Any]:
    """0.3's ``LLMProxy`` in a process of its own, with the peer's interpreter (``peer_proxy_server.py``)."""
    if not peer_python.exists():
        raise RuntimeError(
            f"peer interpreter {peer_python} not found: run `nox -s bench_proxy` (it creates the peer's venv), "
            "pass --peer-python, or --skip-peer"
        )
    # The peer's venv must not see this project's package: drop our environment's paths.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    argv = [str(peer_python), str(BENCH_DIR / "peer_proxy_server.py"), "--backend", backend_url]
    argv += [f"--rollouts={plan.rollouts}", f"--time-limit={plan.time_limit + 180}"]
    with Child("the peer's proxy", argv, env=env) as child:
        started = child.message(timeout=180)  # 0.3 imports LiteLLM's proxy server: over ten seconds
        result = measure_system(backend_url, started["base_urls"], plan, child.proc.pid)
        finals = child.stop(timeout=90)  # it first waits for the spans of the last calls
        if not finals:
            raise RuntimeError(f"the peer's proxy reported no span count:\n{child.stderr_tail()}")
    _check_recorded(result, finals[-1])
    return {"system": PEER_NAME, "kind": "peer", **result}


def run_relay(backend_url: str, plan: Plan) -> dict[str, Any]:
    """The bare relay (this script with ``--serve relay``) in a process of its own."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "relay", "--backend", backend_url]
    argv.append(f"--time-limit={plan.time_limit + 120}")
    with Child("the bare relay", argv) as child:
        started = child.message(timeout=60)
        result = measure_system(backend_url, started["base_urls"], plan, child.proc.pid)
    return {"system": RELAY_NAME, "kind": "relay", **result}


# ----------------------------------------------------------------------------------------------
# output
def _ratio(peer_value: float | None, ours_value: float) -> str:
    """The peer's figure over ours, as ``12x`` or ``1.5x``."""
    if peer_value is None:
        return "-"
    if ours_value <= 0:  # an added latency within the noise of the direct calls: no meaningful ratio
        return "n/a"
    ratio = peer_value / ours_value
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def results_table(
    mode: str, title: str, peer: dict[str, Any] | None, ours: list[dict[str, Any]], reference: dict[str, Any] | None
) -> str:
    """One mode's figures: each system's percentiles, the interleaved direct calls', the added latency."""
    systems = ([peer] if peer else []) + ours + ([reference] if reference else [])
    width = max([len(s["system"]) for s in systems] + [6])
    header = (
        f"{'system':<{width}} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8} | {'direct':>6} {'direct':>6} | "
        f"{'added':>8} {'added':>8} | {'proxy CPU':>9} | {'peer/this':>23} | {'recorded':>11}  target"
    )
    header2 = (
        f"{'':<{width}} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>8} | {'p50':>6} {'p99':>6} | "
        f"{'p50':>8} {'p99':>8} | {'ms/call':>9} | {'p50':>7} {'p99':>7} {'CPU':>7} | {'calls':>11}"
    )
    rows = [title, header, header2, "-" * len(header)]
    peer_figures = peer["modes"].get(mode) if peer and "modes" in peer else None
    for system in systems:
        if "failed" in system:
            rows.append(f"{system['system']:<{width}} failed: {system['failed']}")
            continue
        figures = system["modes"].get(mode)
        if figures is None:
            continue
        proxied, direct = figures["proxied"], figures["direct"]
        compared = system in ours  # the peer's row is the base of the ratios; the relay records nothing
        cpu = figures.get("proxy_cpu_ms_per_call")
        p50_ratio = p99_ratio = cpu_ratio = target = ""
        if compared:
            p50_ratio = _ratio(peer_figures and peer_figures["added_p50_ms"], figures["added_p50_ms"])
            p99_ratio = _ratio(peer_figures and peer_figures["added_p99_ms"], figures["added_p99_ms"])
            peer_cpu = peer_figures.get("proxy_cpu_ms_per_call") if peer_figures else None
            cpu_ratio = _ratio(peer_cpu, cpu) if cpu is not None else "-"
            if mode == "whole":
                ok = figures["added_p50_ms"] <= TARGET_ADDED_P50_MS
                target = f"p50 <={TARGET_ADDED_P50_MS:g} ms: {'ok' if ok else 'ABOVE TARGET'}"
        recorded = f"{system['calls_recorded']}/{system['calls_made']}" if "calls_recorded" in system else "-"
        if "all_recorded" in system and not system["all_recorded"]:
            target = (target + "  " if target else "") + "CALLS NOT RECORDED"
        rows.append(
            f"{system['system']:<{width}} {proxied['p50_ms']:>8.3f} {proxied['p90_ms']:>8.3f} "
            f"{proxied['p99_ms']:>8.3f} {proxied['mean_ms']:>8.3f} | {direct['p50_ms']:>6.3f} {direct['p99_ms']:>6.3f} | "
            f"{figures['added_p50_ms']:>+8.3f} {figures['added_p99_ms']:>+8.3f} | "
            f"{'-' if cpu is None else f'{cpu:.3f}':>9} | {p50_ratio:>7} {p99_ratio:>7} {cpu_ratio:>7} | "
            f"{recorded:>11}  {target}"
        )
    return "\n".join(rows)


def write_json(json_arg: str, document: dict[str, Any]) -> None:
    """Write the run's figures (to ``json_arg``, or a timestamped file under ``bench/results``)."""
    path = Path(json_arg) if json_arg else RESULTS_DIR / f"proxy_bench-{document['time']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {path}")


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="timed non-streamed calls per system (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls of each kind first (default 200)")
    parser.add_argument("--block", type=int, default=50, help="calls in a row before switching direct/proxied")
    parser.add_argument(
        "--stream-calls", type=int, default=1000, help="timed streamed calls per system (default 1000; 0 skips)"
    )
    parser.add_argument(
        "--rollouts", type=int, default=20, help="attempts whose routes the proxied blocks take in turn"
    )
    parser.add_argument("--systems", default="sqlite,memory", help="this project's proxies: sqlite, memory")
    parser.add_argument("--peer-python", type=Path, default=DEFAULT_PEER_PYTHON, help="the peer venv's python")
    parser.add_argument("--skip-peer", action="store_true", help="measure this project only (no ratios)")
    parser.add_argument("--skip-relay", action="store_true", help="leave out the bare relay (the reference row)")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds one system's calls may take")
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="also write the results as JSON (default path: bench/results/proxy_bench-<time>.json)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when our p50 added latency is above target")
    # The benchmark's own server processes (this script again).
    parser.add_argument("--serve", choices=("backend", "ours", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--store", default="memory://", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        exit_after(args.time_limit)
        try:
            if args.serve == "backend":
                serve_backend()
            elif args.serve == "relay":
                asyncio.run(serve_relay(args.backend))
            else:
                asyncio.run(serve_ours(args.store, args.backend, args.rollouts))
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the benchmark reports it
            return 130
        return 0

    kinds = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(OURS_NAMES))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {sorted(OURS_NAMES)}")
    if args.calls < 1 or args.warmup < 0 or args.block < 1 or args.stream_calls < 0 or args.rollouts < 1:
        parser.error("--calls, --block and --rollouts must be >= 1; --warmup and --stream-calls >= 0")
    plan = Plan(args.calls, args.warmup, args.block, args.stream_calls, args.rollouts, args.time_limit)

    load_before = _load()
    print(f"load average (1, 5, 15 min) before: {load_before}", flush=True)
    peer: dict[str, Any] | None = None
    ours: list[dict[str, Any]] = []
    reference: dict[str, Any] | None = None
    backend_argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "backend"]
    backend_argv.append(f"--time-limit={3 * args.time_limit + 600}")
    with Child("the fake backend", backend_argv) as backend:
        backend_url: str = backend.message(timeout=60)["base_url"]
        print(f"fake backend at {backend_url}", flush=True)
        runners = {"sqlite": run_ours_sqlite, "memory": run_ours_memory}
        for kind in kinds:
            print(f"measuring {OURS_NAMES[kind]} ...", flush=True)
            ours.append(runners[kind](backend_url, plan))
        if not args.skip_peer:
            print(f"measuring the {PEER_NAME} ({args.peer_python}) ...", flush=True)
            try:
                peer = run_peer(args.peer_python, backend_url, plan)
            except Exception as exc:  # the peer's failure is reported in its row; ours are still shown
                reason = f"{type(exc).__name__}: {exc}"
                print(f"the peer failed: {reason}", file=sys.stderr)
                peer = {"system": PEER_NAME, "kind": "peer", "failed": reason.splitlines()[0]}
        if not args.skip_relay:
            print(f"measuring the {RELAY_NAME} ...", flush=True)
            reference = run_relay(backend_url, plan)
    load_after = _load()

    blocks = f"interleaved with as many direct calls in blocks of {plan.block}"
    print()
    print(
        results_table(
            "whole",
            f"non-streamed chat completions: {plan.calls} timed calls per system after {plan.warmup} warm-up, "
            f"sequential, {blocks}; latency to the last byte",
            peer,
            ours,
            reference,
        )
    )
    if plan.stream_calls:
        print()
        print(
            results_table(
                "stream",
                f"streamed chat completions: {plan.stream_calls} timed calls per system, {blocks}; "
                "time to the last byte",
                peer,
                ours,
                reference,
            )
        )
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}; {os.cpu_count()} CPUs")

    if args.json is not None:
        write_json(
            args.json,
            {
                "benchmark": "proxy",
                "time": datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
                "machine": {
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                },
                "workload": {
                    "request": REQUEST,
                    "calls": plan.calls,
                    "stream_calls": plan.stream_calls,
                    "warmup": plan.warmup,
                    "block": plan.block,
                    "rollouts": plan.rollouts,
                },
                "target": {"ours_added_p50_ms_at_most": TARGET_ADDED_P50_MS},
                "peer": peer,
                "ours": ours,
                "reference": reference,
            },
        )

    unrecorded = [s["system"] for s in ours if not s["all_recorded"]]
    if unrecorded:  # a proxy that does not record its calls is not the proxy we mean to time
        print(f"calls not recorded in the store: {', '.join(unrecorded)}", file=sys.stderr)
        return 1
    if args.check:
        above = [s["system"] for s in ours if s["modes"]["whole"]["added_p50_ms"] > TARGET_ADDED_P50_MS]
        if above:
            print(f"above target: {', '.join(above)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
