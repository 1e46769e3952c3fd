"""Ray tests: small local clusters (2 CPUs, no dashboard), every one shut down by its test."""

from __future__ import annotations

import os

# Keep Ray quiet and offline; its token auth stays as Ray sets it (on by default in Ray 2.60).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
