"""Test fixture: a plugin implementing every agentlightning hook.

Set ``AGL_SAMPLE_PLUGIN_IMPORT_LOG`` to a file path and each module of this package appends its name
to that file when imported, so tests can prove which modules were (not) imported.
"""

from __future__ import annotations

import os

IMPORT_LOG_ENV = "AGL_SAMPLE_PLUGIN_IMPORT_LOG"


def log_import(module_name: str) -> None:
    path = os.environ.get(IMPORT_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(module_name + "\n")


log_import(__name__)
