"""NATS JetStream as the messagingsystem (nats-py).

Per tenant: a work-queue stream ``<PREFIX>_<TENANT>`` on subject ``<prefix>.<tenant>.in`` with
one durable pull consumer shared by the tenant's instances (explicit ack, ``ack_wait`` =
``lease_secs``), and a stream ``<PREFIX>_<TENANT>_DLQ`` for dead letters. Publishes carry
``Nats-Msg-Id`` (server-side dedup window) and wait for the PubAck.

No client-side reconnection: a lost connection makes every call raise ``BrokerUnavailable``
at once, and the caller closes the broker and reconnects with back-off (``stream/retry.py``);
the streams and durable consumers live on the server, so nothing else needs restoring.

An acknowledged publish survives a server crash only with ``sync_interval: always`` in the
server's JetStream config (NATS 2.10+; the default syncs every two minutes).

simbdp connects as the platform user of the broker URL. With ``broker.nats_auth_file`` set,
``issue_credentials`` gives a tenant its own user, allowed on ``<prefix>.<tenant>.>`` and its
own stream only (see ``nats_auth.py``); unset, the server runs without per-tenant users and
anyone who can reach it may publish to any tenant's subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, RetentionPolicy, StorageType
from nats.js.errors import NotFoundError, ServiceUnavailableError

from simbdp.errors import BrokerUnavailable, ConfigError, CredentialsIssued
from simbdp.observe.logs import get_logger
from simbdp.profiles.platform import BrokerSettings
from simbdp.stream.brokers.base import Delivery, OutMessage, TenantCredentials, register_broker
from simbdp.stream.brokers.nats_auth import NatsUsers, tenant_permissions

__all__ = ["NatsBroker"]

_ERRORS = (NatsError, OSError, asyncio.TimeoutError)
_JS_READY_SECS = 5.0
OP_TIMEOUT_SECS = 15.0  # no call waits longer on a server that does not answer
PUBACK_SECS = 5.0  # nats-py's default wait for one PubAck
_DURABLE = "ingest"  # the tenant's durable pull consumer
AHEAD_SECS = 0.25  # the longest a pull made ahead of the next fetch waits on the server


def _redelivered(m: Any) -> bool:
    """Whether JetStream delivered ``m`` before, read from its reply subject alone:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<...>`` (9 tokens) or, with a domain and an
    account, ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<...>`` (12).
    nats-py's ``Msg.metadata`` parses every field and took a sixth of the consumer's time."""
    tokens = m.reply.split(".")
    if len(tokens) == 9:
        return tokens[4] != "1"
    if len(tokens) >= 12:
        return tokens[6] != "1"
    return bool(m.metadata.num_delivered > 1)


_HEADER_NAME_SPACES = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.isspace() finds in ASCII


def _header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines`` (2.16) to the letter, a third of its time:
    the check for spaces in a name is one ``bytes.translate``, not a generator over its
    characters. It parsed every message's headers in a fifth of the consumer's time."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            key = name.strip()
            if key.isascii() and len(key.translate(None, _HEADER_NAME_SPACES)) == len(key):
                out[key.decode()] = value.strip().decode("utf-8", "replace")
    return out


class _Client(NatsClient):
    """nats-py's client with the faster header parser (used when ``fast_mail_parser`` is
    not installed, as here)."""

    _parse_header_lines = staticmethod(_header_lines)


async def _connect(url: str, **options: Any) -> NatsClient:
    """``nats.connect`` with :class:`_Client`."""
    nc = _Client()
    await nc.connect(url, **options)
    return nc


async def _quiet(_: Exception) -> None:
    """nats-py prints connection errors by default; callers handle the exception."""


@register_broker
class NatsBroker:
    """JetStream streams per tenant, durable pull consumers."""

    kind: ClassVar[str] = "nats"
    _said_no_users: ClassVar[bool] = False

    def __init__(self, settings: BrokerSettings, prefix: str = "simbdp"):
        if settings.url is None:
            raise ValueError("a nats broker needs a url")
        self.url, self.prefix = settings.url.get_secret_value(), prefix
        self.ack_wait = settings.lease_secs
        self.settings = settings
        self._nc: Any = None
        self._js: Any = None
        self._subs: dict[str, Any] = {}
        self._declared: set[str] = set()
        #: per tenant: the pull made ahead of the next fetch, what it brought beyond that
        #: fetch's ``max_messages``, and the most messages a fetch asked for
        self._ahead: dict[str, asyncio.Task[list[Delivery]]] = {}
        self._left: dict[str, list[Delivery]] = {}
        self._ahead_size: dict[str, int] = {}

    def _stream(self, tenant: str) -> str:
        return f"{self.prefix}_{tenant}".upper()

    async def connect(self) -> None:
        if self._nc is not None and self._nc.is_connected:
            return
        await self.close()  # a connection lost since: start afresh
        if self.settings.nats_auth_file is None and not NatsBroker._said_no_users:
            NatsBroker._said_no_users = True
            get_logger("simbdp.stream").info(
                "nats_without_tenant_users", reason="broker.nats_auth_file is not set: NATS "
                "runs without per-tenant users; any client that reaches it may publish to "
                "every tenant's subjects")
        try:
            # one quick attempt: nats-py 2.16 with allow_reconnect=False waits forever on a
            # server that is down; the caller's back-off does the waiting
            self._nc = await asyncio.wait_for(_connect(
                self.url, connect_timeout=5, max_reconnect_attempts=1, reconnect_time_wait=0.1,
                error_cb=_quiet), 7)
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS connection failed: {e}") from e
        self._js = self._nc.jetstream()

    def _check_alive(self) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise BrokerUnavailable("NATS: the connection is lost or was never opened")

    async def _give_back(self, tenants: list[str] | None = None) -> None:
        """What was pulled ahead and not handed out goes back to the queue at once (a NAK
        each), not after ``ack_wait``; a pull under way is let finish first (it waits at
        most ``AHEAD_SECS``)."""
        tenants = list(self._ahead.keys() | self._left.keys()) if tenants is None else tenants
        pulls = [p for t in tenants if (p := self._ahead.pop(t, None)) is not None]
        held = [d for t in tenants for d in self._left.pop(t, [])]
        if pulls:
            _, late = await asyncio.wait(pulls, timeout=AHEAD_SECS + 2)
            for p in late:
                p.cancel()  # what it had pulled comes back after ack_wait
            await asyncio.gather(*pulls, return_exceptions=True)
            held += [d for p in pulls if not p.cancelled() and p.exception() is None
                     for d in p.result()]
        if held and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(BrokerUnavailable):
                await self._settle(held, "-NAK", "nak")

    async def close(self) -> None:
        await self._give_back()
        if self._nc is not None:
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(self._nc.close(), 5)
        self._nc = self._js = None
        self._subs.clear()
        self._declared.clear()

    async def _add(self, name: str, subject: str, retention: RetentionPolicy) -> None:
        # JetStream answers "no responders" for a moment after a configuration reload
        deadline = time.monotonic() + _JS_READY_SECS
        while True:
            try:
                await self._js.add_stream(name=name, subjects=[subject],
                                          storage=StorageType.FILE, retention=retention)
                return
            except ServiceUnavailableError as e:
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(f"NATS: cannot create stream {name}: {e}") from e
                await asyncio.sleep(0.2)
            except _ERRORS as e:
                raise BrokerUnavailable(f"NATS: cannot create stream {name}: {e}") from e

    async def _declare(self, tenant: str) -> None:
        if tenant in self._declared:
            return
        await self.connect()
        s = self._stream(tenant)
        await self._add(s, f"{self.prefix}.{tenant}.in", RetentionPolicy.WORK_QUEUE)
        await self._add(f"{s}_DLQ", f"{self.prefix}.{tenant}.dlq", RetentionPolicy.LIMITS)
        self._declared.add(tenant)

    async def ensure_tenant(self, tenant: str) -> None:
        await self._declare(tenant)

    async def issue_credentials(self, tenant: str, *, rotate: bool = False
                                ) -> TenantCredentials:
        if self.settings.nats_auth_file is None:
            raise ConfigError(f"tenant {tenant!r}: NATS runs without per-tenant users; set "
                              "broker.nats_auth_file (and nats_pid_file) in platform.yaml and "
                              "include that file in the nats-server config")
        users = NatsUsers(self.settings.nats_auth_file, self.settings.nats_pid_file, self.url)
        user, secret = f"{self.prefix}-{tenant}", secrets.token_urlsafe(24)
        if user in users.users() and not rotate:
            raise CredentialsIssued(tenant, user)
        if not users.path.exists():
            await asyncio.to_thread(users.write)  # the platform user, for a server to start
        try:
            await self._declare(tenant)  # as the platform user, before the tenant's user
        except BrokerUnavailable as e:
            raise BrokerUnavailable(
                f"tenant {tenant!r}: {e}; the users file {users.path} has the platform user: "
                "start nats-server with it included, then ask again") from e
        reloaded = await asyncio.to_thread(
            users.set_user, user, secret,
            tenant_permissions(self.prefix, tenant, self._stream(tenant)))
        parts = urlsplit(self.url)
        url = (f"{parts.scheme}://{quote(user, safe='')}:{quote(secret, safe='')}@"
               f"{parts.hostname}:{parts.port or 4222}")
        creds = TenantCredentials(tenant=tenant, username=user, password=secret, url=url,
                                  inbox_prefix=f"_INBOX_{tenant}")
        if reloaded:
            await self._wait_usable(creds)
        else:
            get_logger("simbdp.stream", tenant=tenant).warning(
                "nats_users_not_reloaded", file=str(users.path),
                reason="no running nats-server found through broker.nats_pid_file: the "
                       "new user works once the server is reloaded or started")
        return creds

    async def _wait_usable(self, creds: TenantCredentials, secs: float = 10.0) -> None:
        """The reload is asynchronous: return once the new secret is accepted."""
        deadline = time.monotonic() + secs
        while True:
            try:
                nc = await asyncio.wait_for(nats.connect(
                    creds.url, connect_timeout=2, max_reconnect_attempts=1,
                    reconnect_time_wait=0.1, error_cb=_quiet), 4)
                await nc.close()
                return
            except _ERRORS as e:
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"tenant {creds.tenant!r}: NATS does not accept user "
                        f"{creds.username!r} {secs:.0f}s after the reload of "
                        f"{self.settings.nats_auth_file}: {e}") from e
                await asyncio.sleep(0.2)

    async def _publish(self, subject: str, m: OutMessage, extra: dict[str, str],
                       timeout: float = PUBACK_SECS) -> None:
        headers = {**m.headers, **extra, "Nats-Msg-Id": m.id,
                   "x-published-at": repr(m.published_at)}
        await self._js.publish(subject, m.body, headers=headers, timeout=timeout)

    async def publish(self, tenant: str, messages: list[OutMessage]) -> None:
        await self._declare(tenant)
        subject = f"{self.prefix}.{tenant}.in"
        try:
            # a server that fsyncs every message (sync_interval: always) confirms a batch sent
            # at once one message after another: nats-py's 5 s were too short for 5,000 on a
            # loaded machine; a dead server is still reported within seconds for one message
            wait = min(OP_TIMEOUT_SECS, PUBACK_SECS + 0.002 * len(messages))
            await asyncio.gather(*(self._publish(subject, m, {}, wait) for m in messages))
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS publish for tenant {tenant!r} failed: {e}") from e

    async def _sub(self, tenant: str) -> Any:
        if tenant not in self._subs:
            await self._declare(tenant)
            self._subs[tenant] = await self._js.pull_subscribe(
                f"{self.prefix}.{tenant}.in", durable=_DURABLE, stream=self._stream(tenant),
                config=ConsumerConfig(ack_wait=self.ack_wait, max_ack_pending=20_000))
        return self._subs[tenant]

    async def fetch(self, tenant: str, max_messages: int, timeout_secs: float) -> list[Delivery]:
        """Hand out what the pull made ahead brought, then make the next one: the messages
        flow in while the instance decodes and commits, as RabbitMQ's prefetch lets them (a
        pull request is the only way JetStream sends a pull consumer anything: with none under
        way while the instance waited for a commit, its event loop sat idle a fifth of the
        time). What was pulled is at most one fetch's worth ahead, and goes back to the queue
        when the broker closes. Acks still follow the commits alone."""
        await self.connect()
        try:
            sub = await self._sub(tenant)
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS fetch for tenant {tenant!r} failed: {e}") from e
        self._check_alive()  # an idle consumer sees a lost connection here
        size = self._ahead_size[tenant] = max(max_messages, self._ahead_size.get(tenant, 0))
        out = self._left.pop(tenant, [])
        pull = self._ahead.pop(tenant, None)
        if pull is None and not out:
            pull = asyncio.ensure_future(self._pull(tenant, sub, max_messages, timeout_secs))
        if pull is not None and len(out) < max_messages:
            if not out:
                await asyncio.wait({pull}, timeout=max(timeout_secs, 0.05))
            if pull.done():
                out += pull.result()
                pull = None
        if len(out) > max_messages:
            self._left[tenant] = out[max_messages:]
            del out[max_messages:]
        self._ahead[tenant] = pull if pull is not None else asyncio.ensure_future(
            self._pull(tenant, sub, size, AHEAD_SECS))
        return out

    async def _pull(self, tenant: str, sub: Any, n: int, timeout_secs: float
                    ) -> list[Delivery]:
        try:
            msgs = await sub.fetch(n, timeout=max(timeout_secs, 0.05))
        except (TimeoutError, NatsTimeout):  # nats-py raises either when none came
            return []
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS fetch for tenant {tenant!r} failed: {e}") from e
        return self._deliveries(tenant, msgs)

    def _deliveries(self, tenant: str, msgs: list[Any]) -> list[Delivery]:
        """One pass, as cheap per message as can be: nats-py parsed each message's headers
        into a dict of its own, so the broker's two are popped from it, not copied out; a
        first delivery is told by its reply subject's prefix alone. The token is the reply
        subject (all an ack needs), not nats-py's message: a micro-batch in flight then holds
        one object per message that the garbage collector scans, not two (the collector's
        passes over the batches in flight took a sixth of the consumer's time)."""
        first = f"$JS.ACK.{self._stream(tenant)}.{_DURABLE}.1."
        now = time.time()  # a tenant's own client may send neither: the receipt time,
        out: list[Delivery] = []  # and the content hash
        append = out.append
        for m in msgs:
            headers = m.headers
            if headers is None:
                headers = {}
            mid = headers.pop("Nats-Msg-Id", None) or \
                "sha256:" + hashlib.sha256(m.data).hexdigest()
            at = headers.pop("x-published-at", None)
            append(Delivery(mid, m.data, now if at is None else float(at),
                            not m.reply.startswith(first) and _redelivered(m), headers,
                            m.reply))
        return out

    async def _settle(self, deliveries: list[Delivery], payload: str, what: str) -> None:
        """One ``PUB`` to each message's reply subject, all written as one buffer into
        nats-py's pending output (``Client._send_command``, what ``publish`` ends in), then
        one flush: a micro-batch costs one round trip and one string join, not a ``publish``
        call per message (subject checks, a frame and a list append each: a tenth of the
        consumer's time). The reply subjects come from the server's MSG lines, so they hold
        no spaces. JetStream has no multi-message ack for a consumer shared by several
        instances (``AckAll`` would settle other instances' messages)."""
        if not deliveries:
            return
        try:
            self._check_alive()
            tail = f" {len(payload.encode())}\r\n{payload}\r\n"
            frames = (tail + "PUB ").join([d.token for d in deliveries])
            await self._nc._send_command(f"PUB {frames}{tail}".encode())
            await asyncio.wait_for(self._nc.flush(), OP_TIMEOUT_SECS)
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS {what} failed: {e}") from e

    async def ack(self, tenant: str, deliveries: list[Delivery], *,
                  whole_batch: bool = False) -> None:
        await self._settle(deliveries, "", "ack")  # what nats-py's Msg.ack() sends

    async def nack(self, tenant: str, deliveries: list[Delivery]) -> None:
        await self._settle(deliveries, "-NAK", "nak")

    async def dead_letter(self, tenant: str, delivery: Delivery, reason: str) -> None:
        m = OutMessage(delivery.id, delivery.body, delivery.published_at, delivery.headers)
        try:
            await self._publish(f"{self.prefix}.{tenant}.dlq", m, {"x-reason": reason})
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS dead-letter failed: {e}") from e
        await self._settle([delivery], "", "dead-letter ack")

    async def read_dead_letters(self, tenant: str, limit: int = 100) -> list[Delivery]:
        await self._declare(tenant)
        name = f"{self._stream(tenant)}_DLQ"
        info = await self._js.stream_info(name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if len(out) >= limit or info.state.messages == 0:
                break
            try:
                raw = await self._js.get_msg(name, seq)
            except NotFoundError:
                continue
            headers = dict(raw.headers or {})
            out.append(Delivery(id=headers.pop("Nats-Msg-Id", ""), body=raw.data or b"",
                                published_at=float(headers.pop("x-published-at", "0")),
                                redelivered=False, headers=headers))
        return out

    async def backlog(self, tenant: str) -> int:
        await self.connect()
        try:
            info = await (await self._sub(tenant)).consumer_info()
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS consumer info failed: {e}") from e
        return int(info.num_pending)

    async def _reports(self) -> Any:
        await self.connect()
        if "__reports" not in self._subs:
            name = f"{self.prefix}_REPORTS".upper()
            await self._add(name, f"{self.prefix}.reports", RetentionPolicy.WORK_QUEUE)
            self._subs["__reports"] = await self._js.pull_subscribe(
                f"{self.prefix}.reports", durable="monitor", stream=name)
        return self._subs["__reports"]

    async def publish_report(self, report: dict[str, Any]) -> None:
        try:
            await self._reports()
            await self._js.publish(f"{self.prefix}.reports", json.dumps(report).encode())
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS report failed: {e}") from e

    async def fetch_reports(self, max_reports: int, timeout_secs: float) -> list[dict[str, Any]]:
        try:
            sub = await self._reports()
            self._check_alive()
            try:
                msgs = await sub.fetch(max_reports, timeout=max(timeout_secs, 0.05))
            except (TimeoutError, NatsTimeout):
                self._check_alive()
                return []
            await asyncio.gather(*(m.ack() for m in msgs))
        except _ERRORS as e:
            raise BrokerUnavailable(f"NATS: reading reports failed: {e}") from e
        return [json.loads(m.data) for m in msgs]

    async def purge(self, tenant: str) -> None:
        await self.connect()
        await self._give_back([tenant])
        for name in (self._stream(tenant), f"{self._stream(tenant)}_DLQ"):
            with contextlib.suppress(*_ERRORS):
                await self._js.delete_stream(name)
        self._subs.pop(tenant, None)
        self._declared.discard(tenant)
