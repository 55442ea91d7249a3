"""``/dashboard``: the live monitoring page, and the JSON it polls.

The page and its scripts are static files of the package (``api/static/``, uPlot vendored:
no CDN, nothing fetched from the internet). The page asks for an API key once, keeps it in
the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` on each fetch of
``/v1/dashboard`` (never in a URL, so never in an access log). The operator's key sees every
tenant; a tenant's key sees its own, and another tenant's panel answers 404 like a missing one.
Figures come from :func:`simbdp.observe.dashboard.dashboard_view`: the records, aggregated in
SQL, as ``simbdp report`` and ``/metrics`` read them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from simbdp.api.deps import ERRORS, Caller, Services, caller, services, tenant_of
from simbdp.observe.dashboard import DEFAULT_WINDOW_SECS, dashboard_view, visible_tenants
from simbdp.profiles.models import TenantProfile

__all__ = ["STATIC", "install", "router"]

#: the page, its script and style, and the vendored uPlot
STATIC = Path(str(resources.files("simbdp.api") / "static"))
#: scripts and styles from this server only; uPlot sets element styles from its script
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'")

router = APIRouter(tags=["dashboard"], responses=ERRORS)

_WINDOW = Query(DEFAULT_WINDOW_SECS, ge=60, le=7 * 86400,
                description="the last this many seconds (default 15 minutes)")


def _page() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html",
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer"})


@router.get("/dashboard", include_in_schema=False)
def page() -> FileResponse:
    """Every tenant the key entered on the page may see."""
    return _page()


@router.get("/dashboard/tenants/{tenant}", include_in_schema=False)
def tenant_page(tenant: str) -> FileResponse:
    """One tenant's panel; the page shows 'not found' when its key may not see the tenant
    (the data behind it answers 404)."""
    del tenant  # the page reads it from its URL and asks /v1/dashboard/tenants/{tenant}
    return _page()


@router.get("/v1/dashboard")
def overview(window_secs: int = _WINDOW, who: Caller = Depends(caller),
                   svc: Services = Depends(services)) -> dict[str, Any]:
    """Figures of every tenant the key may see (the operator: all, broken profiles too)."""
    platform = svc.platform
    tenants = visible_tenants(platform, None if who.is_operator else who.tenant)
    tenants = [t for t in tenants if t in platform.tenants or who.is_operator]
    view = dashboard_view(platform, svc.store, tenants, window_secs)
    view["operator"] = who.is_operator
    return view


@router.get("/v1/dashboard/tenants/{tenant}")
def one_tenant(window_secs: int = _WINDOW, p: TenantProfile = Depends(tenant_of),
                     who: Caller = Depends(caller), svc: Services = Depends(services)
                     ) -> dict[str, Any]:
    """One tenant's figures; 404 when the key may not see it."""
    view = dashboard_view(svc.platform, svc.store, [p.tenant_id], window_secs)
    view["operator"] = who.is_operator
    return view


def install(app: FastAPI) -> None:
    """Add the page, its static files (``/dashboard/static``) and the data routes."""
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.include_router(router)
