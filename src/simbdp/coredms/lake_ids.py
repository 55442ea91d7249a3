"""The stream message ids a Delta sink committed, per tenant: an indexed SQLite file.

Delta has no transaction across tables and no unique index, so the ids of a stream batch ``K``
are recorded here (state ``pending``) before its Delta commits and marked ``committed`` after
them; a pending batch is resolved against the Delta log (see :mod:`simbdp.coredms.delta`).
Writes happen under the tenant's commit lock only; reads (WAL) at any time. A local folder:
an object store needs another home for this and for the lock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from simbdp.errors import SinkUnavailable

__all__ = ["MESSAGE_IDS_FILE", "MessageIds", "PendingBatch"]

MESSAGE_IDS_FILE = ".simbdp-messages.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch TEXT PRIMARY KEY, state TEXT NOT NULL, tables TEXT NOT NULL, source TEXT NOT NULL,
    rows INTEGER NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, batch TEXT NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class PendingBatch:
    """A batch whose commits were started and not marked done: what its ledger row needs."""

    batch: str
    tables: list[str]
    source: str
    rows: int


class MessageIds:
    """One tenant's message-id index; open per call (a connection is cheap, ~0.1 ms)."""

    def __init__(self, folder: Path):
        self.path = folder / MESSAGE_IDS_FILE
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise SinkUnavailable(f"message ids {self.path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> MessageIds:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def _json(ids: pa.Array) -> str:
        return json.dumps(pa.array(ids, pa.string()).to_pylist())

    def lookup(self, ids: pa.Array) -> tuple[list[str], list[str]]:
        """(ids of committed batches, keys of pending batches holding some of ``ids``)."""
        try:
            rows = self.db.execute(
                "SELECT m.id, b.batch, b.state FROM json_each(?) j "
                "JOIN messages m ON m.id = j.value JOIN batches b ON b.batch = m.batch",
                [self._json(ids)]).fetchall()
        except sqlite3.Error as e:
            raise SinkUnavailable(f"message ids {self.path}: {e}") from e
        return ([r[0] for r in rows if r[2] == "committed"],
                sorted({r[1] for r in rows if r[2] != "committed"}))

    def claim(self, batch: str, ids: pa.Array, tables: list[str], source: str) -> bool:
        """Record ``ids`` as batch ``batch``, pending. False (nothing recorded) if an id is
        recorded already, or twice in ``ids``. Call under the commit lock."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.execute("INSERT INTO batches VALUES (?, 'pending', ?, ?, ?, ?)",
                                [batch, ",".join(tables), source, len(ids), time.time()])
                self.db.execute("INSERT INTO messages SELECT value, ? FROM json_each(?)",
                                [batch, self._json(ids)])
            except sqlite3.IntegrityError:
                self.db.execute("ROLLBACK")
                return False
            self.db.execute("COMMIT")
            return True
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise SinkUnavailable(f"message ids {self.path}: {e}") from e

    def pending(self, batch: str) -> PendingBatch | None:
        row = self.db.execute("SELECT tables, source, rows FROM batches WHERE batch = ? AND "
                              "state = 'pending'", [batch]).fetchone()
        if row is None:
            return None
        return PendingBatch(batch, [t for t in row[0].split(",") if t], row[1], int(row[2]))

    def state(self, batch: str) -> str | None:
        """``pending``, ``committed`` or None (unknown, or forgotten)."""
        row = self.db.execute("SELECT state FROM batches WHERE batch = ?", [batch]).fetchone()
        return None if row is None else str(row[0])

    def committed(self, batch: str) -> None:
        """The batch's Delta commits are all done: its ids are duplicates from now on."""
        self._write("UPDATE batches SET state = 'committed' WHERE batch = ?", batch)

    def forget(self, batch: str) -> None:
        """The batch reached no Delta log (its writer died first): its ids are free again."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM messages WHERE batch = ?", [batch])
            self.db.execute("DELETE FROM batches WHERE batch = ?", [batch])
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise SinkUnavailable(f"message ids {self.path}: {e}") from e

    def _write(self, sql: str, *args: object) -> None:
        try:
            self.db.execute(sql, args)
        except sqlite3.Error as e:
            raise SinkUnavailable(f"message ids {self.path}: {e}") from e
