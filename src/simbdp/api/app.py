"""The HTTP service: FastAPI app for tenants and the operator, served by ``simbdp serve``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from simbdp.api import dashboard, metrics, operator, tenant
from simbdp.api import health as health_api
from simbdp.api.deps import Services
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.state import StateStore

__all__ = ["create_app", "serve_api"]


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def create_app(platform: Platform, store: StateStore) -> FastAPI:
    """The API over one platform; errors are ``{"error": {"code", "message"}}``."""
    app = FastAPI(title="simbdp", version="0.1.0",
                  description="Multi-tenant ingestion: tenant uploads, records, quotas, "
                              "messages, stream control, rows; operator views.")
    app.state.services = Services(platform, store, {}, {})
    app.include_router(tenant.router)
    app.include_router(operator.router)
    dashboard.install(app)
    metrics.install(app)
    app.include_router(health_api.router)
    log = get_logger("simbdp.api")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        d: Any = exc.detail
        if isinstance(d, dict) and "code" in d:
            return _error(exc.status_code, d["code"], d["message"], exc.headers)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(d), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return _error(422, "invalid_request", problems or "the request is not valid")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("api_error", path=request.url.path, reason=f"{type(exc).__name__}: {exc}")
        return _error(500, "internal", "the platform failed on this request; it was logged")

    @app.get("/healthz", tags=["meta"])
    def alive() -> dict[str, str]:
        """Liveness only (the process answers); load balancers use ``/v1/health``."""
        return {"status": "ok"}

    return app


def serve_api(platform: Platform, stop: threading.Event,
              attach: Callable[[Services], None] | None = None) -> None:
    """Run the API (TLS when the config names a certificate) until ``stop`` is set;
    ``attach`` is given the app's services (so a reloader can hand it new platforms)."""
    api = platform.config.api
    store = StateStore.open(platform.config)
    fastapi_app = create_app(platform, store)
    if attach is not None:
        attach(fastapi_app.state.services)
    config = uvicorn.Config(fastapi_app, host=api.host, port=api.port,
                            ssl_certfile=str(api.tls_cert) if api.tls_cert else None,
                            ssl_keyfile=str(api.tls_key) if api.tls_key else None,
                            log_level="warning", timeout_keep_alive=5)
    server = uvicorn.Server(config)
    threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)),
                     daemon=True).start()
    server.run()
