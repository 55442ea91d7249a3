"""The state store: ingestion records, daily quota usage, stream reports and decisions.

SQLite at ``<home>/state.sqlite`` by default; PostgreSQL when the config names ``state_dsn``.
Every ingestion attempt (a file or a micro-batch) leaves one row in ``ingestions``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from simbdp.profiles.platform import PlatformConfig
from simbdp.state.db import Database
from simbdp.state.schema import ADDED_COLUMNS, SCHEMA

__all__ = ["MAX_REASON_CHARS", "OUTCOMES", "STATES", "StateStore", "short_reason", "today"]

#: final outcomes of an ingestion attempt
OUTCOMES = ("processed", "rejected", "failed", "duplicate", "interrupted")
#: states of an attempt not finished: in flight, or waiting out a sink outage
STATES = ("running", "waiting")
#: reasons longer than this are cut in records and logs; the reason file keeps them whole
MAX_REASON_CHARS = 2000


def short_reason(reason: str | None, limit: int = MAX_REASON_CHARS) -> str | None:
    """``reason`` cut to ``limit`` characters, saying how much was left out."""
    if reason is None or len(reason) <= limit:
        return reason
    cut = reason[: limit - 60]
    return f"{cut} ... ({len(reason) - len(cut):,} more characters in the reason file)"

_RECORD_FIELDS = (
    "id", "tenant", "kind", "source", "app", "content_key", "bytes", "rows_in", "rows_loaded",
    "rows_rejected", "messages", "started_at", "ended_at", "read_secs", "app_secs",
    "write_secs", "latency_p50_ms", "latency_p99_ms", "outcome", "reason", "attempt",
    "quota_day", "sandbox", "decompressed_bytes", "rows_updated", "work_started_at", "sinks",
    "quality",
)


#: columns held as JSON text: ``quality`` (see :mod:`simbdp.quality.stats`) and a stream
#: report's ``sinks`` (see :class:`simbdp.stream.window.SinkWindow`); a batch record's
#: ``sinks`` stays text
REPORT_JSON = ("quality", "sinks")


def _encode_json(row: dict[str, Any], fields: tuple[str, ...] = ("quality",)
                    ) -> dict[str, Any]:
    """``fields`` stored as JSON text (they may come as dicts)."""
    for f in fields:
        if isinstance(row.get(f), dict):
            row[f] = json.dumps(row[f], separators=(",", ":"))
    return row


def _decode_json(rows: list[dict[str, Any]], fields: tuple[str, ...] = ("quality",)
                    ) -> list[dict[str, Any]]:
    """``fields`` read back as dicts (None if not JSON)."""
    for r in rows:
        for f in fields:
            if isinstance(r.get(f), str):
                try:
                    r[f] = json.loads(r[f])
                except ValueError:
                    r[f] = None
    return rows


def today(at: float | None = None) -> str:
    """The quota day (UTC) of a timestamp."""
    return datetime.fromtimestamp(at if at is not None else time.time(), UTC).strftime("%Y-%m-%d")


class StateStore:
    """Records and quotas, shared by every process of one installation."""

    def __init__(self, db: Database):
        self.db = db
        self.db.script(SCHEMA)
        self._add_columns()

    def _add_columns(self) -> None:
        """Bring a store made by an older release up to the current columns."""
        for table, column, sql_type in ADDED_COLUMNS:
            if self.db.dialect == "postgres":
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} "
                                f"{sql_type}")
            elif column not in {r["name"] for r in self.db.query(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    @classmethod
    def open(cls, config: PlatformConfig) -> StateStore:
        if config.state_dsn is not None:
            return cls(Database(dsn=config.state_dsn.get_secret_value()))
        return cls(Database(sqlite_path=config.home / "state.sqlite"))

    def close(self) -> None:
        self.db.close()

    # records -----------------------------------------------------------------------------
    def start_record(self, tenant: str, kind: str, source: str, **fields: Any) -> str:
        """Insert a ``running`` record and return its id."""
        rec = {"id": fields.pop("id", None) or uuid.uuid4().hex, "tenant": tenant,
               "kind": kind, "source": source, "started_at": time.time(),
               "outcome": "running", **fields}
        self._insert(rec)
        return rec["id"]

    def add_record(self, tenant: str, kind: str, source: str, outcome: str,
                   **fields: Any) -> str:
        """Insert a finished record (a rejection before any work, a stream micro-batch)."""
        now = time.time()
        rec = {"id": uuid.uuid4().hex, "tenant": tenant, "kind": kind, "source": source,
               "started_at": fields.pop("started_at", now), "ended_at": now,
               "outcome": outcome, **fields}
        self._insert(rec)
        return rec["id"]

    def _insert(self, rec: dict[str, Any]) -> None:
        unknown = set(rec) - set(_RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}")
        if "reason" in rec:
            rec["reason"] = short_reason(rec["reason"])
        _encode_json(rec)
        cols = ", ".join(rec)
        self.db.execute(f"INSERT INTO ingestions ({cols}) VALUES ({', '.join('?' * len(rec))})",
                        list(rec.values()))

    def finish_record(self, record_id: str, outcome: str, **fields: Any) -> None:
        """Set a record's final outcome (``ended_at`` now); a long reason is cut."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        self._update(record_id, {"ended_at": time.time(), **fields, "outcome": outcome})

    def mark_record(self, record_id: str, state: str, reason: str | None = None,
                    **fields: Any) -> None:
        """Set a record that is not finished to ``running`` or ``waiting`` (with why)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        self._update(record_id, {**fields, "outcome": state, "reason": reason, "ended_at": None})

    def _update(self, record_id: str, fields: dict[str, Any]) -> None:
        unknown = set(fields) - set(_RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown record fields {sorted(unknown)}")
        if "reason" in fields:
            fields["reason"] = short_reason(fields["reason"])
        _encode_json(fields)
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE ingestions SET {sets} WHERE id = ?",
                        [*fields.values(), record_id])

    def record(self, record_id: str) -> dict[str, Any] | None:
        rows = _decode_json(self.db.query("SELECT * FROM ingestions WHERE id = ?",
                                             [record_id]))
        return rows[0] if rows else None

    def records(self, tenant: str | None = None, *, kind: str | None = None,
                outcome: str | None = None, since: float | None = None,
                source: str | None = None, content_key: str | None = None, limit: int = 1000,
                offset: int = 0) -> list[dict[str, Any]]:
        """Records, newest first, filtered; ``quality`` as a dict (or None)."""
        return _decode_json(self._select(
            "ingestions", "started_at", since, limit, offset, tenant=tenant, kind=kind,
            outcome=outcome, source=source, content_key=content_key))

    def _select(self, table: str, time_col: str, since: float | None, limit: int,
                offset: int = 0, **filters: Any) -> list[dict[str, Any]]:
        """Rows of ``table`` matching the non-None equality filters, newest first."""
        where, params = [], []
        for col, val in filters.items():
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            where.append(f"{time_col} >= ?")
            params.append(since)
        sql = f"SELECT * FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {time_col} DESC LIMIT ? OFFSET ?"
        return self.db.query(sql, [*params, limit, offset])

    def interrupt_running(self, reason: str) -> list[dict[str, Any]]:
        """Mark records left ``running`` or ``waiting`` by a stopped process as
        ``interrupted``; return them."""
        rows = self.db.query("SELECT * FROM ingestions WHERE outcome IN ('running', 'waiting')")
        for r in rows:
            self.finish_record(r["id"], "interrupted", reason=reason)
        return rows

    # quotas ------------------------------------------------------------------------------
    def _ensure_day(self, tenant: str, day: str) -> None:
        self.db.execute("INSERT INTO quota_usage (tenant, day) VALUES (?, ?) "
                        "ON CONFLICT DO NOTHING", [tenant, day])

    def reserve_files(self, tenant: str, day: str, files: int, nbytes: int,
                      max_files: int, max_bytes: int) -> bool:
        """Atomically reserve daily file and byte quota; False (nothing reserved) if over."""
        self._ensure_day(tenant, day)
        changed = self.db.execute(
            "UPDATE quota_usage SET files = files + ?, bytes = bytes + ? "
            "WHERE tenant = ? AND day = ? AND files + ? <= ? AND bytes + ? <= ?",
            [files, nbytes, tenant, day, files, max_files, nbytes, max_bytes])
        return changed == 1

    def release_files(self, tenant: str, day: str, files: int, nbytes: int) -> None:
        self.db.execute(
            "UPDATE quota_usage SET files = files - ?, bytes = bytes - ? "
            "WHERE tenant = ? AND day = ?", [files, nbytes, tenant, day])

    def add_bytes(self, tenant: str, day: str, nbytes: int) -> None:
        """Count bytes found only while reading (decompressed beyond the file's size)."""
        self._ensure_day(tenant, day)
        self.db.execute("UPDATE quota_usage SET bytes = bytes + ? WHERE tenant = ? AND day = ?",
                        [nbytes, tenant, day])

    def add_messages(self, tenant: str, day: str, messages: int, nbytes: int) -> None:
        self._ensure_day(tenant, day)
        self.db.execute(
            "UPDATE quota_usage SET messages = messages + ?, stream_bytes = stream_bytes + ? "
            "WHERE tenant = ? AND day = ?", [messages, nbytes, tenant, day])

    def usage(self, tenant: str, day: str) -> dict[str, int]:
        rows = self.db.query("SELECT files, bytes, messages, stream_bytes FROM quota_usage "
                             "WHERE tenant = ? AND day = ?", [tenant, day])
        return rows[0] if rows else {"files": 0, "bytes": 0, "messages": 0, "stream_bytes": 0}

    # stream: reports, decisions, desired instances -----------------------------------------
    def add_stream_report(self, report: dict[str, Any]) -> bool:
        """Store a report; False if one with its ``id`` is stored already (a redelivery)."""
        rec = _encode_json({"id": uuid.uuid4().hex, **report}, REPORT_JSON)
        cols = ", ".join(rec)
        if self.db.query("SELECT 1 AS x FROM stream_reports WHERE id = ?", [rec["id"]]):
            return False
        self.db.execute(
            f"INSERT INTO stream_reports ({cols}) VALUES ({', '.join('?' * len(rec))})",
            list(rec.values()))
        return True

    def stream_reports(self, tenant: str | None = None, app: str | None = None,
                       since: float | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        return _decode_json(self._select("stream_reports", "window_end", since, limit,
                                            tenant=tenant, app=app), REPORT_JSON)

    def stream_report(self, report_id: str) -> dict[str, Any] | None:
        """One stream report by id (``quality`` as a dict), or None."""
        rows = _decode_json(self.db.query("SELECT * FROM stream_reports WHERE id = ?",
                                             [report_id]), REPORT_JSON)
        return rows[0] if rows else None

    def add_decision(self, tenant: str, app: str | None, action: str, reason: str,
                     before: int | None = None, after: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO decisions (id, at, tenant, app, action, instances_before, "
            "instances_after, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [uuid.uuid4().hex, time.time(), tenant, app, action, before, after, reason])

    def decisions(self, tenant: str | None = None, since: float | None = None,
                  limit: int = 1000) -> list[dict[str, Any]]:
        return self._select("decisions", "at", since, limit, tenant=tenant)

    def set_desired(self, tenant: str, app: str, instances: int,
                    paused_reason: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO stream_desired (tenant, app, instances, paused_reason, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, app) DO UPDATE SET "
            "instances = excluded.instances, paused_reason = excluded.paused_reason, "
            "updated_at = excluded.updated_at",
            [tenant, app, instances, paused_reason, time.time()])

    def desired(self) -> list[dict[str, Any]]:
        return self.db.query("SELECT * FROM stream_desired ORDER BY tenant, app")
