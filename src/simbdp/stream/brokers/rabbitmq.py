"""RabbitMQ as the messagingsystem (aio-pika).

Per tenant: a direct exchange ``<prefix>.<tenant>.x`` bound to a durable quorum queue
``<prefix>.<tenant>.in`` (dead-lettering to the quorum queue ``<prefix>.<tenant>.dlq``), and a
RabbitMQ user ``<prefix>-<tenant>`` allowed to configure, write and read only resources named
``<prefix>.<tenant>.*``: it cannot publish to another tenant's exchange nor read its queue.
Publishes wait for publisher confirms (the message is on the quorum queue's disks).
Users are created with ``rabbitmqctl`` on the broker's host; a remote deployment would use the
management HTTP API instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import time
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from simbdp.errors import AuthError, BrokerUnavailable
from simbdp.profiles.models import BrokerSettings
from simbdp.stream.brokers.base import Delivery, OutMessage, TenantCredentials, register_broker

__all__ = ["RabbitMQBroker"]

_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError,
           aio_pika.exceptions.ChannelInvalidStateError)


def _wrap(e: BaseException, what: str) -> Exception:
    refused = (aiormq.exceptions.ChannelAccessRefused,
               aiormq.exceptions.ProbableAuthenticationError)
    if isinstance(e, refused):
        return AuthError(f"RabbitMQ refused {what}: {e}")
    return BrokerUnavailable(f"RabbitMQ {what} failed: {e}")


@register_broker
class RabbitMQBroker:
    """Durable quorum queues with publisher confirms and per-tenant users."""

    kind: ClassVar[str] = "rabbitmq"

    def __init__(self, settings: BrokerSettings, prefix: str = "simbdp"):
        if settings.url is None:
            raise ValueError("a rabbitmq broker needs a url")
        self.url = settings.url.get_secret_value()
        self.prefix = prefix
        self.prefetch = 2000
        self._conn: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._buffers: dict[str, asyncio.Queue[AbstractIncomingMessage]] = {}
        self._declared: set[str] = set()

    def _names(self, tenant: str) -> tuple[str, str, str]:
        base = f"{self.prefix}.{tenant}"
        return f"{base}.x", f"{base}.in", f"{base}.dlq"

    async def connect(self) -> None:
        if self._conn is not None:
            return
        try:
            self._conn = await aio_pika.connect_robust(self.url, timeout=10)
            self._channel = await self._conn.channel(publisher_confirms=True)
            await self._channel.set_qos(prefetch_count=self.prefetch)
        except _ERRORS as e:
            self._conn = None
            raise _wrap(e, "connection") from e

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise BrokerUnavailable("RabbitMQ: not connected")
        return self._channel

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*_ERRORS):
                await self._conn.close()
        self._conn = self._channel = None
        self._buffers.clear()
        self._declared.clear()

    async def _declare(self, tenant: str) -> None:
        if tenant in self._declared:
            return
        exchange, queue, dlq = self._names(tenant)
        ch = self.channel
        try:
            await ch.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
            q = await ch.declare_queue(queue, durable=True, arguments={
                "x-queue-type": "quorum", "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq})
            x = await ch.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
            await q.bind(x, routing_key="in")
        except _ERRORS as e:
            raise _wrap(e, f"declaring the queues of tenant {tenant!r}") from e
        self._declared.add(tenant)

    async def ensure_tenant(self, tenant: str) -> TenantCredentials | None:
        await self.connect()
        await self._declare(tenant)
        return await asyncio.to_thread(self._ensure_user, tenant)

    def _ensure_user(self, tenant: str) -> TenantCredentials:
        user, password = f"{self.prefix}-{tenant}", secrets.token_hex(16)
        vhost = unquote(urlsplit(self.url).path.lstrip("/")) or "/"
        add = subprocess.run(["rabbitmqctl", "-q", "add_user", user, password],
                             capture_output=True, text=True)
        if add.returncode != 0:
            subprocess.run(["rabbitmqctl", "-q", "change_password", user, password],
                           capture_output=True, check=True)
        own = "^" + f"{self.prefix}.{tenant}.".replace(".", "\\.") + ".*$"
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, own, own,
                        own], capture_output=True, check=True)
        return TenantCredentials(username=user, password=password)

    async def publish(self, tenant: str, messages: list[OutMessage]) -> None:
        await self.connect()
        await self._declare(tenant)
        exchange = await self.channel.get_exchange(self._names(tenant)[0], ensure=False)

        async def one(m: OutMessage) -> None:
            await exchange.publish(aio_pika.Message(
                m.body, message_id=m.id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={**m.headers, "x-published-at": repr(m.published_at)}),
                routing_key="in")

        try:
            await asyncio.gather(*(one(m) for m in messages))
        except _ERRORS as e:
            raise _wrap(e, f"publish for tenant {tenant!r}") from e

    async def _buffer(self, tenant: str, batch: int) -> asyncio.Queue[AbstractIncomingMessage]:
        if tenant not in self._buffers:
            await self._declare(tenant)
            if 2 * batch > self.prefetch:
                # room for the micro-batch being written and the next one being collected
                self.prefetch = 2 * batch
                await self.channel.set_qos(prefetch_count=self.prefetch)
            buf: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            q = await self.channel.get_queue(self._names(tenant)[1], ensure=False)
            await q.consume(buf.put, no_ack=False)
            self._buffers[tenant] = buf
        return self._buffers[tenant]

    async def fetch(self, tenant: str, max_messages: int, timeout_secs: float) -> list[Delivery]:
        await self.connect()
        try:
            buf = await self._buffer(tenant, max_messages)
        except _ERRORS as e:
            raise _wrap(e, f"consume for tenant {tenant!r}") from e
        out: list[Delivery] = []
        deadline = time.monotonic() + timeout_secs
        while len(out) < max_messages:
            try:
                msg = buf.get_nowait() if out else await asyncio.wait_for(
                    buf.get(), max(0.0, deadline - time.monotonic()))
            except (TimeoutError, asyncio.QueueEmpty):
                break
            headers = {k: str(v) for k, v in (msg.headers or {}).items()}
            out.append(Delivery(id=msg.message_id or "", body=msg.body,
                                published_at=float(headers.pop("x-published-at", "0")),
                                redelivered=bool(msg.redelivered), headers=headers, token=msg))
        return out

    async def ack(self, tenant: str, deliveries: list[Delivery], *,
                  whole_batch: bool = False) -> None:
        if not deliveries:
            return
        try:
            if whole_batch:
                # delivery tags grow in delivery order on a channel: acking the highest with
                # "multiple" settles the batch in one frame instead of one per message
                last = max(deliveries, key=lambda d: d.token.delivery_tag)
                await last.token.ack(multiple=True)
            else:
                await asyncio.gather(*(d.token.ack() for d in deliveries))
        except _ERRORS as e:
            raise _wrap(e, "ack") from e

    async def nack(self, tenant: str, deliveries: list[Delivery]) -> None:
        try:
            await asyncio.gather(*(d.token.nack(requeue=True) for d in deliveries))
        except _ERRORS as e:
            raise _wrap(e, "nack") from e

    async def dead_letter(self, tenant: str, delivery: Delivery, reason: str) -> None:
        headers = {**delivery.headers, "x-reason": reason,
                   "x-published-at": repr(delivery.published_at)}
        try:
            await self.channel.default_exchange.publish(aio_pika.Message(
                delivery.body, message_id=delivery.id, headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self._names(tenant)[2])
            await delivery.token.ack()
        except _ERRORS as e:
            raise _wrap(e, "dead-letter") from e

    async def read_dead_letters(self, tenant: str, limit: int = 100) -> list[Delivery]:
        await self.connect()
        await self._declare(tenant)
        ch = await self._conn.channel()  # type: ignore[union-attr]
        out = []
        try:
            q = await ch.get_queue(self._names(tenant)[2], ensure=False)
            while len(out) < limit:
                msg = await q.get(no_ack=False, fail=False)
                if msg is None:
                    break
                headers = {k: str(v) for k, v in (msg.headers or {}).items()}
                out.append(Delivery(id=msg.message_id or "", body=msg.body,
                                    published_at=float(headers.pop("x-published-at", "0")),
                                    redelivered=False, headers=headers))
        finally:
            await ch.close()  # unacked: they stay in the dead-letter queue
        return out

    async def backlog(self, tenant: str) -> int:
        await self.connect()
        await self._declare(tenant)
        try:
            # the robust channel caches declared queues: ask the broker itself
            raw = await self.channel.get_underlay_channel()
            ok = await raw.queue_declare(self._names(tenant)[1], passive=True)
        except _ERRORS as e:
            raise _wrap(e, "backlog") from e
        return int(ok.message_count or 0)

    async def publish_report(self, report: dict[str, Any]) -> None:
        import json

        await self.connect()
        name = f"{self.prefix}.reports"
        await self.channel.declare_queue(name, durable=True)
        await self.channel.default_exchange.publish(
            aio_pika.Message(json.dumps(report).encode(),
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name)

    async def fetch_reports(self, max_reports: int, timeout_secs: float) -> list[dict[str, Any]]:
        import json

        await self.connect()
        q = await self.channel.declare_queue(f"{self.prefix}.reports", durable=True)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_secs
        while len(out) < max_reports:
            msg = await q.get(no_ack=True, fail=False)
            if msg is None:
                if out or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
                continue
            out.append(json.loads(msg.body))
        return out

    async def purge(self, tenant: str) -> None:
        await self.connect()
        for name in self._names(tenant)[1:]:
            with contextlib.suppress(*_ERRORS):
                await self.channel.queue_delete(name)
        with contextlib.suppress(*_ERRORS):
            await self.channel.exchange_delete(self._names(tenant)[0])
        self._declared.discard(tenant)
        self._buffers.pop(tenant, None)
