"""The checks a file passes before any work: how many files one request brings, the tenant,
the file's name, kind, type, size and route, and the tenant's daily quota.

Each raises :class:`~simbdp.errors.Rejected` with a reason that names the tenant and the
file, and a short code for the record.
"""

from __future__ import annotations

from pathlib import Path

from simbdp.batch.staging import check_name, check_regular
from simbdp.errors import Rejected
from simbdp.formats import detect_format
from simbdp.profiles.models import TenantProfile
from simbdp.state import StateStore, today

__all__ = ["check_count", "check_file", "reserve_quota"]


def check_count(profile: TenantProfile, n: int) -> None:
    """Refuse an explicit request (a CLI call or an upload) of more files than the profile
    allows in one ingestion (``too_many_files``)."""
    limit = profile.batch.max_files_per_ingestion
    if n > limit:
        raise Rejected(f"tenant {profile.tenant_id!r}: {n} files in one ingestion; "
                       f"the profile allows {limit}", "too_many_files")


def check_file(profile: TenantProfile, path: Path) -> int:
    """Check a file already moved to ``inflight/``; return its size.

    Raises Rejected: the tenant is disabled, the name is unsafe, the entry is not a regular
    file, its type is not allowed, it is empty or over ``max_file_bytes``, or no app or
    table takes it.
    """
    tenant, name = profile.tenant_id, path.name
    if not profile.enabled:
        raise Rejected(f"tenant {tenant!r} is disabled", "tenant_disabled")
    check_name(tenant, name)
    nbytes = check_regular(tenant, path)
    detected = detect_format(name)
    if detected is None or detected[0] not in profile.batch.file_types:
        allowed = ", ".join(profile.batch.file_types)
        kind = detected[0] if detected else "unknown"
        raise Rejected(f"tenant {tenant!r}: {name!r}: file type {kind!r} is not allowed "
                       f"(allowed: {allowed})", "file_type")
    if nbytes == 0:
        raise Rejected(f"tenant {tenant!r}: {name!r} is empty", "empty_file")
    if nbytes > profile.batch.max_file_bytes:
        raise Rejected(f"tenant {tenant!r}: {name!r} is {nbytes} bytes, over the limit of "
                       f"{int(profile.batch.max_file_bytes)} bytes per file", "file_too_big")
    if profile.route_file(name) is None:
        raise Rejected(f"tenant {tenant!r}: {name!r}: no app or table takes this file "
                       "(name it after a table or match an app's file_pattern)", "no_route")
    return nbytes


def reserve_quota(store: StateStore, profile: TenantProfile, name: str, nbytes: int) -> str:
    """Count one file of ``nbytes`` against today's quota of files and bytes; return the
    quota day (to release it on). Raises Rejected (``quota_exceeded``) when it does not fit."""
    tenant, day = profile.tenant_id, today()
    max_files, max_bytes = profile.batch.max_files_per_day, int(profile.batch.max_bytes_per_day)
    if not store.reserve_files(tenant, day, 1, nbytes, max_files, max_bytes):
        used = store.usage(tenant, day)
        raise Rejected(f"tenant {tenant!r}: {name!r} ({nbytes} bytes) is over the daily quota: "
                       f"{used['files']}/{max_files} files and "
                       f"{used['bytes']}/{max_bytes} bytes used today", "quota_exceeded")
    return day
