"""``GET /v1/health`` for load balancers: no key, 200 while the state store answers, else 503."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from simbdp.api.deps import Services, services
from simbdp.observe.logs import get_logger

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["meta"])


@router.get("/health", responses={503: {"description": "the state store does not answer"}})
def health(svc: Services = Depends(services)) -> JSONResponse:
    """Ready when the state store (records, keys, quotas) answers a query; no API key."""
    try:
        svc.store.db.query("SELECT 1")
    except Exception as e:  # any failure of the store means: send no traffic here
        get_logger("simbdp.api").warning("health_failed", reason=f"{type(e).__name__}: {e}")
        return JSONResponse({"status": "unavailable", "state_store": f"{type(e).__name__}: {e}"},
                            status_code=503)
    return JSONResponse({"status": "ok", "state_store": "ok"})
