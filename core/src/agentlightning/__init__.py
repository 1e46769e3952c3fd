"""Agent Lightning: train any AI agent with RL, prompt optimization and fine-tuning.

``import agentlightning as agl`` gives the public API of the 0.3 line (minus the v0.1 stack).
Names are imported on first use (PEP 562), so ``import agentlightning`` and the ``agl`` CLI stay
fast and a plugin module can import ``agentlightning`` without pulling in the tracer or the store.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, List

from .hookspecs import hookimpl as hookimpl

try:
    __version__ = version("agentlightning")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

# Submodules whose ``__all__`` make up the top-level API, searched in this order on first use.
_SUBMODULES = (
    "types",
    "litagent",
    "emitter",
    "store",
    "tracer",
    "runner",
    "trainer",
    "algorithm",
    "adapter",
    "execution",
    "errors",
    "env_var",
)
_EXTRA = {
    "reward": "emitter",  # the deprecated decorator, not the deprecated agentlightning.reward module
    "setup_logging": "logging",
    "setup_module_logging": "logging",
    "configure_logger": "logging",
    "lightning_cli": "config",
    "PluginInfo": "plugins",
    "list_plugins": "plugins",
    "LLMProxy": "proxy",
}


# The v0.1 client-server stack of 0.3 is not carried over; its names say what replaced them.
_REMOVED = {
    "AgentLightningClient": "use LightningStoreClient (a store over HTTP)",
    "AgentLightningServer": "serve a store with LightningStoreServer or `agl store serve`",
    "DevTaskLoader": "use Trainer.dev(agent, dataset)",
    "LegacyAgentRunner": "use LitAgentRunner",
    "Task": "rollouts replaced tasks: see Rollout / EnqueueRolloutRequest",
    "TaskInput": "rollouts replaced tasks: a rollout's input is any JSON value",
    "TaskIfAny": "use LightningStore.dequeue_rollout (None when the queue is empty)",
    "RolloutLegacy": "use Rollout, and the store's spans of it",
    "RolloutRawResultLegacy": "use RolloutRawResult",
}


def _public_names() -> List[str]:
    names = ["hookimpl", "__version__", *(name for name in _EXTRA if name != "reward")]
    for module in _SUBMODULES:
        names.extend(importlib.import_module(f"agentlightning.{module}").__all__)
    return names


def __getattr__(name: str) -> Any:
    if name == "__all__":  # `from agentlightning import *` imports everything, once
        value: Any = _public_names()
    elif name in _EXTRA:
        value = getattr(importlib.import_module(f"agentlightning.{_EXTRA[name]}"), name)
    elif name in _REMOVED:
        raise AttributeError(f"agentlightning.{name} was part of the v0.1 API, which is gone: {_REMOVED[name]}")
    elif name.startswith("_") or importlib.util.find_spec(f"agentlightning.{name}") is not None:
        # a submodule (`from agentlightning import plugins`): the import system loads it itself
        raise AttributeError(f"module 'agentlightning' has no attribute {name!r}")
    else:
        for module_name in _SUBMODULES:
            module = importlib.import_module(f"agentlightning.{module_name}")
            if name in module.__all__:
                value = getattr(module, name)
                break
        else:
            raise AttributeError(f"module 'agentlightning' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_public_names()))


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from .adapter import *  # noqa: F403
    from .algorithm import *  # noqa: F403
    from .config import lightning_cli  # noqa: F401
    from .emitter import *  # noqa: F403
    from .env_var import *  # noqa: F403
    from .errors import *  # noqa: F403
    from .execution import *  # noqa: F403
    from .litagent import *  # noqa: F403
    from .logging import configure_logger, setup_logging, setup_module_logging  # noqa: F401
    from .plugins import PluginInfo, list_plugins  # noqa: F401
    from .runner import *  # noqa: F403
    from .store import *  # noqa: F403
    from .tracer import *  # noqa: F403
    from .trainer import *  # noqa: F403
    from .types import *  # noqa: F403
