"""A fair job queue (round robin across tenants, FIFO within a tenant) and which files may
share a turn."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["GROUP_SINK_KINDS", "FairQueue", "groupable"]

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
