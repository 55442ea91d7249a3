"""What every route needs: the platform, the caller (from its API key), rate limits, errors."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel

from simbdp.profiles import Platform
from simbdp.profiles.models import TenantProfile
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, verify_key

__all__ = ["ERRORS", "ApiError", "Caller", "ErrorBody", "Services", "caller", "operator",
           "tenant_of"]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error: a stable code and a message that says what to fix."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 408, 409, 413, 415, 422, 429)}


class ApiError(HTTPException):
    """An error answered as ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail={"code": code, "message": message},
                         headers=headers)


class TokenBucket:
    """``rate`` tokens a minute, bursts up to ``rate``; thread-safe."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: float = 1.0) -> float:
        """0 if taken, else the seconds to wait before ``n`` tokens are there."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate / 60)
            self.at = now
            if self.tokens >= n or (n > self.rate and self.tokens >= self.rate):
                self.tokens -= n
                return 0.0
            return (n - self.tokens) * 60 / self.rate


@dataclass
class Services:
    platform: Platform
    store: StateStore
    requests: dict[str, TokenBucket]
    uploads: dict[str, TokenBucket]

    def apply(self, platform: Platform) -> None:
        """Take a reloaded platform: the next request sees its tenants (one attribute
        swapped; a request in progress keeps the profile it resolved)."""
        self.platform = platform

    def bucket(self, kind: dict[str, TokenBucket], who: str, rate: float) -> TokenBucket:
        if who not in kind:
            kind[who] = TokenBucket(rate)
        return kind[who]


@dataclass(frozen=True)
class Caller:
    tenant: str  # a tenant id, or "*" for the operator

    @property
    def is_operator(self) -> bool:
        return self.tenant == OPERATOR


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def caller(request: Request, svc: Services = Depends(services)) -> Caller:
    """Authenticate (``Authorization: Bearer <key>`` or ``X-API-Key``) and rate-limit."""
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else \
        request.headers.get("x-api-key", "")
    if not key:
        raise ApiError(401, "missing_key", "send an API key: 'Authorization: Bearer <key>'",
                       {"WWW-Authenticate": "Bearer"})
    who = verify_key(svc.store, key)
    if who is None:
        raise ApiError(401, "invalid_key", "the API key is wrong or was revoked; ask the "
                       "operator for a new one", {"WWW-Authenticate": "Bearer"})
    wait = svc.bucket(svc.requests, who, svc.platform.config.api.requests_per_minute).take()
    if wait:
        raise ApiError(429, "rate_limited", f"too many requests; retry in {math.ceil(wait)} s",
                       {"Retry-After": str(math.ceil(wait))})
    return Caller(who)


def tenant_of(tenant: str, who: Caller = Depends(caller),
              svc: Services = Depends(services)) -> TenantProfile:
    """The tenant a path names, if the caller may see it; 404 otherwise (no leak)."""
    if (who.is_operator or who.tenant == tenant) and tenant in svc.platform.tenants:
        return svc.platform.tenants[tenant]
    raise ApiError(404, "not_found", f"no tenant {tenant!r} for this key")


def operator(who: Caller = Depends(caller)) -> Caller:
    if not who.is_operator:
        raise ApiError(403, "operator_only", "this endpoint needs the operator's key")
    return who
