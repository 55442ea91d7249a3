"""RabbitMQ as the messagingsystem (aio-pika).

Per tenant: a direct exchange ``<prefix>.<tenant>.x`` (routing key ``in``) bound to a durable
quorum queue ``<prefix>.<tenant>.in`` (dead-lettering to the quorum queue
``<prefix>.<tenant>.dlq``). Publishes wait for publisher confirms (the message is on the
quorum queue's disks). simbdp itself publishes and consumes as the platform user of the
broker URL in platform.yaml.

The connection is a plain one, not aio-pika's robust one: a robust connection restored after a
broker restart without the consumers of queues it had not declared itself, and its calls waited
for the reconnection with no deadline, so an idle instance hung with no consumer and ignored
SIGTERM. Here a lost connection makes every call raise ``BrokerUnavailable`` at once; the
caller closes the broker and reconnects with back-off (``stream/retry.py``), which declares the
queues and consumers again.

A tenant's own user ``<prefix>-<tenant>`` (users are node-wide, permissions per vhost) is made
by ``issue_credentials`` only, allowed to configure, write and read resources named
``<prefix>.<tenant>.*`` in the platform's vhost: it cannot publish to another tenant's
exchange nor to ``amq.default``, nor read another queue. Its secret is returned once and never
reset implicitly; RabbitMQ keeps only its hash. Users are managed with ``rabbitmqctl`` on the
broker's host; a remote deployment would use the management HTTP API instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import subprocess
import time
from collections import deque
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from simbdp.errors import AuthError, BrokerUnavailable, CredentialsIssued
from simbdp.profiles.platform import BrokerSettings
from simbdp.stream.brokers.base import Delivery, OutMessage, TenantCredentials, register_broker

__all__ = ["RabbitMQBroker"]

_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError,
           aio_pika.exceptions.ChannelInvalidStateError)
OP_TIMEOUT_SECS = 15.0  # no call waits longer on a broker that does not answer
# aiormq logs an ERROR at every failed connection attempt: simbdp logs one line per outage
# itself (broker_lost, broker_reconnected), so keep only aiormq's critical ones
logging.getLogger("aiormq").setLevel(logging.CRITICAL)


def _wrap(e: BaseException, what: str) -> Exception:
    refused = (aiormq.exceptions.ChannelAccessRefused,
               aiormq.exceptions.ProbableAuthenticationError)
    if isinstance(e, refused):
        return AuthError(f"RabbitMQ refused {what}: {e}")
    return BrokerUnavailable(f"RabbitMQ {what} failed: {e}")


def _content_id(body: bytes) -> str:
    """The id of a message published without ``message_id`` (a tenant's own client): its
    content hash, so a redelivery is recognised; identical bodies then load once."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _delivery(msg: DeliveredMessage) -> Delivery:
    props = msg.header.properties
    headers = {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
               for k, v in (props.headers or {}).items()}
    # simbdp's own header, else the AMQP timestamp a tenant's client may set, else now
    published = headers.pop("x-published-at", None)
    return Delivery(id=props.message_id or _content_id(msg.body), body=msg.body,
                    published_at=float(published) if published is not None else
                    props.timestamp.timestamp() if props.timestamp else time.time(),
                    redelivered=bool(msg.redelivered), headers=headers, token=msg)


class _Inbox:
    """Deliveries the broker pushed (up to the prefetch), waiting to be fetched."""

    def __init__(self) -> None:
        self.items: deque[DeliveredMessage] = deque()
        self.arrived = asyncio.Event()

    def put(self, msg: DeliveredMessage) -> None:
        self.items.append(msg)
        self.arrived.set()


def _ctl(*args: str, tenant: str, ok_codes: tuple[int, ...] = (0,)
         ) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BrokerUnavailable(f"tenant {tenant!r}: rabbitmqctl {args[0]} failed: {e}") from e
    if done.returncode not in ok_codes:
        raise BrokerUnavailable(f"tenant {tenant!r}: rabbitmqctl {args[0]} failed "
                                f"({done.returncode}): {done.stderr.strip() or done.stdout}")
    return done


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
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._buffers: dict[str, _Inbox] = {}
        self._declared: set[str] = set()

    def _names(self, tenant: str) -> tuple[str, str, str]:
        base = f"{self.prefix}.{tenant}"
        return f"{base}.x", f"{base}.in", f"{base}.dlq"

    async def connect(self) -> None:
        if self._conn is not None and not self._conn.is_closed:
            return
        await self.close()  # a connection lost since: start afresh
        try:
            self._conn = await aio_pika.connect(self.url, timeout=10)
            self._channel = await self._conn.channel(publisher_confirms=True)
            await self._channel.set_qos(prefetch_count=self.prefetch)
        except _ERRORS as e:
            self._conn = None
            raise _wrap(e, "connection") from e

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed or self._conn is None \
                or self._conn.is_closed:
            raise BrokerUnavailable("RabbitMQ: the connection is lost or was never opened")
        return self._channel

    def _check_alive(self) -> None:
        self.channel  # noqa: B018 (raises BrokerUnavailable when the connection is lost)

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(self._conn.close(), 5)
        self._conn = self._channel = None
        self._buffers.clear()
        self._declared.clear()

    async def _declare(self, tenant: str) -> None:
        if tenant in self._declared:
            return
        exchange, queue, dlq = self._names(tenant)
        ch = self.channel
        try:
            t = OP_TIMEOUT_SECS
            await ch.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"},
                                   timeout=t)
            q = await ch.declare_queue(queue, durable=True, arguments={
                "x-queue-type": "quorum", "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq}, timeout=t)
            x = await ch.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True,
                                          timeout=t)
            await q.bind(x, routing_key="in", timeout=t)
        except _ERRORS as e:
            raise _wrap(e, f"declaring the queues of tenant {tenant!r}") from e
        self._declared.add(tenant)

    async def ensure_tenant(self, tenant: str) -> None:
        await self.connect()
        await self._declare(tenant)

    async def issue_credentials(self, tenant: str, *, rotate: bool = False
                                ) -> TenantCredentials:
        await self.ensure_tenant(tenant)  # so the tenant can publish at once
        return await asyncio.to_thread(self._issue, tenant, rotate)

    def _issue(self, tenant: str, rotate: bool) -> TenantCredentials:
        # hex: a secret starting with "-" would be taken for an option by rabbitmqctl
        user, secret = f"{self.prefix}-{tenant}", secrets.token_hex(24)
        parts = urlsplit(self.url)
        vhost = unquote(parts.path.lstrip("/")) or "/"
        added = _ctl("add_user", user, secret, tenant=tenant, ok_codes=(0, 70))
        if added.returncode == 70:  # EX_SOFTWARE: the user exists already
            if not rotate:
                raise CredentialsIssued(tenant, user)
            _ctl("change_password", user, secret, tenant=tenant)
            self._close_connections(user, tenant)
        own = "^" + f"{self.prefix}.{tenant}.".replace(".", "\\.") + ".*$"
        _ctl("set_permissions", "-p", vhost, user, own, own, own, tenant=tenant)
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        url = (f"{parts.scheme}://{quote(user, safe='')}:{quote(secret, safe='')}@"
               f"{parts.hostname}:{port}/{quote(vhost, safe='')}")
        return TenantCredentials(tenant=tenant, username=user, password=secret, url=url)

    @staticmethod
    def _close_connections(user: str, tenant: str) -> None:
        """Connections opened with the old secret stay open after change_password: close
        them, so the rotation takes effect at once."""
        # tab-separated: the json formatter prints pids as #PID<...>, which close_connection
        # does not take
        out = _ctl("list_connections", "user", "pid", "--no-table-headers", tenant=tenant)
        for line in out.stdout.splitlines():
            who, _, pid = line.partition("\t")
            if who == user and pid:
                _ctl("close_connection", pid.strip(), "broker credentials rotated",
                     tenant=tenant, ok_codes=(0, 1, 69))  # it may be gone already

    async def publish(self, tenant: str, messages: list[OutMessage]) -> None:
        await self.connect()
        await self._declare(tenant)

        async def one(m: OutMessage) -> None:
            await exchange.publish(aio_pika.Message(
                m.body, message_id=m.id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={**m.headers, "x-published-at": repr(m.published_at)}),
                routing_key="in", timeout=OP_TIMEOUT_SECS)

        try:
            exchange = await self.channel.get_exchange(self._names(tenant)[0], ensure=False)
            await asyncio.gather(*(one(m) for m in messages))
        except _ERRORS as e:
            raise _wrap(e, f"publish for tenant {tenant!r}") from e

    async def _buffer(self, tenant: str, batch: int) -> _Inbox:
        if tenant not in self._buffers:
            await self._declare(tenant)
            if 2 * batch > self.prefetch:
                # room for the micro-batch being written and the next one being collected
                self.prefetch = 2 * batch
                await self.channel.set_qos(prefetch_count=self.prefetch)
            inbox = _Inbox()
            # consumed on aio-pika's channel through aiormq itself: aio-pika wraps every
            # delivery in an IncomingMessage and one more task, a third of the client's CPU
            raw = await self.channel.get_underlay_channel()
            await raw.basic_consume(self._names(tenant)[1], inbox.put, no_ack=False,
                                    timeout=OP_TIMEOUT_SECS)
            self._buffers[tenant] = inbox
        return self._buffers[tenant]

    async def fetch(self, tenant: str, max_messages: int, timeout_secs: float) -> list[Delivery]:
        await self.connect()
        try:
            inbox = await self._buffer(tenant, max_messages)
            self._check_alive()  # an idle consumer sees a lost connection here
        except _ERRORS as e:
            raise _wrap(e, f"consume for tenant {tenant!r}") from e
        if not inbox.items:
            inbox.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.arrived.wait(), max(0.0, timeout_secs))
        items = inbox.items
        return [_delivery(items.popleft()) for _ in range(min(max_messages, len(items)))]

    async def ack(self, tenant: str, deliveries: list[Delivery], *,
                  whole_batch: bool = False) -> None:
        if not deliveries:
            return
        try:
            if whole_batch:
                # delivery tags grow in delivery order on a channel: acking the highest with
                # "multiple" settles the batch in one frame instead of one per message
                last = max(deliveries, key=lambda d: d.token.delivery_tag).token
                await last.channel.basic_ack(last.delivery_tag, multiple=True)
            else:
                for d in deliveries:  # frames queued without waiting for each to drain
                    await d.token.channel.basic_ack(d.token.delivery_tag, wait=False)
        except _ERRORS as e:
            raise _wrap(e, "ack") from e

    async def nack(self, tenant: str, deliveries: list[Delivery]) -> None:
        try:
            for d in deliveries:
                await d.token.channel.basic_nack(d.token.delivery_tag, requeue=True,
                                                 wait=False)
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
            await delivery.token.channel.basic_ack(delivery.token.delivery_tag)
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
                out.append(Delivery(id=msg.message_id or _content_id(msg.body), body=msg.body,
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
            ok = await asyncio.wait_for(
                raw.queue_declare(self._names(tenant)[1], passive=True), OP_TIMEOUT_SECS)
        except _ERRORS as e:
            raise _wrap(e, "backlog") from e
        return int(ok.message_count or 0)

    async def publish_report(self, report: dict[str, Any]) -> None:
        await self.connect()
        name = f"{self.prefix}.reports"
        try:
            await self.channel.declare_queue(name, durable=True, timeout=OP_TIMEOUT_SECS)
            await self.channel.default_exchange.publish(
                aio_pika.Message(json.dumps(report).encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name, timeout=OP_TIMEOUT_SECS)
        except _ERRORS as e:
            raise _wrap(e, "report") from e

    async def fetch_reports(self, max_reports: int, timeout_secs: float) -> list[dict[str, Any]]:
        await self.connect()
        try:
            return await self._fetch_reports(max_reports, timeout_secs)
        except _ERRORS as e:
            raise _wrap(e, "reading reports") from e

    async def _fetch_reports(self, max_reports: int, timeout_secs: float
                             ) -> list[dict[str, Any]]:
        q = await self.channel.declare_queue(f"{self.prefix}.reports", durable=True,
                                             timeout=OP_TIMEOUT_SECS)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_secs
        while len(out) < max_reports:
            msg = await q.get(no_ack=True, fail=False, timeout=OP_TIMEOUT_SECS)
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
