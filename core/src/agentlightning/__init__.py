"""Agent Lightning: train any AI agent with RL, prompt optimization and fine-tuning.

``import agentlightning as agl`` gives the public API of the 0.3 line (minus the v0.1 stack).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .adapter import *  # noqa: F401,F403
from .algorithm import *  # noqa: F401,F403
from .emitter import *  # noqa: F401,F403
from .env_var import *  # noqa: F401,F403
from .errors import *  # noqa: F401,F403
from .execution import *  # noqa: F401,F403
from .hookspecs import hookimpl
from .litagent import *  # noqa: F401,F403
from .logging import setup_logging
from .plugins import PluginInfo, list_plugins, resolve_algorithm
from .runner import *  # noqa: F401,F403
from .store import *  # noqa: F401,F403
from .tracer import *  # noqa: F401,F403
from .trainer import *  # noqa: F401,F403
from .types import *  # noqa: F401,F403

try:
    __version__ = version("agentlightning")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["hookimpl", "setup_logging", "PluginInfo", "list_plugins", "resolve_algorithm", "__version__"]
