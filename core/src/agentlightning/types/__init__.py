"""Data types shared by every part of Agent Lightning."""

from .core import *  # noqa: F401,F403
from .core import __all__ as _core_all
from .resources import *  # noqa: F401,F403
from .resources import __all__ as _resources_all
from .tracer import *  # noqa: F401,F403
from .tracer import __all__ as _tracer_all

__all__ = [*_core_all, *_resources_all, *_tracer_all]
