"""The embedded messagingsystem: a durable queue in SQLite, for the single-machine default.

One database file (WAL, ``synchronous=FULL``: a publish returns only once it is on disk) is
shared by the publisher and every consumer process. A fetch leases messages for
``lease_secs``; an ack deletes them, a nack or an expired lease (a consumer that died) makes
them visible again, marked redelivered. No credentials: every process on the machine that
can open the file can use it (use RabbitMQ for per-tenant users).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

from simbdp.errors import BrokerUnavailable, ConfigError
from simbdp.profiles.platform import BrokerSettings
from simbdp.stream.brokers.base import Delivery, OutMessage, TenantCredentials, register_broker

__all__ = ["EmbeddedBroker"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, published_at REAL NOT NULL,
    headers TEXT NOT NULL, lease_until REAL NOT NULL DEFAULT 0, lease_token TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (tenant, lease_until, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, id TEXT NOT NULL,
    body BLOB NOT NULL, published_at REAL NOT NULL, headers TEXT NOT NULL, reason TEXT NOT NULL,
    dead_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
"""


@register_broker
class EmbeddedBroker:
    """SQLite-backed durable queues, one logical queue per tenant."""

    kind: ClassVar[str] = "embedded"

    def __init__(self, settings: BrokerSettings, prefix: str = "simbdp"):
        if settings.path is None:
            raise ValueError("the embedded broker needs a path")
        self.path = Path(settings.path) / f"{prefix}-queue.sqlite"
        self.lease_secs = settings.lease_secs
        # one connection, owned by one thread: sqlite3 connections used from several threads
        # fail now and then with "bad parameter or other API misuse" (CPython issue 118172)
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # plumbing ------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = self._db
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.executescript(_SCHEMA)
            except sqlite3.Error as e:
                raise BrokerUnavailable(f"embedded broker {self.path}: {e}") from e
            self._db = conn
        return conn

    def _tx(self, fn: Any) -> Any:
        """Run ``fn(conn)`` in one transaction. SQLite answers "bad parameter or other API
        misuse" (InterfaceError) now and then under load; the transaction was rolled back,
        so it is run again on a fresh connection (three tries) before the broker is called
        unavailable."""
        misuse: sqlite3.InterfaceError | None = None
        for attempt in range(3):
            try:
                conn = self._conn()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                except BaseException:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return out
            except sqlite3.InterfaceError as e:
                misuse = e
                with suppress(sqlite3.Error):
                    self._close_db()
                time.sleep(0.05 * (attempt + 1))
            except sqlite3.Error as e:
                raise BrokerUnavailable(f"embedded broker {self.path}: {e}") from e
        raise BrokerUnavailable(f"embedded broker {self.path}: {misuse}") from misuse

    async def _on_thread(self, fn: Any, *args: Any) -> Any:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="simbdp-queue")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _run(self, fn: Any) -> Any:
        return await self._on_thread(self._tx, fn)

    # contract ------------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._on_thread(self._conn)

    async def close(self) -> None:
        if self._thread is None:
            return
        await self._on_thread(self._close_db)
        self._thread.shutdown()
        self._thread = None

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ensure_tenant(self, tenant: str) -> None:
        await self.connect()

    async def issue_credentials(self, tenant: str, *, rotate: bool = False
                                ) -> TenantCredentials:
        raise ConfigError(f"tenant {tenant!r}: the embedded broker has no broker users; the "
                          "tenant publishes through simbdp (simbdp publish or the API)")

    async def publish(self, tenant: str, messages: list[OutMessage]) -> None:
        rows = [(tenant, m.id, m.body, m.published_at, json.dumps(m.headers)) for m in messages]
        await self._run(lambda c: c.executemany(
            "INSERT INTO messages (tenant, id, body, published_at, headers) VALUES (?,?,?,?,?)",
            rows))

    async def fetch(self, tenant: str, max_messages: int, timeout_secs: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout_secs
        while True:
            got = await self._run(lambda c: self._lease(c, tenant, max_messages))
            if got or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _lease(self, c: sqlite3.Connection, tenant: str, n: int) -> list[Delivery]:
        now = time.time()
        token = uuid.uuid4().hex
        rows = c.execute(
            "UPDATE messages SET lease_until = ?, lease_token = ?, deliveries = deliveries + 1 "
            "WHERE seq IN (SELECT seq FROM messages WHERE tenant = ? AND lease_until < ? "
            "ORDER BY seq LIMIT ?) RETURNING seq, id, body, published_at, headers, deliveries",
            [now + self.lease_secs, token, tenant, now, n]).fetchall()
        rows.sort(key=lambda r: r[0])
        return [Delivery(id=r[1], body=bytes(r[2]), published_at=r[3], redelivered=r[5] > 1,
                         headers=json.loads(r[4]), token=r[0]) for r in rows]

    async def ack(self, tenant: str, deliveries: list[Delivery], *,
                  whole_batch: bool = False) -> None:
        if deliveries:
            seqs = [(d.token,) for d in deliveries]
            await self._run(lambda c: c.executemany("DELETE FROM messages WHERE seq = ?", seqs))

    async def nack(self, tenant: str, deliveries: list[Delivery]) -> None:
        if deliveries:
            seqs = [(d.token,) for d in deliveries]
            await self._run(lambda c: c.executemany(
                "UPDATE messages SET lease_until = 0 WHERE seq = ?", seqs))

    async def dead_letter(self, tenant: str, delivery: Delivery, reason: str) -> None:
        def move(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO dead_letters (tenant, id, body, published_at, headers, "
                      "reason, dead_at) VALUES (?,?,?,?,?,?,?)",
                      [tenant, delivery.id, delivery.body, delivery.published_at,
                       json.dumps(delivery.headers), reason, time.time()])
            c.execute("DELETE FROM messages WHERE seq = ?", [delivery.token])
        await self._run(move)

    async def read_dead_letters(self, tenant: str, limit: int = 100) -> list[Delivery]:
        rows = await self._run(lambda c: c.execute(
            "SELECT seq, id, body, published_at, headers, reason FROM dead_letters "
            "WHERE tenant = ? ORDER BY seq LIMIT ?", [tenant, limit]).fetchall())
        return [Delivery(id=r[1], body=bytes(r[2]), published_at=r[3], redelivered=False,
                         headers={**json.loads(r[4]), "x-reason": r[5]}, token=r[0])
                for r in rows]

    async def backlog(self, tenant: str) -> int:
        row = await self._run(lambda c: c.execute(
            "SELECT count(*) FROM messages WHERE tenant = ? AND lease_until < ?",
            [tenant, time.time()]).fetchone())
        return int(row[0])

    async def publish_report(self, report: dict[str, Any]) -> None:
        body = json.dumps(report)
        await self._run(lambda c: c.execute("INSERT INTO reports (body) VALUES (?)", [body]))

    async def fetch_reports(self, max_reports: int, timeout_secs: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_secs
        while True:
            rows = await self._run(lambda c: c.execute(
                "DELETE FROM reports WHERE seq IN (SELECT seq FROM reports ORDER BY seq "
                "LIMIT ?) RETURNING seq, body", [max_reports]).fetchall())
            if rows or time.monotonic() >= deadline:
                return [json.loads(b) for _, b in sorted(rows)]
            await asyncio.sleep(0.05)

    async def purge(self, tenant: str) -> None:
        def drop(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM messages WHERE tenant = ?", [tenant])
            c.execute("DELETE FROM dead_letters WHERE tenant = ?", [tenant])
        await self._run(drop)
