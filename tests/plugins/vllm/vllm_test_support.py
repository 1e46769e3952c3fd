"""Helpers shared by the vLLM backend tests and their fixtures."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from agentlightning_vllm import VLLMServer

# Real vLLM servers: a cold start of the tiny model takes about a minute on 2 cores, more when the
# machine is busy, on top of the test's own requests.
REAL_SERVER_TIMEOUT_S = 900
SERVED_NAME = "tiny"
LORA_NAME = "tiny-lora"
LORA_RANK = 8


@dataclass
class TinyModels:
    base: Path
    other: Path  # same architecture and tokenizer, other random weights
    lora: Path


@dataclass
class FakeVLLM:
    """Builds ``VLLMServer`` objects that launch the fake server, and reads what the fake recorded."""

    root: Path
    record_path: Path
    model_dir: Path

    def server(self, mode: str = "ok", reload: str = "ok", **kwargs: Any) -> VLLMServer:
        env = {
            "PYTHONPATH": str(self.root),
            "FAKE_VLLM_RECORD": str(self.record_path),
            "FAKE_VLLM_MODE": mode,
            "FAKE_VLLM_RELOAD": reload,
        }
        env.update(kwargs.pop("env", {}))
        kwargs.setdefault("startup_timeout", 30.0)
        kwargs.setdefault("stop_timeout", 5.0)
        kwargs.setdefault("log_path", self.record_path.with_suffix(".log"))
        return VLLMServer(self.model_dir, env=env, **kwargs)

    def events(self, kind: str | None = None) -> List[Dict[str, Any]]:
        if not self.record_path.exists():
            return []
        lines = self.record_path.read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [event for event in events if kind is None or event["event"] == kind]


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None
