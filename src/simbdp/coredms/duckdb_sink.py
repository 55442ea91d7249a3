"""The embedded coredms: one DuckDB database file per tenant.

DuckDB lets one process write a database file at a time. Each tenant gets its own file
(``<path>/coredms-<tenant>.duckdb``), so tenants never wait for each other, and an
exclusive ``flock`` on ``coredms-<tenant>.lock`` makes the worker processes of one tenant take
turns: taken when a transaction begins, released at commit or rollback, or by the OS if the
process dies. A warm batch worker may :meth:`DuckDBSink.hold` a tenant's file open (and its
lock taken) across several transactions while that tenant's files keep coming.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa

from simbdp.coredms.base import LedgerEntry, register_sink
from simbdp.coredms.lock import FileLock
from simbdp.coredms.sql import (
    LEDGER,
    MESSAGES,
    create_table_sql,
    ledger_sql,
    qi,
    qualified,
    where_sql,
)
from simbdp.errors import (
    DuplicateIngestion,
    DuplicateMessages,
    KeyConflict,
    SchemaError,
    SinkUnavailable,
)
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings
from simbdp.profiles.tables import TableSpec
from simbdp.profiles.types import duckdb_type

__all__ = ["DuckDBSink", "DuckDBTransaction"]


@dataclass
class _Held:
    lock: FileLock
    con: duckdb.DuckDBPyConnection
    since: float


def _writer_lock(path: Path) -> FileLock:
    """The tenant's DuckDB writer lock: one writing process per database file."""
    return FileLock(path, f"DuckDB {path.stem}: writer lock")


def _connect(path: Path, memory_limit_mb: int) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as e:
        raise SinkUnavailable(f"DuckDB {path.name}: cannot open: {e}") from e
    con.execute(f"SET memory_limit='{memory_limit_mb}MB'")
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET enable_progress_bar=false")
    return con


class DuckDBTransaction:
    """One tenant's open write transaction; holds the tenant's writer lock."""

    def __init__(self, lock: FileLock, con: duckdb.DuckDBPyConnection, profile: TenantProfile,
                 append_memory_limit_mb: int = 128, *, held: bool = False):
        self._lock, self._con, self._schema = lock, con, profile.schema_name
        self._tenant = profile.tenant_id
        self._append_mb = append_memory_limit_mb
        #: on a held session: commit and rollback leave the connection and the lock open
        self._held = held
        self.rows_updated = 0
        con.begin()

    def _insert(self, table: TableSpec, source: str, verb: str = "INSERT INTO") -> None:
        cols = ", ".join(qi(c) for c in table.column_names)
        try:
            self._con.execute(f"{verb} {qualified(self._schema, table.name)} ({cols}) "
                              f"SELECT {cols} FROM {source}")
        except duckdb.ConstraintException as e:
            raise SchemaError(f"tenant {self._tenant!r}: table {table.name!r}: {e}") from e
        except duckdb.Error as e:
            raise SinkUnavailable(f"tenant {self._tenant!r}: DuckDB write failed: {e}") from e

    def write(self, table: TableSpec, data: pa.Table | pa.RecordBatch) -> None:
        self._con.register("__simbdp_batch", data)
        try:
            if table.primary_key:
                self.rows_updated += self._existing_keys(table, "__simbdp_batch")
            self._insert(table, "__simbdp_batch",
                         "INSERT OR REPLACE INTO" if table.primary_key else "INSERT INTO")
        finally:
            self._con.unregister("__simbdp_batch")

    def _existing_keys(self, table: TableSpec, source: str) -> int:
        """How many rows of ``source`` (keys unique in it) have their key in the table."""
        on = " AND ".join(f"t.{qi(k)} = s.{qi(k)}" for k in table.primary_key)
        row = self._con.execute(
            f"SELECT count(*) FROM {source} s WHERE EXISTS "
            f"(SELECT 1 FROM {qualified(self._schema, table.name)} t WHERE {on})").fetchone()
        return int(row[0]) if row else 0

    def write_stream(self, table: TableSpec, reader: pa.RecordBatchReader) -> None:
        """Append a whole stream of batches in one statement. DuckDB keeps the Arrow buffers
        of every registered batch until commit; one stream does not.

        Into a keyed table this is a plain append, as fast as a bulk load: if a key is already
        in the table or repeats in the stream it raises KeyConflict and the transaction is
        over; the caller then writes the rows again with :meth:`write` (upserts).
        """
        if not table.primary_key:  # no index to build: a smaller footprint, as fast
            self._con.execute(f"SET memory_limit='{self._append_mb}MB'")
        self._con.register("__simbdp_stream", reader)
        try:
            self._insert(table, "__simbdp_stream")
        except SchemaError as e:
            if table.primary_key:
                self.rollback()
                raise KeyConflict(str(e)) from e
            raise
        finally:
            if self._con is not None:
                self._con.unregister("__simbdp_stream")

    def ledger_entry(self, key: str) -> LedgerEntry | None:
        try:
            r = self._con.execute(f"SELECT source, ingestion_id, rows FROM "
                                  f"{qualified(self._schema, LEDGER)} WHERE key = ?",
                                  [key]).fetchone()
        except duckdb.Error as e:
            self.rollback()
            raise SinkUnavailable(f"tenant {self._tenant!r}: DuckDB: {e}") from e
        return None if r is None else LedgerEntry(tenant=self._tenant, key=key, source=r[0],
                                                  ingestion_id=r[1], rows=r[2])

    def seen_message_ids(self, ids: pa.Array) -> pa.Array:
        """The ids already committed, looked up inside this transaction."""
        self._con.register("__simbdp_probe", pa.table({"id": pa.array(ids, pa.string())}))
        try:
            return self._con.sql(
                f"SELECT p.id FROM __simbdp_probe p JOIN {qualified(self._schema, MESSAGES)} m "
                "ON m.id = p.id").to_arrow_table().column("id").combine_chunks()
        finally:
            self._con.unregister("__simbdp_probe")

    def add_message_ids(self, ids: pa.Array) -> None:
        ids_table = pa.table({"id": pa.array(ids, pa.string())})
        self._con.register("__simbdp_ids", ids_table)
        try:
            self._con.execute(f"INSERT INTO {qualified(self._schema, MESSAGES)} "
                              "SELECT id, now() FROM __simbdp_ids")
        except duckdb.ConstraintException as e:
            self.rollback()
            raise DuplicateMessages(f"tenant {self._tenant!r}: message ids already "
                                    f"committed: {e}") from e
        finally:
            if self._con is not None:
                self._con.unregister("__simbdp_ids")

    def commit(self, entry: LedgerEntry) -> None:
        self.commit_many([entry])

    def commit_many(self, entries: list[LedgerEntry]) -> None:
        """Insert the ledger entries of several files and commit them with their rows;
        DuplicateIngestion (nothing committed) if a key is in the ledger already."""
        ledger = qualified(self._schema, LEDGER)
        keys = pa.table({"key": [e.key for e in entries]})  # noqa: F841 (scanned by DuckDB)
        hit = self._con.execute(f"SELECT l.key, l.source, l.ingestion_id FROM {ledger} l "
                                "WHERE l.key IN (SELECT key FROM keys) LIMIT 1").fetchone()
        if hit:
            self.rollback()
            entry = next(e for e in entries if e.key == hit[0])
            raise DuplicateIngestion(
                f"tenant {entry.tenant!r}: {entry.source!r} has the same content as "
                f"{hit[1]!r}, already ingested (ingestion {hit[2]}); nothing loaded")
        new_rows = pa.table({  # noqa: F841 (scanned by DuckDB): one insert for every file
            "key": [e.key for e in entries], "source": [e.source for e in entries],
            "ingestion_id": [e.ingestion_id for e in entries],
            "rows": pa.array([e.rows for e in entries], pa.int64()),
            "committed_at": pa.array([datetime.now(UTC)] * len(entries),
                                     pa.timestamp("us", tz="UTC"))})
        try:
            self._con.execute(f"INSERT INTO {ledger} SELECT * FROM new_rows")
            self._con.commit()
        except duckdb.Error as e:
            self.rollback()
            raise SinkUnavailable(f"tenant {entries[0].tenant!r}: DuckDB commit failed: {e}"
                                  ) from e
        self._close()

    def rollback(self) -> None:
        self.rows_updated = 0
        if self._con is not None:
            with suppress(duckdb.Error):
                self._con.rollback()
            self._close()

    def _close(self) -> None:
        if self._con is not None and not self._held:
            self._con.close()
        self._con = None  # type: ignore[assignment]
        if not self._held:
            self._lock.release()


@register_sink
class DuckDBSink:
    """DuckDB files per tenant under ``settings.path``."""

    name: ClassVar[str] = "duckdb"

    def __init__(self, settings: SinkSettings):
        if settings.path is None:
            raise ValueError("a duckdb sink needs a path")
        self.root = settings.path
        self.root.mkdir(parents=True, exist_ok=True)
        self.memory_limit_mb = settings.memory_limit_mb
        self.append_memory_limit_mb = settings.append_memory_limit_mb
        self._held: dict[str, _Held] = {}

    def _paths(self, profile: TenantProfile) -> tuple[Path, Path]:
        t = profile.tenant_id
        # the file name must not equal the schema name, or DuckDB finds "acme" ambiguous
        return self.root / f"coredms-{t}.duckdb", self.root / f"coredms-{t}.lock"

    def hold(self, profile: TenantProfile) -> None:
        """Keep the tenant's database open, and its writer lock taken, until :meth:`release`:
        lookups and transactions in between reuse one connection (opening and closing a
        DuckDB file costs ~30 ms, a 1,000-row file's whole transaction ~3 ms). Other
        processes wait for the lock meanwhile, so hold only while files keep coming."""
        if profile.tenant_id in self._held:
            return
        db, lock_path = self._paths(profile)
        lock = _writer_lock(lock_path)
        try:
            con = _connect(db, self.memory_limit_mb)
        except BaseException:
            lock.release()
            raise
        self._held[profile.tenant_id] = _Held(lock, con, time.monotonic())

    def held_since(self, tenant: str) -> float | None:
        """When the tenant's session was opened (``time.monotonic``), or None."""
        held = self._held.get(tenant)
        return held.since if held else None

    def release(self, tenant: str | None = None) -> None:
        """Close the held session of ``tenant`` (of every tenant when None)."""
        for t in [tenant] if tenant is not None else list(self._held):
            held = self._held.pop(t, None)
            if held is not None:
                with suppress(duckdb.Error):
                    held.con.close()
                held.lock.release()

    @contextmanager
    def _session(self, profile: TenantProfile) -> Iterator[duckdb.DuckDBPyConnection]:
        held = self._held.get(profile.tenant_id)
        if held is not None:
            yield held.con
            return
        db, lock_path = self._paths(profile)
        lock = _writer_lock(lock_path)
        try:
            con = _connect(db, self.memory_limit_mb)
            try:
                yield con
            finally:
                con.close()
        finally:
            lock.release()

    def ensure_tables(self, profile: TenantProfile) -> None:
        ns = profile.schema_name
        with self._session(profile) as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {qi(ns)}")
            for stmt in ledger_sql(ns, "VARCHAR", "TIMESTAMPTZ"):
                con.execute(stmt)
            for table in profile.sink_tables():
                con.execute(create_table_sql(ns, table, duckdb_type))
                have = {r[0] for r in con.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = ? AND table_name = ?", [ns, table.name]).fetchall()}
                for c in table.columns:
                    if c.name not in have and c.nullable:
                        con.execute(f"ALTER TABLE {qualified(ns, table.name)} ADD COLUMN "
                                    f"{qi(c.name)} {duckdb_type(c.type)}")

    def ledger_lookup(self, profile: TenantProfile, key: str) -> LedgerEntry | None:
        return self.ledger_lookup_many(profile, [key]).get(key)

    def ledger_lookup_many(self, profile: TenantProfile, keys: list[str]
                           ) -> dict[str, LedgerEntry]:
        """The ledger entries of those of ``keys`` already committed, in one query."""
        probe = pa.table({"key": pa.array(keys, pa.string())})  # noqa: F841 (scanned)
        with self._session(profile) as con:
            rows = con.execute(f"SELECT key, source, ingestion_id, rows FROM "
                               f"{qualified(profile.schema_name, LEDGER)} "
                               "WHERE key IN (SELECT key FROM probe)").fetchall()
        return {r[0]: LedgerEntry(tenant=profile.tenant_id, key=r[0], source=r[1],
                                  ingestion_id=r[2], rows=r[3]) for r in rows}

    def seen_message_ids(self, profile: TenantProfile, ids: pa.Array) -> pa.Array:
        probe = pa.table({"id": pa.array(ids, pa.string())})  # noqa: F841 (scanned by DuckDB)
        with self._session(profile) as con:
            out = con.sql(f"SELECT p.id FROM probe p JOIN "
                          f"{qualified(profile.schema_name, MESSAGES)} m ON m.id = p.id"
                          ).to_arrow_table()
        return out.column("id").combine_chunks()

    def begin(self, profile: TenantProfile) -> DuckDBTransaction:
        held = self._held.get(profile.tenant_id)
        if held is not None:
            try:  # an unkeyed append lowered it for the previous transaction
                held.con.execute(f"SET memory_limit='{self.memory_limit_mb}MB'")
                return DuckDBTransaction(held.lock, held.con, profile,
                                         self.append_memory_limit_mb, held=True)
            except duckdb.Error as e:
                self.release(profile.tenant_id)
                raise SinkUnavailable(f"tenant {profile.tenant_id!r}: DuckDB: {e}") from e
        db, lock_path = self._paths(profile)
        lock = _writer_lock(lock_path)
        try:
            return DuckDBTransaction(lock, _connect(db, self.memory_limit_mb), profile,
                                     self.append_memory_limit_mb)
        except BaseException:
            lock.release()
            raise

    def read_rows(self, profile: TenantProfile, table: str, limit: int = 100,
                  where: dict[str, str] | None = None) -> pa.Table:
        spec = profile.table(table)
        clause, params = where_sql(spec, where, "?")
        with self._session(profile) as con:
            return con.sql(f"SELECT * FROM {qualified(profile.schema_name, table)}"
                           f"{clause} LIMIT ?", params=[*params, int(limit)]).to_arrow_table()

    def count_rows(self, profile: TenantProfile, table: str) -> int:
        profile.table(table)
        with self._session(profile) as con:
            row = con.execute(f"SELECT count(*) FROM {qualified(profile.schema_name, table)}"
                              ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Release every held session; nothing else is kept between calls."""
        self.release()
