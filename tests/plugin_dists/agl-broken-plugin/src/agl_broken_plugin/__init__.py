"""Test fixture: importing this plugin fails, and agentlightning must survive it."""

from __future__ import annotations

raise RuntimeError("agl-broken-plugin fails on import on purpose")
