"""Lake maintenance: compaction of the tenants' Delta tables, by hand and as a policy.

``simbdp lake compact`` compacts (and vacuums) chosen tables at once; inside ``simbdp serve`` a
:class:`LakeCompactor` looks at every Delta table now and then and compacts the ones holding
more than their sink's ``compact_min_files`` data files, so many small commits (a flood of
small files, micro-batches) do not turn into a small-files problem for readers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from simbdp.coredms.base import open_sink
from simbdp.coredms.delta import LEDGER_TABLE, Compaction, DeltaSink
from simbdp.errors import SimbdpError
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.profiles.models import TenantProfile
from simbdp.state import StateStore

__all__ = ["LakeCompactor", "compact_lake", "lake_tables"]


def lake_tables(platform: Platform, tenant: str | None = None, table: str | None = None
                ) -> Iterator[tuple[DeltaSink, TenantProfile, str]]:
    """Every (Delta sink, tenant, table) of the platform, or of one tenant / table, each
    tenant's ledger table last (it gains a file per committed file too). The sinks are
    opened here and closed when the iteration ends."""
    delta = {n: s for n, s in platform.config.sinks.items() if s.kind == "delta"}
    sinks: dict[str, DeltaSink] = {}

    def sink(name: str) -> DeltaSink:
        if name not in sinks:
            sinks[name] = open_sink(delta[name])  # type: ignore[assignment]
        return sinks[name]

    try:
        for profile in platform.tenants.values():
            if tenant is not None and profile.tenant_id != tenant:
                continue
            used = sorted({n for spec in profile.tables for n in spec.sinks if n in delta})
            for spec in profile.tables:
                if table is None or spec.name == table:
                    for name in spec.sinks:
                        if name in delta:
                            yield sink(name), profile, spec.name
            if table is None or table == LEDGER_TABLE:
                for name in used:
                    yield sink(name), profile, LEDGER_TABLE
    finally:
        for s in sinks.values():
            s.close()


def compact_lake(platform: Platform, tenant: str | None = None, table: str | None = None,
                 *, vacuum: bool = True) -> list[Compaction]:
    """Compact (and vacuum) every chosen Delta table now."""
    return [sink.compact(profile, name, vacuum=vacuum)
            for sink, profile, name in lake_tables(platform, tenant, table)]


class LakeCompactor:
    """The policy of ``simbdp serve``: every ``poll_secs``, compact each Delta table holding
    more data files than its sink's ``compact_min_files`` (0: never)."""

    def __init__(self, platform: Platform, *, poll_secs: float = 60.0):
        self.platform, self.poll_secs = platform, poll_secs
        self.log = get_logger("simbdp.lake")

    def apply(self, platform: Platform) -> None:
        self.platform = platform

    def check(self, store: StateStore) -> list[Compaction]:
        """One look at every table; what was compacted."""
        done = []
        for sink, profile, table in lake_tables(self.platform):
            limit = sink.settings.compact_min_files
            try:
                if not limit or sink.file_count(profile, table) <= limit:
                    continue
                c = sink.compact(profile, table)
            except SimbdpError as e:  # the next look tries again
                self.log.warning("lake_compaction_failed", tenant=profile.tenant_id,
                                 table=table, reason=str(e))
                continue
            done.append(c)
            self.log.info("lake_compacted", tenant=c.tenant, table=table,
                          files_before=c.files_before, files_after=c.files_after,
                          files_deleted=c.files_deleted)
            store.add_decision(c.tenant, None, "lake_compacted",
                               f"table {table!r}: {c.files_before} data files over "
                               f"compact_min_files {limit}: compacted to {c.files_after}")
        return done

    def run(self, stop: threading.Event, store: StateStore) -> None:
        while not stop.wait(self.poll_secs):
            try:
                self.check(store)
            except Exception as e:  # keep looking
                self.log.error("lake_compaction_failed", reason=f"{type(e).__name__}: {e}")
