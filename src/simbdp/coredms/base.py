"""The sink contract: bulk writes of Arrow batches, committed with a ledger entry.

A sink knows nothing of files or brokers. Exactly-once: the rows of one ingestion (a file or
a micro-batch of messages) and its ledger entry are committed in one transaction; the ledger
lives in the sink itself, so each sink of a multi-sink table is idempotent on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings
from simbdp.profiles.tables import TableSpec

if TYPE_CHECKING:  # the manager opens sinks to ensure tables; only workers write batches
    import pyarrow as pa

__all__ = ["SINKS", "LedgerEntry", "Sink", "SinkTransaction", "load_sink", "open_sink",
           "register_sink"]


@dataclass(frozen=True)
class LedgerEntry:
    """What one committed ingestion leaves in the sink's ledger.

    ``key`` is the content hash of a file (``sha256:...``) or the id of a micro-batch.
    """

    tenant: str
    key: str
    source: str  # file name or "stream:<app>"
    ingestion_id: str
    rows: int


class SinkTransaction(Protocol):
    """One open transaction of one tenant on one sink.

    ``rows_updated`` counts the rows written that replaced a row with the same key already in
    the table (an upsert that updated, not inserted); known once :meth:`commit` returns.
    """

    rows_updated: int

    def write(self, table: TableSpec, data: pa.Table | pa.RecordBatch) -> None:
        """Append (or upsert, when the table has a primary key) rows already cast to
        ``table.arrow_schema()``. Bulk only: no per-row statement. Raises SinkUnavailable."""

    def ledger_entry(self, key: str) -> LedgerEntry | None:
        """The ledger entry of ``key`` if a file with that content key is committed, looked
        up in this transaction (a file's key is known only once it has been read)."""

    def seen_message_ids(self, ids: pa.Array) -> pa.Array:
        """The subset of ``ids`` already committed, looked up in this transaction."""

    def add_message_ids(self, ids: pa.Array) -> None:
        """Record stream message ids (strings) in this transaction; committing two
        transactions that share an id fails with DuplicateMessages (nothing committed)."""

    def commit(self, entry: LedgerEntry) -> None:
        """Insert the ledger entry and commit everything written. Raises DuplicateIngestion if
        ``entry.key`` is already in the ledger (nothing is committed then)."""

    def rollback(self) -> None: ...


class Sink(Protocol):
    """A coredms engine for all tenants. Safe to use from one process; open one per process."""

    name: ClassVar[str]

    def ensure_tables(self, profile: TenantProfile) -> None:
        """Create the tenant's namespace, tables and ledger if missing (idempotent)."""

    def ledger_lookup(self, profile: TenantProfile, key: str) -> LedgerEntry | None:
        """The committed ledger entry with this key, or None."""

    def seen_message_ids(self, profile: TenantProfile, ids: pa.Array) -> pa.Array:
        """The subset of ``ids`` already committed for this tenant (vectorised lookup)."""

    def begin(self, profile: TenantProfile) -> SinkTransaction:
        """Open a write transaction for one tenant. DuckDB holds the tenant's writer lock
        until commit or rollback."""

    def read_rows(self, profile: TenantProfile, table: str, limit: int = 100,
                  where: dict[str, str] | None = None) -> pa.Table:
        """Read rows of a tenant table (read-only), equality filters on columns."""

    def count_rows(self, profile: TenantProfile, table: str) -> int: ...

    def close(self) -> None: ...


SINKS: dict[str, type] = {}


def register_sink(cls: type) -> type:
    SINKS[cls.name] = cls
    return cls


def load_sink(kind: str) -> type:
    """The sink class registered for ``kind``, its module (and driver) imported."""
    import importlib

    module = {"duckdb": "duckdb_sink", "postgres": "postgres", "delta": "delta"}[kind]
    importlib.import_module(f"simbdp.coredms.{module}")  # registers the sink
    return SINKS[kind]


def open_sink(settings: SinkSettings) -> Sink:
    """Instantiate the sink registered for ``settings.kind``."""
    return load_sink(settings.kind)(settings)
