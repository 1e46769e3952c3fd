"""The driver's side of a Ray run: an existing cluster by address (``ray start --head`` in a subprocess),
an address where nothing answers, Ray missing, and Ctrl-C. Nothing here initializes Ray in this process."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from agentlightning.errors import ComponentResolutionError
from agentlightning.trainer import Trainer
from agentlightning_ray import RayClusterUnreachableError

pytestmark = pytest.mark.timeout(300)

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> List[int]:
    """Every live process under ``pid`` (read from /proc)."""
    children: dict[int, List[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1]
    except (OSError, IndexError):
        return False
    return not state.startswith("Z")


def wait_until_gone(pids: List[int], timeout: float = 30.0) -> List[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    return left


def run_driver(
    script: str, tmp_path: Path, *args: str, env: Optional[Dict[str, str]] = None
) -> "subprocess.Popen[str]":
    """``script`` as the main module of a new Python process (its agents travel to the actors by value);
    ``env`` entries set to "" are removed from its environment."""
    path = tmp_path / "driver.py"
    path.write_text(textwrap.dedent(script))
    environ = {**os.environ, **(env or {})}
    environ = {name: value for name, value in environ.items() if value != "" or name not in (env or {})}
    return subprocess.Popen(
        [sys.executable, str(path), *args],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_that_does_not_answer_fails_fast_naming_it(scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{free_port()}"
    trainer = Trainer(store="memory://", strategy={"type": "ray", "address": address, "connect_timeout": 2})
    started = time.monotonic()
    with pytest.raises(RayClusterUnreachableError, match=f"Ray cluster at '{address}' does not answer") as info:
        trainer.dev(_noop_agent(), [1])
    assert time.monotonic() - started < 10
    assert info.value.address == address


def _noop_agent():  # type: ignore[no-untyped-def]
    from agentlightning.litagent import rollout

    @rollout
    def agent(task: int) -> float:
        return 1.0

    return agent


def test_without_ray_installed_the_error_says_what_to_install() -> None:
    script = """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        from agentlightning.trainer import Trainer
        try:
            Trainer(store="memory://", strategy="ray")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert "pip install agentlightning-ray" in result.stdout, result.stdout + result.stderr
    assert "needs Ray" in result.stdout


def test_an_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ComponentResolutionError, match="known names: .*processes.*ray"):
        Trainer(strategy="warp")


@pytest.fixture(scope="module")
def head_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """``ray start --head --block`` on a free port with token authentication, in a subprocess; stopped
    (with everything it started) after. Yields the address and the environment a driver needs."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="agl-ray-")  # short: Ray's socket paths must fit in 107 bytes
    token_file = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **auth},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    output = head.stdout.read() if head.stdout else ""
                    pytest.fail(f"ray start --head did not come up: {output}")
                time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", **auth}
    finally:
        everything = [head.pid, *descendants(head.pid)]
        head.send_signal(signal.SIGTERM)  # --block: ray start stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        for pid in wait_until_gone(everything, timeout=30):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


DRIVER = """
    import asyncio, os, sys
    import agentlightning as agl

    @agl.rollout
    def agent(task: float) -> None:
        agl.emit_reward({"value": float(task), "pid": float(os.getpid())}, primary_key="value")

    strategy = {"type": "ray", "address": sys.argv[1]}
    with agl.Trainer(store="memory://", strategy=strategy, n_runners=2) as trainer:
        trainer.dev(agent, [0.1, 0.2, 0.3, 0.4, 0.5])
        rollouts = asyncio.run(trainer.store.query_rollouts())
        print("statuses", sorted(r.status for r in rollouts))
        print("actors", len(trainer.strategy.actor_pids), "driver", os.getpid() in trainer.strategy.actor_pids)
"""


def test_runners_on_an_existing_cluster_by_address(head_node: Dict[str, str], tmp_path: Path) -> None:
    env = {"RAY_AUTH_MODE": head_node["RAY_AUTH_MODE"], "RAY_AUTH_TOKEN_PATH": head_node["RAY_AUTH_TOKEN_PATH"]}
    driver = run_driver(DRIVER, tmp_path, head_node["address"], env=env)
    output, _ = driver.communicate(timeout=240)
    assert driver.returncode == 0, output
    assert "statuses ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'succeeded']" in output, output
    assert "actors 2 driver False" in output, output


def test_a_driver_without_the_cluster_token_is_told_what_to_set(head_node: Dict[str, str], tmp_path: Path) -> None:
    env = {"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "no-token")}  # "" unsets
    driver = run_driver(DRIVER, tmp_path, head_node["address"], env=env)
    output, _ = driver.communicate(timeout=240)
    assert driver.returncode != 0
    assert f"RayClusterUnreachableError: the Ray cluster at '{head_node['address']}' does not answer" in output, output
    assert "set RAY_AUTH_MODE=token" in output, output


CTRL_C_DRIVER = """
    import os, sys, time
    from pathlib import Path
    import agentlightning as agl

    pid_dir = Path(sys.argv[1])

    @agl.rollout
    def agent(task: int) -> float:
        (pid_dir / str(os.getpid())).touch()
        time.sleep(300)
        return 1.0

    strategy = {"type": "ray", "num_cpus": 2, "init_options": {"include_dashboard": False}}
    with agl.Trainer(store="memory://", strategy=strategy, n_runners=2) as trainer:
        trainer.dev(agent, [1, 2, 3, 4])
"""


def test_ctrl_c_stops_the_driver_its_actors_and_its_local_cluster(tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    driver = run_driver(CTRL_C_DRIVER, tmp_path, str(pid_dir))
    try:
        deadline = time.monotonic() + 180
        while len(list(pid_dir.iterdir())) < 2:  # both actors are inside a rollout
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the actors never started their rollouts: {driver.communicate()[0]}")
            time.sleep(0.2)
        everything = descendants(driver.pid)  # Ray's processes for this run: GCS, raylet, workers
        actors = [int(p.name) for p in pid_dir.iterdir()]
        assert set(actors) <= set(everything)
        stopped = time.monotonic()
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=90)
        assert time.monotonic() - stopped < 60, output
        assert driver.returncode != 0  # interrupted, not finished
        assert "KeyboardInterrupt" in output
        assert wait_until_gone(everything) == [], output
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
