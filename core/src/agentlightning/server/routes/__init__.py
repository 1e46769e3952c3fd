"""The store server's routes, one module per resource, each an ``APIRouter`` named ``router``.

:data:`API_ROUTERS` go under ``/v1/agl`` in this order (the order FastAPI matches routes in);
:mod:`.otlp` is mounted at the root (``/v1/traces``), and so is the dashboard's page (``/``).
"""

from __future__ import annotations

from . import batch, dashboard, otlp, resources, rollouts, service, spans, workers

API_ROUTERS = (
    service.router,
    rollouts.router,
    spans.router,
    resources.router,
    workers.router,
    dashboard.router,
    batch.router,
)
OTLP_ROUTER = otlp.router
DASHBOARD_ROUTER = dashboard.static_router

__all__ = ["API_ROUTERS", "DASHBOARD_ROUTER", "OTLP_ROUTER"]
