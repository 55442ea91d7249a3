"""The PostgreSQL coredms: Arrow batches to COPY BINARY (pgpq), the ledger row in the same
transaction.

Unkeyed tables of plain types are copied straight into the table. Keyed tables (and columns
that binary COPY cannot fill from Arrow: numeric, jsonb) go through a temporary staging table
and ``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE``.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import ArrowToPostgresBinaryEncoder

from simbdp.coredms.base import LedgerEntry, register_sink
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
from simbdp.profiles.types import postgres_type

__all__ = ["PostgresSink", "PostgresTransaction"]


def _needs_cast(table: TableSpec) -> bool:
    """Columns binary COPY cannot fill from Arrow: they are cast in SQL from a staging table."""
    return any(c.type == "json" or c.type.startswith("decimal") for c in table.columns)


def _staged(table: TableSpec) -> bool:
    """Whether rows go through a staging table rather than straight into the table."""
    return bool(table.primary_key) or _needs_cast(table)


def _for_copy(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """Decimals travel as text (cast back in SQL); everything else as is."""
    t = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    for i, f in enumerate(t.schema):
        if pa.types.is_decimal(f.type):
            t = t.set_column(i, f.name, pc.cast(t.column(i), pa.string()))
    return t


class PostgresTransaction:
    """One tenant's open transaction on the sink's connection.

    ``rows_updated`` counts the rows of this transaction's upserts that met a key already in
    the table (updated, not inserted). A rollback sets it back to 0.
    """

    def __init__(self, conn: psycopg.Connection[Any], profile: TenantProfile):
        self._conn, self._schema, self._tenant = conn, profile.schema_name, profile.tenant_id
        self._stages: set[str] = set()
        self.rows_updated = 0

    def _copy(self, target: str, cols: list[str], data: pa.Table | pa.RecordBatchReader
              ) -> int:
        """One COPY of every batch: the server inserts while the next batches are sent.
        Returns the rows copied."""
        enc = ArrowToPostgresBinaryEncoder(data.schema)
        batches = data if isinstance(data, pa.RecordBatchReader) \
            else data.to_batches(max_chunksize=64 * 1024)
        with self._conn.cursor() as cur, cur.copy(
                f"COPY {target} ({', '.join(qi(c) for c in cols)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(enc.write_header())
            rows = 0
            for batch in batches:
                copy.write(enc.write_batch(batch))
                rows += batch.num_rows
            copy.write(enc.finish())
        return rows

    def write_stream(self, table: TableSpec, reader: pa.RecordBatchReader) -> None:
        """Write a whole stream of batches with one COPY straight into the table.

        Into a keyed table this is a plain append: if a key is already there or repeats in
        the stream it raises KeyConflict and the transaction is over; the caller then writes
        the rows again with :meth:`write` (staging table and upserts). Columns that binary
        COPY cannot fill (numeric, jsonb) go batch by batch through :meth:`write`.
        """
        if _needs_cast(table):
            for batch in reader:
                self.write(table, batch)
            return
        try:
            self._copy(qualified(self._schema, table.name), table.column_names, reader)
        except psycopg.errors.UniqueViolation as e:
            self.rollback()
            raise KeyConflict(f"tenant {self._tenant!r}: table {table.name!r}: "
                              f"{str(e).splitlines()[0]}") from e
        except psycopg.Error as e:
            raise self._write_failed(table, e) from e

    def _write_failed(self, table: TableSpec, e: psycopg.Error) -> SinkUnavailable | SchemaError:
        """Roll back; the error to raise for a failed write."""
        self.rollback()
        if isinstance(e, psycopg.OperationalError):
            return SinkUnavailable(f"tenant {self._tenant!r}: PostgreSQL write failed: {e}")
        return SchemaError(f"tenant {self._tenant!r}: table {table.name!r}: "
                           f"{str(e).splitlines()[0]}")

    def write(self, table: TableSpec, data: pa.Table | pa.RecordBatch) -> None:
        cols = table.column_names
        target = qualified(self._schema, table.name)
        try:
            if not _staged(table):
                self._copy(target, cols, _for_copy(data))
                return
            rows = _for_copy(data)
            stage = qi(f"_simbdp_stage_{table.name}")
            if table.name not in self._stages:
                col_defs = ", ".join(f"{qi(c)} {_stage_type(rows.schema.field(c).type)}"
                                     for c in cols)
                self._conn.execute(f"CREATE TEMP TABLE {stage} ({col_defs}) ON COMMIT DROP")
                self._stages.add(table.name)
            self._copy(stage, cols, rows)
            select = ", ".join(f"{qi(c.name)}::{postgres_type(c.type)}" for c in table.columns)
            sql = f"INSERT INTO {target} ({', '.join(qi(c) for c in cols)}) SELECT {select} " \
                  f"FROM {stage}"
            if table.primary_key:
                keys = ", ".join(qi(k) for k in table.primary_key)
                others = [c for c in cols if c not in table.primary_key]
                sets = ", ".join(f"{qi(c)} = EXCLUDED.{qi(c)}" for c in others)
                sql += f" ON CONFLICT ({keys}) " + (f"DO UPDATE SET {sets}" if sets
                                                     else "DO NOTHING")
                # xmax is 0 in a row this statement inserted, set in one it updated
                sql = (f"WITH w AS ({sql} RETURNING (xmax = 0) AS inserted) SELECT "
                       "count(*) FILTER (WHERE NOT inserted) FROM w")
                row = self._conn.execute(sql).fetchone()
                self.rows_updated += row[0] if row else 0
            else:
                self._conn.execute(sql)
            self._conn.execute(f"TRUNCATE {stage}")
        except psycopg.Error as e:
            raise self._write_failed(table, e) from e

    def ledger_entry(self, key: str) -> LedgerEntry | None:
        try:
            r = self._conn.execute(f"SELECT source, ingestion_id, rows FROM "
                                   f"{qualified(self._schema, LEDGER)} WHERE key = %s",
                                   [key]).fetchone()
        except psycopg.OperationalError as e:
            self.rollback()
            raise SinkUnavailable(f"tenant {self._tenant!r}: PostgreSQL: {e}") from e
        return None if r is None else LedgerEntry(tenant=self._tenant, key=key, source=r[0],
                                                  ingestion_id=r[1], rows=r[2])

    def seen_message_ids(self, ids: pa.Array) -> pa.Array:
        """The ids already committed, looked up inside this transaction."""
        try:
            rows = self._conn.execute(
                f"SELECT id FROM {qualified(self._schema, MESSAGES)} WHERE id = ANY(%s)",
                [pa.array(ids, pa.string()).to_pylist()]).fetchall()
        except psycopg.OperationalError as e:
            self.rollback()
            raise SinkUnavailable(f"tenant {self._tenant!r}: PostgreSQL: {e}") from e
        return pa.array([r[0] for r in rows], pa.string())

    def add_message_ids(self, ids: pa.Array) -> None:
        ids = pa.array(ids, pa.string())
        try:
            self._copy(qualified(self._schema, MESSAGES), ["id"], pa.table({"id": ids}))
        except psycopg.errors.UniqueViolation as e:
            self.rollback()
            raise DuplicateMessages(f"tenant {self._tenant!r}: message ids already committed"
                                    ) from e
        except psycopg.OperationalError as e:
            self.rollback()
            raise SinkUnavailable(f"tenant {self._tenant!r}: PostgreSQL: {e}") from e

    def commit(self, entry: LedgerEntry) -> None:
        self.commit_many([entry])

    def commit_many(self, entries: list[LedgerEntry]) -> None:
        """Insert the ledger entries of several files and commit them with their rows;
        DuplicateIngestion (nothing committed) if a key is in the ledger already."""
        ledger = qualified(self._schema, LEDGER)
        try:
            cur = self._conn.execute(
                f"INSERT INTO {ledger} (key, source, ingestion_id, rows, committed_at) "
                "SELECT *, now() FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) "
                "ON CONFLICT (key) DO NOTHING RETURNING key",
                [[e.key for e in entries], [e.source for e in entries],
                 [e.ingestion_id for e in entries], [e.rows for e in entries]])
            written = {r[0] for r in cur.fetchall()}
            missing = [e for e in entries if e.key not in written]
            if missing:
                entry = missing[0]
                hit = self._conn.execute(f"SELECT source, ingestion_id FROM {ledger} "
                                         "WHERE key = %s", [entry.key]).fetchone()
                self.rollback()
                src, ing = hit if hit else ("?", "?")
                raise DuplicateIngestion(
                    f"tenant {entry.tenant!r}: {entry.source!r} has the same content as "
                    f"{src!r}, already ingested (ingestion {ing}); nothing loaded")
            self._conn.commit()
        except psycopg.OperationalError as e:
            self.rollback()
            raise SinkUnavailable(f"tenant {entries[0].tenant!r}: PostgreSQL commit failed: "
                                  f"{e}") from e

    def rollback(self) -> None:
        self.rows_updated = 0
        with contextlib.suppress(psycopg.Error):
            self._conn.rollback()


def _stage_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return {pa.string(): "text", pa.int64(): "bigint", pa.int32(): "integer",
            pa.int16(): "smallint", pa.float64(): "double precision", pa.float32(): "real",
            pa.bool_(): "boolean", pa.date32(): "date"}.get(t, "text")


@register_sink
class PostgresSink:
    """All tenants in one PostgreSQL database, a schema per tenant namespace."""

    name: ClassVar[str] = "postgres"

    def __init__(self, settings: SinkSettings):
        if settings.dsn is None:
            raise ValueError("a postgres sink needs a dsn")
        self._dsn = settings.dsn.get_secret_value()
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self._dsn, autocommit=False)
            except psycopg.OperationalError as e:
                raise SinkUnavailable(f"PostgreSQL sink unreachable: {e}") from e
        return self._conn

    def _query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self.conn
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        except psycopg.OperationalError as e:
            raise SinkUnavailable(f"PostgreSQL sink: {e}") from e
        except psycopg.Error:
            conn.rollback()
            raise

    def ensure_tables(self, profile: TenantProfile) -> None:
        ns, conn = profile.schema_name, self.conn
        try:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [ns])
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {qi(ns)}")
            for stmt in ledger_sql(ns, "text", "timestamptz"):
                conn.execute(stmt)
            for table in profile.sink_tables():
                conn.execute(create_table_sql(ns, table, postgres_type))
                for c in table.columns:
                    if c.nullable and c.name not in table.primary_key:
                        conn.execute(f"ALTER TABLE {qualified(ns, table.name)} ADD COLUMN IF NOT "
                                     f"EXISTS {qi(c.name)} {postgres_type(c.type)}")
            conn.commit()
        except psycopg.OperationalError as e:
            raise SinkUnavailable(f"PostgreSQL sink: {e}") from e

    def ledger_lookup(self, profile: TenantProfile, key: str) -> LedgerEntry | None:
        return self.ledger_lookup_many(profile, [key]).get(key)

    def ledger_lookup_many(self, profile: TenantProfile, keys: list[str]
                           ) -> dict[str, LedgerEntry]:
        """The ledger entries of those of ``keys`` already committed, in one query."""
        rows = self._query(f"SELECT key, source, ingestion_id, rows FROM "
                           f"{qualified(profile.schema_name, LEDGER)} WHERE key = ANY(%s)",
                           [keys])
        return {k: LedgerEntry(tenant=profile.tenant_id, key=k, source=source,
                               ingestion_id=ing, rows=n) for k, source, ing, n in rows}

    def seen_message_ids(self, profile: TenantProfile, ids: pa.Array) -> pa.Array:
        rows = self._query(f"SELECT id FROM {qualified(profile.schema_name, MESSAGES)} "
                           "WHERE id = ANY(%s)", [pa.array(ids, pa.string()).to_pylist()])
        return pa.array([r[0] for r in rows], pa.string())

    def begin(self, profile: TenantProfile) -> PostgresTransaction:
        return PostgresTransaction(self.conn, profile)

    def read_rows(self, profile: TenantProfile, table: str, limit: int = 100,
                  where: dict[str, str] | None = None) -> pa.Table:
        spec = profile.table(table)
        clause, params = where_sql(spec, where, "%s")
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(qi(c) for c in spec.column_names)} FROM "
                        f"{qualified(profile.schema_name, table)}{clause} LIMIT %s",
                        [*params, int(limit)])
            rows = cur.fetchall()
        conn.commit()
        schema = spec.arrow_schema()
        return pa.Table.from_pylist([dict(zip(spec.column_names, r, strict=True)) for r in rows],
                                    schema=schema.with_metadata(None))

    def count_rows(self, profile: TenantProfile, table: str) -> int:
        profile.table(table)
        return int(self._query(f"SELECT count(*) FROM {qualified(profile.schema_name, table)}"
                               )[0][0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
