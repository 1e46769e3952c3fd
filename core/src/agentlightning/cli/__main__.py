"""``python -m agentlightning.cli`` runs ``agl``."""

from __future__ import annotations

import sys

from agentlightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
