"""A lake sink: one Delta Lake table per tenant table, exactly once through the Delta log.

Layout: ``<path>/<namespace>/<table>`` for each tenant table and
``<path>/<namespace>/_simbdp_ledger`` for the tenant's ledger, all Delta tables.

Exactly once with Delta's own mechanism (see docs/design.md, "Delta Lake sink"): every commit of
a file carries the application transaction (``txn`` action) ``simbdp-file:<content key>``,
version 1, into each data table it writes and, last, into the ledger table. A table that already
holds that transaction is skipped on a retry, so a crash between two commits redoes only the
missing ones; the ledger commit makes the file a duplicate. A crash inside ``write_deltalake``
(Parquet files written, log entry not) leaves only unreferenced files, which ``vacuum`` removes.

A stream batch ``K`` (many micro-batches, buffered by :mod:`simbdp.stream.lakebuffer`) carries
``simbdp-stream:<K>``, version 1, the same way. Its message ids are first recorded, pending, in
the tenant's message-id index (:mod:`simbdp.coredms.lake_ids`), marked committed after the
ledger commit; a pending batch is resolved against the Delta log under the commit lock (all its
tables hold ``K``: committed; none: its ids are free; some: rolled forward from the Parquet
copy staged before the first commit of a batch writing several tables).

The rows of a file are buffered (Arrow) until ``commit``: the app transaction needs the file's
content key, which the sink learns only then.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Field, Transaction, write_deltalake
from deltalake.exceptions import (
    CommitFailedError,
    DeltaError,
    SchemaMismatchError,
    TableNotFoundError,
)

from simbdp.coredms.base import LedgerEntry, register_sink
from simbdp.coredms.lake_ids import MessageIds
from simbdp.coredms.lock import FileLock
from simbdp.errors import DuplicateIngestion, DuplicateMessages, SchemaError, SinkUnavailable
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings
from simbdp.profiles.tables import TableSpec
from simbdp.quality import dedupe_last

__all__ = ["FILE_APP_PREFIX", "LEDGER_TABLE", "STREAM_APP_PREFIX", "Compaction", "DeltaSink",
           "DeltaTransaction", "file_app_id", "stream_app_id"]

LEDGER_TABLE = "_simbdp_ledger"
FILE_APP_PREFIX = "simbdp-file:"
STREAM_APP_PREFIX = "simbdp-stream:"
#: the version of an app transaction: a file or a stream batch is committed once, so always 1
FILE_APP_VERSION = 1
#: beside the tables: Parquet copies of a stream batch writing several tables, until committed
PENDING_DIR = "_simbdp_pending"
#: tries of one table's commit that Delta refused for a concurrent writer's commit
CONFLICT_TRIES = 5

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


def stream_app_id(key: str) -> str:
    """The Delta app id of a stream batch's commits: one per batch key (``batch:<uuid>``)."""
    return f"{STREAM_APP_PREFIX}{key.removeprefix('batch:')}"


class DeltaTransaction:
    """The rows of one file, or of one stream batch with its message ids, for one tenant,
    buffered until :meth:`commit`."""

    def __init__(self, sink: DeltaSink, profile: TenantProfile):
        self._sink, self._profile = sink, profile
        self._specs: dict[str, TableSpec] = {}
        self._parts: dict[str, list[pa.Table]] = {}
        self._ids: list[pa.Array] = []
        self.rows_updated = 0

    def write(self, table: TableSpec, data: pa.Table | pa.RecordBatch) -> None:
        part = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        self._specs[table.name] = table
        self._parts.setdefault(table.name, []).append(part)

    def ledger_entry(self, key: str) -> LedgerEntry | None:
        return self._sink.ledger_lookup(self._profile, key)

    def seen_message_ids(self, ids: pa.Array) -> pa.Array:
        return self._sink.seen_message_ids(self._profile, ids)

    def add_message_ids(self, ids: pa.Array) -> None:
        """Kept until :meth:`commit`, which records them (DuplicateMessages there)."""
        self._ids.append(pa.array(ids, pa.string()))

    def commit(self, entry: LedgerEntry) -> None:
        if self._ids:
            self._commit_stream(entry)
            return
        sink, profile = self._sink, self._profile
        app = file_app_id(entry.key)
        lock = sink.lock(profile)
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
            sink.append_ledger(profile, entry, sorted(self._parts), app)
        finally:
            lock.release()
            self.rollback()

    def _commit_stream(self, entry: LedgerEntry) -> None:
        """A stream batch: its ids recorded pending (DuplicateMessages if one is committed),
        then each table's commit, the ledger's, and the ids marked committed."""
        sink, profile = self._sink, self._profile
        ids = pa.concat_arrays(self._ids)
        names = sorted(self._parts)
        lock = sink.lock(profile)
        try:
            with MessageIds(sink.tenant_dir(profile)) as index:
                if not index.claim(entry.key, ids, names, entry.source):
                    committed, pending = index.lookup(ids)
                    resolved = [b for b in pending if sink.resolve_batch(profile, index, b)]
                    if committed or resolved or not index.claim(entry.key, ids, names,
                                                                entry.source):
                        raise DuplicateMessages(
                            f"tenant {entry.tenant!r}: message ids already committed to the "
                            "lake (or repeated in the batch)")
                if len(names) > 1:  # a crash between two table commits rolls forward
                    self._stage(entry.key)
                for name in names:
                    self.commit_table(name, entry, stream_app_id(entry.key))
                sink.fault_point("delta_stream_before_ledger")
                sink.append_ledger(profile, entry, names, stream_app_id(entry.key))
                index.committed(entry.key)
            sink.unstage(profile, entry.key)
        finally:
            lock.release()
            self.rollback()

    def _stage(self, key: str) -> None:
        folder = self._sink.staged_dir(self._profile, key)
        folder.mkdir(parents=True, exist_ok=True)
        for name, parts in self._parts.items():
            pq.write_table(pa.concat_tables(parts), folder / f"{name}.parquet")

    def commit_table(self, name: str, entry: LedgerEntry, app: str | None = None) -> bool:
        """Commit the buffered rows of one table with the app transaction (the file's by
        default), unless that table already holds it (an earlier try got that far). True if
        written."""
        data = pa.concat_tables(self._parts[name]).combine_chunks()
        written, updated = self._sink.commit_table(self._profile, self._specs[name], data,
                                                   entry, app or file_app_id(entry.key))
        self.rows_updated += updated
        return written

    def rollback(self) -> None:
        """Forget the buffered rows and ids: nothing of them reached a Delta log."""
        self._specs.clear()
        self._parts.clear()
        self._ids.clear()


class _Conflict(Exception):
    """Delta refused a commit: another writer committed meanwhile (retried)."""


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

    def lock(self, profile: TenantProfile) -> FileLock:
        """The tenant's commit lock (a local ``flock``): file and stream commits, resolution
        of pending stream batches and compaction take turns under it."""
        return FileLock(self.tenant_dir(profile) / ".simbdp.lock",
                        f"delta {profile.schema_name}: commit lock")

    def staged_dir(self, profile: TenantProfile, key: str) -> Path:
        return self.tenant_dir(profile) / PENDING_DIR / key.replace(":", "_")

    def unstage(self, profile: TenantProfile, key: str) -> None:
        shutil.rmtree(self.staged_dir(profile, key), ignore_errors=True)

    def fault_point(self, name: str) -> None:
        """Crash here if ``<path>/.faults/<name>`` exists: lets tests kill a worker between
        the data tables' commits and the ledger's (like the batch job's fault points)."""
        if (self.root / ".faults" / name).exists():
            os._exit(137)

    # writes ---------------------------------------------------------------------------------
    @staticmethod
    def _commit_properties(entry: LedgerEntry, app: str) -> CommitProperties:
        return CommitProperties(
            app_transactions=[Transaction(app, FILE_APP_VERSION)],
            custom_metadata={"simbdp.source": entry.source,
                             "simbdp.ingestion_id": entry.ingestion_id})

    def commit_table(self, profile: TenantProfile, spec: TableSpec, data: pa.Table,
                     entry: LedgerEntry, app: str) -> tuple[bool, int]:
        """One table's commit of ``data`` carrying app transaction ``app``, unless the table
        holds it already; retried when Delta refuses it for another writer's concurrent
        commit. (written, rows that updated a row)."""
        for attempt in range(1, CONFLICT_TRIES + 1):
            if self.open_table(profile, spec.name).transaction_version(app) is not None:
                return False, 0
            try:
                if spec.primary_key:
                    return True, self.upsert(profile, spec, dedupe_last(data, spec.primary_key),
                                             entry, app)
                self.append(profile, spec.name, data, entry, app)
                return True, 0
            except _Conflict as e:
                if attempt == CONFLICT_TRIES:
                    raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta table "
                                          f"{spec.name!r}: concurrent commits: {e}") from e
        raise AssertionError("unreachable")

    def append_ledger(self, profile: TenantProfile, entry: LedgerEntry, tables: list[str],
                      app: str) -> None:
        row = pa.table({
            "key": [entry.key], "source": [entry.source],
            "ingestion_id": [entry.ingestion_id], "rows": [entry.rows],
            "tables": [",".join(tables)],
            "committed_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
        }, schema=LEDGER_SCHEMA)
        for attempt in range(1, CONFLICT_TRIES + 1):
            if self.open_table(profile, LEDGER_TABLE).transaction_version(app) is not None:
                return
            try:
                self.append(profile, LEDGER_TABLE, row, entry, app)
                return
            except _Conflict as e:
                if attempt == CONFLICT_TRIES:
                    raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta ledger: "
                                          f"concurrent commits: {e}") from e

    def append(self, profile: TenantProfile, table: str, data: pa.Table,
               entry: LedgerEntry, app: str) -> None:
        try:
            write_deltalake(self.table_uri(profile, table), data, mode="append",
                            commit_properties=self._commit_properties(entry, app))
        except CommitFailedError as e:
            raise _Conflict(str(e)) from e
        except SchemaMismatchError as e:
            raise SchemaError(f"tenant {profile.tenant_id!r}: table {table!r}: {e}") from e
        except (DeltaError, OSError) as e:
            raise SinkUnavailable(f"tenant {profile.tenant_id!r}: delta write of {table!r} "
                                  f"failed: {e}") from e

    def upsert(self, profile: TenantProfile, spec: TableSpec, data: pa.Table,
               entry: LedgerEntry, app: str) -> int:
        """Merge ``data`` by key in one commit; returns the rows that updated a row."""
        on = " AND ".join(f"s.{k} = t.{k}" for k in spec.primary_key)
        try:
            metrics = (self.open_table(profile, spec.name)
                       .merge(data, on, source_alias="s", target_alias="t",
                              commit_properties=self._commit_properties(entry, app))
                       .when_matched_update_all().when_not_matched_insert_all().execute())
        except CommitFailedError as e:
            raise _Conflict(str(e)) from e
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
        lock = self.lock(profile)
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
        """From the tenant's message-id index (no scan of Delta files). Ids of a pending batch
        (a writer mid-commit, or one that died) are resolved under the commit lock first."""
        self.tenant_dir(profile).mkdir(parents=True, exist_ok=True)
        with MessageIds(self.tenant_dir(profile)) as index:
            seen, pending = index.lookup(ids)
            if pending:
                lock = self.lock(profile)
                try:
                    for batch in pending:
                        self.resolve_batch(profile, index, batch)
                    seen, _ = index.lookup(ids)
                finally:
                    lock.release()
        return pa.array(seen, pa.string())

    def resolve_batch(self, profile: TenantProfile, index: MessageIds, key: str) -> bool:
        """Settle a pending stream batch (under the commit lock, so its writer is done or
        dead): True if it is committed now (rolled forward if need be), False if its ids
        are free again (it reached no table)."""
        batch = index.pending(key)
        if batch is None:  # settled meanwhile
            return index.state(key) == "committed"
        app = stream_app_id(key)
        entry = LedgerEntry(tenant=profile.tenant_id, key=key, source=batch.source,
                            ingestion_id=key, rows=batch.rows)
        if self.open_table(profile, LEDGER_TABLE).transaction_version(app) is None:
            done = [t for t in batch.tables
                    if self.open_table(profile, t).transaction_version(app) is not None]
            if not done:
                index.forget(key)
                self.unstage(profile, key)
                return False
            for name in batch.tables:
                if name in done:
                    continue
                staged = self.staged_dir(profile, key) / f"{name}.parquet"
                if not staged.exists():
                    raise SinkUnavailable(
                        f"tenant {profile.tenant_id!r}: stream batch {key} is in tables "
                        f"{done} but not in {name!r}, and its staged copy {staged} is gone")
                self.commit_table(profile, profile.table(name), pq.read_table(staged), entry,
                                  app)
            self.append_ledger(profile, entry, batch.tables, app)
        index.committed(key)
        self.unstage(profile, key)
        return True

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
