"""A fair job queue (round robin across tenants, FIFO within a tenant), how many jobs of a
tenant may run at once, and which files may share a turn."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from simbdp.batch.protocol import FileJob
from simbdp.formats import detect_format
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["GROUP_SINK_KINDS", "FairQueue", "group_with", "groupable", "tenant_limit"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    """One tenant dropping 1,000 files waits its turn behind a tenant dropping one.

    ``pop`` takes the head of the next tenant in rotation that has work and is under its
    limit of jobs in flight, ``per_tenant(tenant)`` (no limit when None).
    """

    def __init__(self, per_tenant: Callable[[str], int] | None = None):
        self.per_tenant = per_tenant
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._running: dict[str, int] = {}

    def push(self, tenant: str, item: T) -> None:
        self._queues.setdefault(tenant, deque()).append(item)

    def pop(self) -> tuple[str, T] | None:
        for tenant in list(self._queues):
            q = self._queues[tenant]
            if self.per_tenant and self._running.get(tenant, 0) >= self.per_tenant(tenant):
                continue
            item = q.popleft()
            # rotate: this tenant goes to the back
            self._queues.move_to_end(tenant)
            if not q:
                del self._queues[tenant]
            self._running[tenant] = self._running.get(tenant, 0) + 1
            return tenant, item
        return None

    def take(self, tenant: str, accept: Callable[[T], bool], most: int) -> list[T]:
        """Up to ``most`` more items from the head of ``tenant``'s queue while ``accept``
        says yes, to run with the one just popped (they count as part of it)."""
        q = self._queues.get(tenant)
        out: list[T] = []
        while q and len(out) < most and accept(q[0]):
            out.append(q.popleft())
        if q is not None and not q:
            del self._queues[tenant]
        return out

    def done(self, tenant: str) -> None:
        self._running[tenant] = max(0, self._running.get(tenant, 0) - 1)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def pending(self, tenant: str) -> int:
        return len(self._queues.get(tenant, ()))


#: sinks whose transactions commit several files' ledger rows at once (``commit_many``)
GROUP_SINK_KINDS = frozenset({"duckdb", "postgres"})


def groupable(config: PlatformConfig, profile: TenantProfile) -> bool:
    """Whether ``profile``'s small files may share a transaction: all its tables in one sink
    that can commit several files at once."""
    sinks = {s for t in profile.tables for s in t.sinks}
    return len(sinks) == 1 and config.sinks[next(iter(sinks))].kind in GROUP_SINK_KINDS


def tenant_limit(config: PlatformConfig, profile: TenantProfile | None) -> int:
    """How many jobs of the tenant may run at once: one if it writes to DuckDB, which takes one
    writer per database file (a second job would only wait for the first one's lock while
    holding a worker), and one for a tenant removed meanwhile (``profile`` None: its files in
    flight finish one at a time); else ``workers``."""
    if profile is None:
        return 1
    kinds = {config.sinks[s].kind for t in profile.tables for s in t.sinks}
    return 1 if "duckdb" in kinds else config.workers


def group_with(queue: FairQueue[FileJob], config: PlatformConfig, job: FileJob,
               profile: TenantProfile, accepted: Mapping[Path, TenantProfile]) -> list[FileJob]:
    """Take the small files of the tenant queued behind ``job`` that share its transaction
    (see :mod:`simbdp.batch.group`): first attempts of uncompressed files under
    ``small_file_bytes``, accepted under the same profile (``accepted``: the profile each
    queued file was accepted under), up to ``group_max_files`` and ``group_max_bytes`` in all."""
    if not (_small(config, job) and groupable(config, profile)):
        return []
    budget = [config.group_max_bytes - job.nbytes]

    def fits(other: FileJob) -> bool:
        if (not _small(config, other) or other.nbytes > budget[0]
                or accepted.get(other.path, profile) != profile):
            return False
        budget[0] -= other.nbytes
        return True

    return queue.take(job.tenant, fits, config.group_max_files - 1)


def _small(config: PlatformConfig, job: FileJob) -> bool:
    detected = detect_format(job.path.name)
    return (job.attempt == 1 and not job.waits and job.nbytes <= config.small_file_bytes
            and detected is not None and detected[1] == "none")
