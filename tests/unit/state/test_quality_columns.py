"""The quality columns of the state store: added to a store of an older release, written as
JSON, read back as dicts, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time

import pytest

from simbdp.observe.report import batch_summary, stream_summary
from simbdp.state import StateStore
from simbdp.state.db import Database

Q = {"rows_checked": 10, "rows_passed": 8, "rows_failed_schema": 1, "failed": {"pos": 1},
     "pass_rate": 0.8}


def _old_store(path) -> None:  # type: ignore[no-untyped-def]
    """A store as an older release left it: no quality columns."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE ingestions (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL,
            source TEXT NOT NULL, app TEXT, content_key TEXT, bytes BIGINT NOT NULL DEFAULT 0,
            rows_in BIGINT NOT NULL DEFAULT 0, rows_loaded BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0, messages BIGINT NOT NULL DEFAULT 0,
            started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION,
            read_secs DOUBLE PRECISION NOT NULL DEFAULT 0,
            app_secs DOUBLE PRECISION NOT NULL DEFAULT 0,
            write_secs DOUBLE PRECISION NOT NULL DEFAULT 0, latency_p50_ms DOUBLE PRECISION,
            latency_p99_ms DOUBLE PRECISION, outcome TEXT NOT NULL, reason TEXT,
            attempt INTEGER NOT NULL DEFAULT 1, quota_day TEXT);
        INSERT INTO ingestions (id, tenant, kind, source, started_at, outcome)
            VALUES ('old', 't', 'batch', 'a.csv', 1.0, 'processed');
    """)
    con.commit()
    con.close()


def test_an_older_store_gains_the_columns_and_old_records_read_without_quality(tmp_path):
    path = tmp_path / "state.sqlite"
    _old_store(path)
    store = StateStore(Database(sqlite_path=path))
    old = store.record("old")
    assert old is not None and old["quality"] is None
    rid = store.start_record("t", "batch", "b.csv")
    store.finish_record(rid, "processed", rows_in=10, rows_loaded=8, quality=Q)
    assert store.record(rid)["quality"] == Q  # type: ignore[index]
    [s] = batch_summary(store, "t")
    assert (s.quality.rows_checked, s.quality.rows_passed, s.quality.failed) == (10, 8, {"pos": 1})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_records_and_stream_reports_keep_the_quality(tmp_path, request, backend):
    if backend == "sqlite":
        db = Database(sqlite_path=tmp_path / "state.sqlite")
    else:
        db = Database(dsn=request.getfixturevalue("pg_dsn"))
    store = StateStore(db)
    rid = store.add_record("t", "batch", "a.csv", "rejected", quality=Q)
    assert store.records("t")[0]["quality"] == Q and store.record(rid)["quality"] == Q  # type: ignore[index]
    for passed in (8, 9):
        store.add_stream_report({
            "tenant": "t", "app": "ev", "instance": "i", "window_start": time.time() - 1,
            "window_end": time.time(), "messages": 10, "bytes": 100, "rows_loaded": passed,
            "rows_rejected": 10 - passed, "backlog": 0,
            "quality": {**Q, "rows_passed": passed, "failed": {"pos": 10 - passed}}})
    reports = store.stream_reports("t")
    assert store.stream_report(reports[0]["id"])["quality"] == reports[0]["quality"]  # type: ignore[index]
    [s] = stream_summary(store, "t")
    assert (s.quality.rows_checked, s.quality.rows_passed, s.quality.failed) == (20, 17, {"pos": 3})
    assert s.quality.pass_rate == pytest.approx(0.85)
