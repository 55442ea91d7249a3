"""The messagingsystem contract: one per-tenant durable queue, pulled in batches.

A broker knows nothing of sinks. Publishing returns only once the broker has the messages on
disk (publisher confirms, JetStream acks with ``sync_interval: always``, SQLite FULL sync).
Deliveries are acknowledged only after the sink commit; unacknowledged ones come back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

__all__ = [
    "BROKERS",
    "Broker",
    "Delivery",
    "OutMessage",
    "TenantCredentials",
    "register_broker",
]


@dataclass(frozen=True)
class OutMessage:
    """A message to publish: ``id`` is the publisher's dedup id; ``published_at`` epoch secs."""

    id: str
    body: bytes
    published_at: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Delivery:
    """A message received from a tenant queue; ``token`` is broker-specific, for ack/nack.
    One is built per message received: slots make that and each attribute read cheaper."""

    id: str
    body: bytes
    published_at: float
    redelivered: bool
    headers: dict[str, str]
    token: Any = None


@dataclass(frozen=True)
class TenantCredentials:
    """A tenant's own broker user, handed to the tenant once: ``url`` carries the secret.

    ``inbox_prefix``: NATS only, the reply-subject prefix the tenant's client must use
    (nats-py ``connect(inbox_prefix=...)``); its user may subscribe to no other inbox.
    """

    tenant: str
    username: str
    password: str = field(repr=False)
    url: str = field(repr=False)
    inbox_prefix: str | None = None


class Broker(Protocol):
    """Async broker client. One instance per process/event loop."""

    kind: ClassVar[str]

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant's queue and dead-letter queue. Idempotent; never touches the
        tenant's broker user (simbdp itself publishes and consumes as the platform user)."""

    async def issue_credentials(self, tenant: str, *, rotate: bool = False
                                ) -> TenantCredentials:
        """Create the tenant's own broker user (allowed on the tenant's queues only) with a
        fresh secret, or with ``rotate`` give the existing user a fresh secret. The secret is
        returned once and stored nowhere by simbdp.

        Raises CredentialsIssued (the user exists and ``rotate`` is false), ConfigError (this
        broker has no per-tenant users), BrokerUnavailable."""

    async def publish(self, tenant: str, messages: list[OutMessage]) -> None:
        """Publish durably; return once the broker confirmed every message.
        Raises BrokerUnavailable."""

    async def fetch(self, tenant: str, max_messages: int, timeout_secs: float) -> list[Delivery]:
        """Pull up to ``max_messages``, waiting at most ``timeout_secs`` for the first."""

    async def ack(self, tenant: str, deliveries: list[Delivery], *,
                  whole_batch: bool = False) -> None:
        """Acknowledge deliveries. ``whole_batch``: every delivery fetched before these is
        settled too, so the broker may acknowledge them all at once (RabbitMQ: one
        ``basic.ack`` with ``multiple``)."""

    async def nack(self, tenant: str, deliveries: list[Delivery]) -> None:
        """Return deliveries to the queue for redelivery."""

    async def dead_letter(self, tenant: str, delivery: Delivery, reason: str) -> None:
        """Move one delivery to the tenant's dead-letter queue with ``reason`` attached,
        then ack it on the main queue."""

    async def read_dead_letters(self, tenant: str, limit: int = 100) -> list[Delivery]:
        """Peek (without removing) at dead letters; the reason is ``headers['x-reason']``."""

    async def backlog(self, tenant: str) -> int:
        """Messages waiting in the tenant's queue (ready, not yet delivered)."""

    async def publish_report(self, report: dict[str, Any]) -> None:
        """Send an instance report to the monitor's channel."""

    async def fetch_reports(self, max_reports: int, timeout_secs: float) -> list[dict[str, Any]]:
        """Pull (and acknowledge) pending reports."""

    async def purge(self, tenant: str) -> None:
        """Delete the tenant's queues (tests and tenant removal)."""


BROKERS: dict[str, type] = {}


def register_broker(cls: type) -> type:
    BROKERS[cls.kind] = cls
    return cls
