"""The Trainer and component resolution."""

from .build import build_component
from .trainer import Trainer

__all__ = ["Trainer", "build_component"]
