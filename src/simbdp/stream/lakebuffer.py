"""Micro-batches for a lake, buffered into one commit: few large files, not one per batch.

A stream app whose tables live in a delta sink does not commit each micro-batch: its Arrow
outputs and deliveries (unacknowledged) accumulate here until ``lake.target_file_mb`` of data,
``lake.max_wait_secs`` of age or ``lake.max_messages``, then
:class:`~simbdp.stream.microbatch.MicroBatches` commits them as one stream batch (one commit
per table) and acks them. The bounds keep the broker from redelivering what is buffered: the
age stays under half the lease (embedded ``lease_secs``, NATS ``ack_wait``) and the count under
what the broker lets a consumer hold unacknowledged (RabbitMQ prefetch, NATS
``max_ack_pending`` shared by the app's instances), leaving room for two micro-batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa

from simbdp.profiles.models import AppSpec, TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.stream.brokers import Broker, Delivery

__all__ = ["LakeBuffer", "LakeLimits", "lake_limits", "writes_lake"]

#: NATS: the consumer's ``max_ack_pending`` (stream/brokers/nats_js.py)
NATS_MAX_ACK_PENDING = 20_000
#: RabbitMQ: the channel's prefetch when a micro-batch is small (stream/brokers/rabbitmq.py)
RABBITMQ_MIN_PREFETCH = 2000


@dataclass(frozen=True)
class LakeLimits:
    """When a buffer is committed."""

    max_bytes: int
    max_secs: float
    max_messages: int


def writes_lake(config: PlatformConfig, profile: TenantProfile, spec: AppSpec) -> bool:
    """Does the app write to a delta sink (its other sinks then commit with the lake, when
    the buffer does)."""
    return any(config.sinks[s].kind == "delta" for t in spec.tables
               for s in profile.table(t).sinks if s in config.sinks)


def lake_limits(config: PlatformConfig, profile: TenantProfile, spec: AppSpec,
                broker: Broker) -> LakeLimits:
    """The profile's ``lake`` settings, capped by what the broker tolerates unacked."""
    lake, rows = profile.lake, spec.batch_max_rows
    secs = lake.max_wait_secs
    unacked = lake.max_messages
    if broker.kind in ("embedded", "nats"):
        secs = min(secs, config.broker.lease_secs / 2)
    if broker.kind == "rabbitmq":
        prefetch = max(int(getattr(broker, "prefetch", RABBITMQ_MIN_PREFETCH)), 2 * rows)
        unacked = min(unacked, prefetch - 2 * rows)
    elif broker.kind == "nats":
        unacked = min(unacked, NATS_MAX_ACK_PENDING // spec.max_instances - 2 * rows)
    return LakeLimits(max_bytes=int(lake.target_file_mb * 1024**2), max_secs=secs,
                      max_messages=max(unacked, 1))


class LakeBuffer:
    """Outputs and deliveries of micro-batches not yet committed, in arrival order."""

    def __init__(self, limits: LakeLimits):
        self.limits = limits
        self._parts: dict[str, list[pa.Table]] = {}
        self.deliveries: list[Delivery] = []
        self.ids: set[str] = set()  # a publisher's duplicate of a buffered message: skipped
        self.nbytes = 0
        self._since: float | None = None  # monotonic: the oldest buffered micro-batch

    def __len__(self) -> int:
        return len(self.deliveries)

    def add(self, outputs: dict[str, pa.Table], deliveries: list[Delivery]
            ) -> tuple[dict[str, pa.Table], list[Delivery]] | None:
        """Buffer one micro-batch; what to commit now if the buffer is full, else None."""
        if self._since is None:
            self._since = time.monotonic()
        for name, table in outputs.items():
            if table.num_rows:
                self._parts.setdefault(name, []).append(table)
                self.nbytes += table.nbytes
        self.deliveries.extend(deliveries)
        self.ids.update(d.id for d in deliveries)
        full = (self.nbytes >= self.limits.max_bytes
                or len(self.deliveries) >= self.limits.max_messages)
        return self.take() if full else None

    def due(self) -> bool:
        """Something is buffered and its age bound is reached."""
        return self._since is not None and \
            time.monotonic() - self._since >= self.limits.max_secs

    def take(self) -> tuple[dict[str, pa.Table], list[Delivery]] | None:
        """Everything buffered, one table per output (None if empty); the buffer is empty
        afterwards."""
        if not self.deliveries:
            return None
        outputs = {n: pa.concat_tables(p) for n, p in self._parts.items()}
        deliveries = self.deliveries
        self.drop()
        return outputs, deliveries

    def drop(self) -> int:
        """Forget the buffer (a lost broker connection: its deliveries come back)."""
        n = len(self.deliveries)
        self._parts, self.deliveries, self.nbytes, self._since = {}, [], 0, None
        self.ids = set()
        return n
