"""The store server's routes, one module per resource, each an ``APIRouter`` named ``router``.

:data:`API_ROUTERS` go under ``/v1/agl`` in this order (the order FastAPI matches routes in);
:mod:`.otlp` is mounted at the root (``/v1/traces``). Plugins add theirs through ``agl_register_server_routes``.
"""

from __future__ import annotations

from . import batch, otlp, resources, rollouts, service, spans, workers

API_ROUTERS = (service.router, rollouts.router, spans.router, resources.router, workers.router, batch.router)
OTLP_ROUTER = otlp.router

__all__ = ["API_ROUTERS", "OTLP_ROUTER"]
