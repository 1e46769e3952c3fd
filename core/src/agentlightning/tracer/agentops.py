"""Deprecated: ``AgentOpsTracer`` is kept as an alias of :class:`OtelTracer` so 0.3 code still runs.

AgentOps is not used (nor required): spans go through OpenTelemetry straight to the store.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from .otel import DEFAULT_BATCH_SIZE, DEFAULT_FLUSH_INTERVAL, DEFAULT_FLUSH_TIMEOUT, OtelTracer

__all__ = ["AgentOpsTracer"]


class AgentOpsTracer(OtelTracer):
    """Deprecated alias of :class:`OtelTracer`; the AgentOps-specific arguments are ignored."""

    def __init__(
        self,
        *,
        agentops_managed: bool = True,
        instrument_managed: bool = True,
        daemon: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        flush_timeout: Optional[float] = DEFAULT_FLUSH_TIMEOUT,
        **ignored: Any,
    ) -> None:
        warnings.warn(
            "AgentOpsTracer is deprecated and AgentOps is not used: it is now an alias of OtelTracer, which records "
            "spans with OpenTelemetry directly (agentops_managed, instrument_managed and daemon are ignored). "
            "Use agentlightning.OtelTracer instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(batch_size=batch_size, flush_interval=flush_interval, flush_timeout=flush_timeout)
        self.agentops_managed = agentops_managed
        self.instrument_managed = instrument_managed
        self.daemon = daemon
