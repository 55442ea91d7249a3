"""``GET /metrics``: Prometheus exposition of the platform's figures and the API's requests.

Private by default (the operator's key, as bearer credentials in the scrape config); public
when ``api.metrics_public: true`` in platform.yaml.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client.exposition import choose_encoder

from simbdp.api.deps import ERRORS, caller, operator, services
from simbdp.observe.metrics import api_requests_counter, metrics_registry

__all__ = ["install", "router"]

router = APIRouter(tags=["meta"], responses=ERRORS)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Every figure, derived from the state store at scrape time (OpenMetrics on request)."""
    svc = services(request)
    if not svc.platform.config.api.metrics_public:
        operator(caller(request, svc))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(request.app.state.metrics), media_type=content_type)


def install(app: FastAPI) -> None:
    """Add ``/metrics`` and count every request by route template, method and status."""
    svc = app.state.services
    registry = app.state.metrics = metrics_registry(svc.platform, svc.store)
    requests = api_requests_counter(registry)
    app.include_router(router)

    @app.middleware("http")
    async def count(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            requests.labels(getattr(route, "path", "unmatched"), request.method,
                            str(status)).inc()
