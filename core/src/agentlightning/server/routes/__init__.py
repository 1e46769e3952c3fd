"""The store server's routes, one module per resource, each an ``APIRouter`` named ``router``.

:data:`API_ROUTERS` go under ``/v1/agl`` in this order (the order FastAPI matches routes in). Plugins add
theirs through ``agl_register_server_routes`` (OTLP/HTTP ingest at ``/v1/traces``: agentlightning-otlp).
"""

from __future__ import annotations

from . import batch, resources, rollouts, service, spans, workers

API_ROUTERS = (service.router, rollouts.router, spans.router, resources.router, workers.router, batch.router)

__all__ = ["API_ROUTERS"]
