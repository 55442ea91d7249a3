"""What the manager and a worker exchange: the files to ingest and a result per file.

Kept apart from the job code so that the manager's process never imports pyarrow, DuckDB or
the app runner: only workers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simbdp.quality.stats import QualityStats

__all__ = ["FileJob", "JobResult"]


@dataclass(frozen=True)
class FileJob:
    """A file accepted for ingestion; ``record_id`` is the attempt's ingestion record."""

    record_id: str
    tenant: str
    path: Path
    nbytes: int
    attempt: int = 1
    quota_day: str = ""
    #: tries so far that met an unavailable sink, and when the first of them ended
    waits: int = 0
    waiting_since: float | None = None


@dataclass
class JobResult:
    """What a worker reports back to the manager."""

    outcome: str  # processed | duplicate | rejected | failed | waiting (sink) | retry (died)
    reason: str | None = None
    code: str | None = None
    content_key: str | None = None
    rows_in: int = 0
    rows_loaded: int = 0
    #: of ``rows_loaded``, the rows that replaced a row with the same key (an upsert)
    rows_updated: int = 0
    rows_rejected: int = 0
    #: when the worker took the file (epoch seconds): accepted -> this is the queue wait
    work_started_at: float | None = None
    read_secs: float = 0.0
    app_secs: float = 0.0
    write_secs: float = 0.0
    rejected_rows_file: str | None = None
    #: on a ledger hit: the ingestion id that committed the same content
    ledger_ingestion_id: str | None = None
    #: on a ledger hit: the rows that ingestion committed
    ledger_rows: int | None = None
    rule_failures: dict[str, int] = field(default_factory=dict)
    #: quality counts per target table (rows checked, passed, failed per rule)
    quality: dict[str, QualityStats] = field(default_factory=dict)
    #: how the app ran: ``bwrap`` (confined) or ``unconfined``; None without an app
    sandbox: str | None = None
    #: bytes read once decompressed (the file's size if not compressed): what the file cost
    decompressed_bytes: int = 0
    #: sink name -> what this attempt left there: ``committed``, ``already committed by
    #: ingestion ...`` (an earlier attempt did it), or ``waiting: <why>`` (unavailable)
    sinks: dict[str, str] = field(default_factory=dict)
