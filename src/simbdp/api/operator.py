"""Operator endpoints: every tenant, record, stream instance and the platform report."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel

from simbdp.api.deps import ERRORS, ApiError, Caller, ErrorBody, Services, operator, services
from simbdp.batch.staging import prepare_tenant_dirs
from simbdp.errors import BrokerUnavailable, ConfigError, CredentialsIssued
from simbdp.observe.report import batch_summary, stream_summary
from simbdp.profiles import TenantProfile, save_profile

__all__ = ["router"]

router = APIRouter(prefix="/v1/operator", tags=["operator"], responses=ERRORS)


@router.get("/tenants")
def tenants(_: Caller = Depends(operator), svc: Services = Depends(services)
            ) -> list[dict[str, Any]]:
    """Every tenant with its tables, apps and whether it is enabled."""
    return [{"tenant_id": p.tenant_id, "enabled": p.enabled,
             "tables": [t.name for t in p.tables], "apps": [a.name for a in p.apps]}
            for p in svc.platform.tenants.values()]


@router.post("/tenants", status_code=201)
def add_tenant(p: TenantProfile = Body(...), _: Caller = Depends(operator),
               svc: Services = Depends(services)) -> dict[str, Any]:
    """Validate and install a tenant profile (takes effect for new work at once)."""
    save_profile(svc.platform.config, p)
    prepare_tenant_dirs(svc.platform.config, p.tenant_id)
    # a new Platform, never the shared one changed in place: the other parts of serve
    # get the file from the reloader
    svc.apply(replace(svc.platform, tenants={**svc.platform.tenants, p.tenant_id: p}))
    return {"tenant_id": p.tenant_id, "staging": str(svc.platform.config.staging_dir(
        p.tenant_id))}


@router.post("/tenants/{tenant}/disable")
def disable(tenant: str, _: Caller = Depends(operator), svc: Services = Depends(services)
            ) -> dict[str, Any]:
    """Stop accepting files and messages from a tenant (its data stays)."""
    p = svc.platform.tenants.get(tenant)
    if p is None:
        raise ApiError(404, "not_found", f"no tenant {tenant!r}")
    p2 = p.model_copy(update={"enabled": False})
    save_profile(svc.platform.config, p2)
    svc.apply(replace(svc.platform, tenants={**svc.platform.tenants, tenant: p2}))
    for a in p2.stream_apps():
        svc.store.set_desired(tenant, a.name, 0, paused_reason="tenant disabled")
    return {"tenant_id": tenant, "enabled": False}


@router.get("/records")
def all_records(_: Caller = Depends(operator), svc: Services = Depends(services),
                tenant: str | None = None, outcome: str | None = None,
                since: float | None = None, limit: int = Query(100, ge=1, le=1000),
                offset: int = Query(0, ge=0, le=1_000_000_000)) -> list[dict[str, Any]]:
    return svc.store.records(tenant, outcome=outcome, since=since, limit=limit, offset=offset)


@router.get("/streams")
def streams(_: Caller = Depends(operator), svc: Services = Depends(services)
            ) -> dict[str, Any]:
    """Desired instances per stream app and the latest decisions."""
    return {"desired": svc.store.desired(), "decisions": svc.store.decisions(limit=100)}


@router.get("/report")
def report(_: Caller = Depends(operator), svc: Services = Depends(services),
           since: float | None = None) -> dict[str, Any]:
    """The platform report: batch and stream figures per tenant."""
    return {"batch": [{**asdict(s), "quality": s.quality.as_dict()}
                      for s in batch_summary(svc.store, since=since)],
            "stream": [{**asdict(s), "quality": s.quality.as_dict()}
                       for s in stream_summary(svc.store, since=since)]}


class BrokerCredentials(BaseModel):
    """A tenant's own broker user; ``password`` (also inside ``url``) is shown only now."""

    tenant: str
    username: str
    password: str
    url: str
    #: NATS: the reply-subject prefix the tenant's client must use
    inbox_prefix: str | None = None


@router.post("/tenants/{tenant}/broker-credentials", response_model=BrokerCredentials,
             responses={503: {"model": ErrorBody}})
async def broker_credentials(tenant: str, rotate: bool = Query(False),
                             _: Caller = Depends(operator), svc: Services = Depends(services)
                             ) -> BrokerCredentials:
    """Create the tenant's own broker user with a secret shown once, or with ``rotate`` give
    it a new secret (the old one stops working). simbdp stores no copy: asking again without
    ``rotate`` is a 409."""
    from simbdp.stream.client import issue_broker_credentials

    if tenant not in svc.platform.tenants:
        raise ApiError(404, "not_found", f"no tenant {tenant!r}")
    try:
        c = await issue_broker_credentials(svc.platform, tenant, rotate=rotate)
    except CredentialsIssued as e:
        raise ApiError(409, e.code, str(e)) from e
    except ConfigError as e:
        raise ApiError(409, "no_broker_users", str(e)) from e
    except BrokerUnavailable as e:
        raise ApiError(503, e.code, str(e)) from e
    return BrokerCredentials(tenant=c.tenant, username=c.username, password=c.password,
                             url=c.url, inbox_prefix=c.inbox_prefix)
