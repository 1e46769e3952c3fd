"""Agent Lightning runners as Ray actors: ``Trainer(strategy="ray")``.

Importing this package does not import Ray; the strategy imports it when a run starts.
"""

from .strategy import RAY_INSTALL_HINT, RayClusterUnreachableError, RayExecutionStrategy

__all__ = ["RAY_INSTALL_HINT", "RayClusterUnreachableError", "RayExecutionStrategy"]
