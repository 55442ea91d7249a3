"""Tenant endpoints: everything scoped to the caller's own tenant."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import uuid
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from simbdp.api.deps import ERRORS, ApiError, Services, services, tenant_of
from simbdp.batch.staging import check_name, prepare_tenant_dirs
from simbdp.errors import Rejected
from simbdp.formats import detect_format
from simbdp.observe.logs import get_logger
from simbdp.profiles.models import TenantProfile
from simbdp.state import today
from simbdp.units import format_bytes

__all__ = ["router"]

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["tenant"], responses=ERRORS)
_CHUNK = 1024 * 1024
_log = get_logger("simbdp.api")


class UploadResult(BaseModel):
    file: str
    bytes: int
    sha256: str
    status: str


class QuotaUse(BaseModel):
    day: str
    files: int
    max_files: int
    bytes: int
    max_bytes: int
    messages: int
    max_messages: int
    stream_bytes: int
    max_stream_bytes: int


@router.get("/profile")
def profile(p: TenantProfile = Depends(tenant_of)) -> dict[str, Any]:
    """The tenant's service profile: constraints, tables, apps."""
    return p.model_dump(mode="json")


@router.get("/quota", response_model=QuotaUse)
def quota(p: TenantProfile = Depends(tenant_of), svc: Services = Depends(services)) -> QuotaUse:
    """Today's use of the daily quotas."""
    day = today()
    u = svc.store.usage(p.tenant_id, day)
    return QuotaUse(day=day, files=u["files"], max_files=p.batch.max_files_per_day,
                    bytes=u["bytes"], max_bytes=int(p.batch.max_bytes_per_day),
                    messages=u["messages"], max_messages=p.stream.max_messages_per_day,
                    stream_bytes=u["stream_bytes"],
                    max_stream_bytes=int(p.stream.max_bytes_per_day))


@router.get("/records")
def records(p: TenantProfile = Depends(tenant_of), svc: Services = Depends(services),
            outcome: str | None = None, source: str | None = None,
            since: float | None = Query(None, description="epoch seconds"),
            content_key: str | None = None,
            limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000_000)
            ) -> list[dict[str, Any]]:
    """The tenant's ingestion records, newest first."""
    rows = svc.store.records(p.tenant_id, outcome=outcome, since=since, source=source,
                             limit=limit, offset=offset, content_key=content_key)
    return rows


@router.get("/stream-reports")
def stream_reports(p: TenantProfile = Depends(tenant_of), svc: Services = Depends(services),
                   app: str | None = None,
                   since: float | None = Query(None, description="epoch seconds"),
                   limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """The tenant's stream reports (one instance's window of micro-batches: messages, rows,
    latency, quality), newest first."""
    return svc.store.stream_reports(p.tenant_id, app=app, since=since, limit=limit)


@router.put("/files/{name}", status_code=202, response_model=UploadResult)
async def upload(name: str, request: Request, p: TenantProfile = Depends(tenant_of),
                 svc: Services = Depends(services),
                 x_content_sha256: str | None = Header(None, description="hex sha256 of the "
                                                       "body; verified")) -> UploadResult:
    """Upload one file into the staging folder, streamed; it is ingested like a dropped file.

    413 past the size limit, 422 on a checksum mismatch, 408 if the upload stalls.
    """
    tenant, cfg = p.tenant_id, svc.platform.config
    try:
        check_name(tenant, name)
    except Rejected as e:
        raise ApiError(400, "bad_name", str(e)) from e
    detected = detect_format(name)
    if detected is None or detected[0] not in p.batch.file_types:
        raise ApiError(415, "file_type", f"{name!r}: file type not allowed (allowed: "
                       f"{', '.join(p.batch.file_types)})")
    limit = int(p.batch.max_file_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiError(413, "too_large", f"{name!r}: {declared} bytes is over the limit of "
                       f"{limit} bytes ({format_bytes(limit)}) per file")
    wait = svc.bucket(svc.uploads, tenant, cfg.api.upload_bytes_per_minute).take(
        float(declared or 0))
    if wait:
        raise ApiError(429, "upload_rate", f"upload byte rate exceeded; retry in "
                       f"{math.ceil(wait)} s", {"Retry-After": str(math.ceil(wait))})
    staging = prepare_tenant_dirs(cfg, tenant)
    part = staging / f".{uuid.uuid4().hex}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with part.open("wb") as f:
            chunks = request.stream().__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), cfg.api.upload_stall_secs)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise ApiError(408, "stalled", f"{name!r}: no data for "
                                   f"{cfg.api.upload_stall_secs:g} s; upload again") from None
                except ClientDisconnect:
                    # nobody is left to answer: drop the partial file, say so once
                    _log.warning("upload_disconnected", tenant=tenant, file=name,
                                 bytes_received=size)
                    raise ApiError(400, "client_disconnected", f"{name!r}: the client went "
                                   f"away after {size} bytes; upload again") from None
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "too_large", f"{name!r} is over the limit of {limit} "
                                   "bytes per file")
                digest.update(chunk)
                f.write(chunk)
        if declared is not None and int(declared) != size:
            raise ApiError(400, "length_mismatch", f"Content-Length said {declared} bytes, "
                           f"the body had {size}")
        sha = digest.hexdigest()
        if x_content_sha256 is not None and x_content_sha256.lower() != sha:
            raise ApiError(422, "checksum_mismatch", f"{name!r}: sha256 of the body is {sha}, "
                           f"not {x_content_sha256}; upload again")
        dest = staging / name
        if dest.exists():
            raise ApiError(409, "name_taken", f"{name!r} is already waiting in staging")
        os.replace(part, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return UploadResult(file=name, bytes=size, sha256=sha, status="accepted for ingestion")


class Published(BaseModel):
    published: int


@router.post("/messages", response_model=Published)
async def publish_messages(
        messages: list[dict[str, Any]] = Body(..., description="JSON objects, one a message"),
        table: str | None = Query(None), id_field: str | None = Query(None),
        idempotency_key: str | None = Header(None, max_length=200, description=(
            "message ids become `<key>:<n>`; without it (and without id_field) they are "
            "`<content hash of the request>:<n>`: a retried request loads once")),
        p: TenantProfile = Depends(tenant_of), svc: Services = Depends(services)) -> Published:
    """Publish messages to the tenant's queue; returns once the broker has them.

    Idempotent: retrying the same request (after a timeout or a 503) loads each message once.
    A broker outage answers 503 with Retry-After; some messages may be in already.
    """
    import json

    from simbdp.errors import BrokerUnavailable
    from simbdp.stream.client import make_messages, publish

    if not messages:
        return Published(published=0)
    if table is not None and table not in [t.name for t in p.tables]:
        raise ApiError(404, "not_found", f"no table {table!r} for this tenant")
    prefix = idempotency_key or "req-" + hashlib.sha256(json.dumps(
        [table, messages], sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]
    msgs = make_messages(messages, id_prefix=prefix, id_field=id_field, table=table)
    big = [m.id for m in msgs if len(m.body) > p.stream.max_message_bytes]
    if big:
        raise ApiError(413, "message_too_large", f"{len(big)} message(s) over "
                       f"{int(p.stream.max_message_bytes)} bytes")
    try:
        await publish(svc.platform, p.tenant_id, msgs)
    except BrokerUnavailable as e:
        raise ApiError(503, "broker_unavailable",
                       f"tenant {p.tenant_id!r}: {e}; retry the same request, it is idempotent",
                       {"Retry-After": "5"}) from e
    return Published(published=len(msgs))


class Instances(BaseModel):
    instances: int


@router.post("/streams/{app}", response_model=Instances)
def control_stream(app: str, body: Instances, p: TenantProfile = Depends(tenant_of),
                   svc: Services = Depends(services)) -> Instances:
    """Start (n > 0), scale or stop (n = 0) the tenant's stream app."""
    spec = next((a for a in p.apps if a.name == app and a.kind == "stream"), None)
    if spec is None:
        raise ApiError(404, "not_found", f"no stream app {app!r} for this tenant")
    if not 0 <= body.instances <= spec.max_instances:
        raise ApiError(422, "bad_instances", f"instances must be 0..{spec.max_instances}")
    before = {(r["tenant"], r["app"]): r["instances"] for r in svc.store.desired()}
    svc.store.set_desired(p.tenant_id, app, body.instances)
    svc.store.add_decision(p.tenant_id, app, "scale" if body.instances else "stop",
                           f"requested through the API: {body.instances} instance(s)",
                           before.get((p.tenant_id, app), 0), body.instances)
    return body


@router.get("/tables/{table}/rows")
def rows(table: str, request: Request, limit: int = Query(100, ge=1, le=10_000),
         p: TenantProfile = Depends(tenant_of), svc: Services = Depends(services)
         ) -> list[dict[str, Any]]:
    """Read rows of one of the tenant's tables; other query parameters are equality filters
    on its columns."""
    from simbdp.coredms.base import open_sink

    spec = next((t for t in p.sink_tables() if t.name == table), None)
    if spec is None:
        raise ApiError(404, "not_found", f"no table {table!r} for this tenant")
    where = {k: v for k, v in request.query_params.items() if k != "limit"}
    unknown = [k for k in where if k not in spec.column_names]
    if unknown:
        raise ApiError(400, "unknown_columns", f"no columns {unknown} in {table!r}")
    sink = open_sink(svc.platform.config.sinks[spec.sinks[0]])
    try:
        data = sink.read_rows(p, table, limit=limit, where=where or None)
    finally:
        sink.close()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else
                 str(v) if not isinstance(v, int | float | str | bool | type(None)) else v)
             for k, v in r.items()} for r in data.to_pylist()]


