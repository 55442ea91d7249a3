"""Tenants' namespaces and tables, made in each sink they use before their first file."""

from __future__ import annotations

from typing import Any

from simbdp.coredms.base import open_sink
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["ensure_tables"]


def ensure_tables(config: PlatformConfig, profiles: list[TenantProfile], log: Any) -> None:
    """Create the tenants' namespaces and tables in each sink they use. A sink that is away
    is logged, not raised: its files wait and retry as usual (a worker ensures the tables
    again before its first file of a tenant)."""
    for name, settings in config.sinks.items():
        users = [p for p in profiles if any(name in t.sinks for t in p.tables)]
        if not users:
            continue
        try:
            sink = open_sink(settings)
            try:
                for profile in users:
                    sink.ensure_tables(profile)
            finally:
                sink.close()
        except Exception as e:
            log.error("ensure_tables_failed", sink=name, tenants=[p.tenant_id for p in users],
                      reason=f"{type(e).__name__}: {e}")
