"""A lake sink: one Delta Lake table per tenant table, exactly once through the Delta log.

Layout: ``<path>/<namespace>/<table>`` for each tenant table and
``<path>/<namespace>/_simbdp_ledger`` for the tenant's ledger, all Delta tables.

Exactly once with Delta's own mechanism (see docs/design.md, "Delta Lake sink"): every commit of
a file carries the application transaction (``txn`` action) ``simbdp-file:<content key>``,
version 1, into each data table it writes and, last, into the ledger table. A table that already
holds that transaction is skipped on a retry, so a crash between two commits redoes only the
missing ones; the ledger commit makes the file a duplicate. A crash inside ``write_deltalake``
(Parquet files written, log entry not) leaves only unreferenced files, which ``vacuum`` removes.

The rows of a file are buffered (Arrow) until ``commit``: the app transaction needs the file's
content key, which the sink learns only then. Stream message ids are not supported yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Field, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, SchemaMismatchError, TableNotFoundError

from simbdp.coredms.base import LedgerEntry, register_sink
from simbdp.coredms.lock import FileLock
from simbdp.errors import ConfigError, DuplicateIngestion, SchemaError, SinkUnavailable
from simbdp.profiles.models import SinkSettings, TableSpec, TenantProfile
from simbdp.quality import dedupe_last

__all__ = ["FILE_APP_PREFIX", "LEDGER_TABLE", "Compaction", "DeltaSink", "DeltaTransaction",
           "file_app_id"]

LEDGER_TABLE = "_simbdp_ledger"
FILE_APP_PREFIX = "simbdp-file:"
#: the version of a file's app transaction: a file is committed once, so always 1
FILE_APP_VERSION = 1
STREAMS_UNSUPPORTED = "delta sinks take batch files only for now (no stream message ids)"

LEDGER_SCHEMA = pa.schema([
    pa.field("key", pa.string(), False),
    pa.field("source", pa.string()),
    pa.field("ingestion_id", pa.string()),
    pa.field("rows", pa.int64()),
    pa.field("tables", pa.string()),
    pa.field("committed_at", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True)
class Compaction:
    """What :meth:`DeltaSink.compact` did to one table."""

    tenant: str
    table: str
    files_before: int
    files_after: int
    files_deleted: int


def file_app_id(key: str) -> str:
    """The Delta app id of a file's commits: one per content key."""
    return f"{FILE_APP_PREFIX}{key}"


class DeltaTransaction:
    """One file's rows for one tenant, buffered until :meth:`commit`."""

    def __init__(self, sink: DeltaSink, profile: TenantProfile):
        self._sink, self._profile = sink, profile
        self._specs: dict[str, TableSpec] = {}
        self._parts: dict[str, list[pa.Table]] = {}
        self.rows_updated = 0

    def write(self, table: TableSpec, data: pa.Table | pa.RecordBatch) -> None:
        part = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        self._specs[table.name] = table
        self._parts.setdefault(table.name, []).append(part)

    def ledger_entry(self, key: str) -> LedgerEntry | None:
        return self._sink.ledger_lookup(self._profile, key)

    def seen_message_ids(self, ids: pa.Array) -> pa.Array:
        raise ConfigError(STREAMS_UNSUPPORTED)

    def add_message_ids(self, ids: pa.Array) -> None:
        raise ConfigError(STREAMS_UNSUPPORTED)

    def commit(self, entry: LedgerEntry) -> None:
        sink, profile = self._sink, self._profile
        app = file_app_id(entry.key)
        lock = FileLock(sink.tenant_dir(profile) / ".simbdp.lock",
                        f"delta {profile.schema_name}: commit lock")
        try:
            ledger = sink.open_table(profile, LEDGER_TABLE)
            if ledger.transaction_version(app) is not None:
                hit = sink.ledger_lookup(profile, entry.key)
                raise DuplicateIngestion(
                    f"tenant {entry.tenant!r}: {entry.source!r} has the same content as "
                    f"{hit.source if hit else '?'!r}, already ingested (ingestion "
                    f"{hit.ingestion_id if hit else '?'}); nothing loaded")
            for name in sorted(self._parts):
                self.commit_table(name, entry)
            sink.fault_point("delta_before_ledger")
            row = pa.table({
                "key": [entry.key], "source": [entry.source],
                "ingestion_id": [entry.ingestion_id], "rows": [entry.rows],
                "tables": [",".join(sorted(self._parts))],
                "committed_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
            }, schema=LEDGER_SCHEMA)
            sink.append(profile, LEDGER_TABLE, row, entry)
        finally:
            lock.release()
            self.rollback()

    def commit_table(self, name: str, entry: LedgerEntry) -> bool:
        """Commit the buffered rows of one table with the file's app transaction, unless that
        table already holds it (an earlier try of this file got that far). True if written."""
        sink, profile = self._sink, self._profile
        if sink.open_table(profile, name).transaction_version(file_app_id(entry.key)) is not None:
            return False
        spec = self._specs[name]
        data = pa.concat_tables(self._parts[name]).combine_chunks()
        if spec.primary_key:
            self.rows_updated += sink.upsert(profile, spec, dedupe_last(data, spec.primary_key),
                                             entry)
        else:
            sink.append(profile, name, data, entry)
        return True

    def rollback(self) -> None:
        """Forget the buffered rows: nothing of them reached a Delta log."""
        self._specs.clear()
        self._parts.clear()


@register_sink
class DeltaSink:
    """Delta tables per tenant under ``settings.path``."""

    name: ClassVar[str] = "delta"

    def __init__(self, settings: SinkSettings):
        if settings.path is None:
            raise ValueError("a delta sink needs a path")
        self.root, self.settings = settings.path, settings
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkUnavailable(f"delta sink {self.root}: cannot create: {e}") from e

    # layout ---------------------------------------------------------------------------------
    def tenant_dir(self, profile: TenantProfile) -> Path:
        return self.root / profile.schema_name

    def table_uri(self, profile: TenantProfile, table: str) -> str:
        return str(self.tenant_dir(profile) / table)

    def open_table(self, profile: TenantProfile, table: str) -> DeltaTable:
        try:
            return DeltaTable(self.table_uri(profile, table))
        except TableNotFoundError as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta table {table!r} "
                                  f"is missing: {e}") from e
        except (DeltaError, OSError) as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta table {table!r}: "
                                  f"{e}") from e

    def fault_point(self, name: str) -> None:
        """Crash here if ``<path>/.faults/<name>`` exists: lets tests kill a worker between
        the data tables' commits and the ledger's (like the batch job's fault points)."""
        if (self.root / ".faults" / name).exists():
            os._exit(137)

    # writes ---------------------------------------------------------------------------------
    @staticmethod
    def _commit_properties(entry: LedgerEntry) -> CommitProperties:
        return CommitProperties(
            app_transactions=[Transaction(file_app_id(entry.key), FILE_APP_VERSION)],
            custom_metadata={"simbdp.source": entry.source,
                             "simbdp.ingestion_id": entry.ingestion_id})

    def append(self, profile: TenantProfile, table: str, data: pa.Table,
               entry: LedgerEntry) -> None:
        try:
            write_deltalake(self.table_uri(profile, table), data, mode="append",
                            commit_properties=self._commit_properties(entry))
        except SchemaMismatchError as e:
            raise SchemaError(f"tenant {profile.tenant_id!r}: table {table!r}: {e}") from e
        except (DeltaError, OSError) as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta write of {table!r} "
                                  f"failed: {e}") from e

    def upsert(self, profile: TenantProfile, spec: TableSpec, data: pa.Table,
               entry: LedgerEntry) -> int:
        """Merge ``data`` by key in one commit; returns the rows that updated a row."""
        on = " AND ".join(f"s.{k} = t.{k}" for k in spec.primary_key)
        try:
            metrics = (self.open_table(profile, spec.name)
                       .merge(data, on, source_alias="s", target_alias="t",
                              commit_properties=self._commit_properties(entry))
                       .when_matched_update_all().when_not_matched_insert_all().execute())
        except SchemaMismatchError as e:
            raise SchemaError(f"tenant {profile.tenant_id!r}: table {spec.name!r}: {e}") from e
        except (DeltaError, OSError) as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta merge into "
                                  f"{spec.name!r} failed: {e}") from e
        return int(metrics.get("num_target_rows_updated", 0))

    # maintenance ---------------------------------------------------------------------------
    def file_count(self, profile: TenantProfile, table: str) -> int:
        """Data files in the table's current version."""
        return len(self.open_table(profile, table).file_uris())

    def compact(self, profile: TenantProfile, table: str, *, vacuum: bool = True
                ) -> Compaction:
        """Rewrite the table's small files into files of about ``target_file_mb`` (one
        commit), then delete unreferenced files older than ``vacuum_retain_hours``.

        It holds the tenant's commit lock, so no file commits meanwhile (a compaction and a
        merge must not cross). App transactions are log entries, not data: a file committed
        before the compaction is still a duplicate after it (checked in the tests).
        """
        lock = FileLock(self.tenant_dir(profile) / ".simbdp.lock",
                        f"delta {profile.schema_name}: commit lock")
        try:
            dt = self.open_table(profile, table)
            before = len(dt.file_uris())
            dt.optimize.compact(target_size=self.settings.target_file_mb * 1024**2)
            dt.update_incremental()
            after = len(dt.file_uris())
            removed = dt.vacuum(retention_hours=int(self.settings.vacuum_retain_hours),
                                dry_run=False, enforce_retention_duration=False) if vacuum else []
        except (DeltaError, OSError) as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta table {table!r}: "
                                  f"compaction failed: {e}") from e
        finally:
            lock.release()
        return Compaction(profile.tenant_id, table, before, after, len(removed))

    # the Sink contract ------------------------------------------------------------------------
    def ensure_tables(self, profile: TenantProfile) -> None:
        try:
            self.tenant_dir(profile).mkdir(parents=True, exist_ok=True)
            DeltaTable.create(self.table_uri(profile, LEDGER_TABLE), LEDGER_SCHEMA,
                              mode="ignore")
            for t in profile.sink_tables():
                DeltaTable.create(self.table_uri(profile, t.name), t.arrow_schema(),
                                  partition_by=t.partition_by or None, mode="ignore")
                self._add_columns(profile, t)
        except (DeltaError, OSError) as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta tables: {e}") from e

    def _add_columns(self, profile: TenantProfile, spec: TableSpec) -> None:
        """A nullable column added to the profile is added to the table (as DuckDB does)."""
        table = self.open_table(profile, spec.name)
        have = {f.name for f in table.schema().fields}
        new = [Field.from_arrow(f) for f in spec.arrow_schema()
               if f.name not in have and f.nullable]
        if new:
            table.alter.add_columns(new)

    def ledger_lookup(self, profile: TenantProfile, key: str) -> LedgerEntry | None:
        ledger = self.open_table(profile, LEDGER_TABLE)
        if ledger.transaction_version(file_app_id(key)) is None:
            return None
        rows = ledger.to_pyarrow_table(filters=[("key", "=", key)])
        if rows.num_rows == 0:  # the txn is there, its row is not: cannot happen
            return LedgerEntry(tenant=profile.tenant_id, key=key, source="?",
                               ingestion_id="?", rows=0)
        r = rows.slice(0, 1).to_pylist()[0]
        return LedgerEntry(tenant=profile.tenant_id, key=key, source=r["source"],
                           ingestion_id=r["ingestion_id"], rows=int(r["rows"] or 0))

    def seen_message_ids(self, profile: TenantProfile, ids: pa.Array) -> pa.Array:
        raise ConfigError(STREAMS_UNSUPPORTED)

    def begin(self, profile: TenantProfile) -> DeltaTransaction:
        return DeltaTransaction(self, profile)

    def read_rows(self, profile: TenantProfile, table: str, limit: int = 100,
                  where: dict[str, str] | None = None) -> pa.Table:
        spec = profile.table(table)
        unknown = [c for c in (where or {}) if c not in spec.column_names]
        if unknown:
            raise ValueError(f"unknown columns {unknown} of table {table!r}")
        expr = None
        for c, v in (where or {}).items():
            term = pc.field(c).cast(pa.string()) == v
            expr = term if expr is None else expr & term
        ds = self.open_table(profile, table).to_pyarrow_dataset()
        return ds.head(int(limit), filter=expr) if int(limit) > 0 else ds.schema.empty_table()

    def count_rows(self, profile: TenantProfile, table: str) -> int:
        profile.table(table)
        return int(self.open_table(profile, table).to_pyarrow_dataset().count_rows())

    def close(self) -> None:
        """Nothing is kept open between calls."""
