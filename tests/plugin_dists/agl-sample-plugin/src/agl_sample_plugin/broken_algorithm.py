"""An algorithm entry point whose module cannot be imported: its (made-up) dependency is missing.

Resolving any other algorithm must never import this module.
"""

from __future__ import annotations

from agl_sample_plugin import log_import

log_import(__name__)

import agl_sample_missing_dependency  # noqa: E402,F401


class BrokenAlgorithm:
    pass
