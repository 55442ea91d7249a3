"""Quarantine tables and per-sink state on the stream path: a table with ``quarantine: true``
keeps a micro-batch's failing rows in ``<table>_quarantine`` (each naming its message and the
report that counts it) and acknowledges their messages; each report says what every sink did,
also while one is away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from simbdp.stream import retry
from simbdp.stream.brokers import open_broker
from simbdp.stream.client import make_messages, publish
from simbdp.stream.instance import StreamInstance
from simbdp.stream.monitor import StreamMonitor
from simbdp.testing import EVENTS_TABLE, stream_tenant, table_rows

RULES: list[dict[str, Any]] = [
    {"name": "uid", "column": "n", "check": "unique"},
    {"name": "short", "column": "note", "check": "min_length", "value": 3},
]


def tenant(sinks: list[str] | None = None, **table: Any) -> dict[str, Any]:
    t = stream_tenant(batch_max_rows=100)
    t["tables"][0] = {**EVENTS_TABLE, "quality": RULES, "quarantine": True, **table,
                      **({"sinks": sinks} if sinks else {})}
    return t


def rows(n: int, bad: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    out = [{"id": f"e{i}", "n": i, "note": "hello"} for i in range(n)]
    for i, change in bad.items():
        out[i].update(change)
    return out


def quarantined(env: Any, sink: str = "default") -> list[dict[str, Any]]:
    return table_rows(env.platform, sink, "acme", "events_quarantine", order_by="quality_source")


def test_failing_rows_go_to_the_quarantine_table_and_their_messages_are_acked(
        make_stream_env):
    env = make_stream_env([tenant()])
    env.publish("acme", rows(100, {3: {"note": "hi"}, 9: {"n": 2}, 20: {"n": "many"}}),
                id_field="id")
    reports = env.drain()
    assert env.count() == 97
    assert env.dead_letters() == []  # nothing dead-lettered: quarantined instead
    q = quarantined(env)
    assert [r["quality_source"] for r in q] == ["e20", "e3", "e9"]  # each row's message
    by_msg = {r["quality_source"]: r for r in q}
    assert "rule 'short'" in by_msg["e3"]["quality_reason"] and by_msg["e3"]["note"] == "hi"
    assert "rule 'uid'" in by_msg["e9"]["quality_reason"]
    assert by_msg["e20"]["n"] == "many" and "is not int64" in by_msg["e20"]["quality_reason"]
    # the quarantined rows name the report of the window they were checked in, readable as a
    # record; the reports count them
    StreamMonitor(env.platform, env.store).ingest_reports(reports)
    [rep] = {r["quality_ingestion"] for r in q}
    assert env.store.stream_report(rep) is not None
    stored = env.store.stream_reports("acme")
    assert sum(r["rows_rejected"] for r in stored) == 3
    assert sum(r["quality"]["rows_passed"] for r in stored if r["quality"]) == 97
    # per sink: one commit of all 100 messages, rows written into the table and quarantine
    sinks = [r["sinks"]["default"] for r in env.store.stream_reports("acme") if r["sinks"]]
    assert sum(s["messages"] for s in sinks) == 100
    assert sum(s["rows"] for s in sinks) == 100  # 97 loaded + 3 quarantined
    assert {s["state"] for s in sinks} == {"committed"} and not any(s["failures"]
                                                                   for s in sinks)
    # a publisher's duplicate adds nothing, to either table
    env.publish("acme", rows(5, {3: {"note": "hi"}}), id_field="id")
    env.drain()
    assert env.count() == 97 and len(quarantined(env)) == 3


def test_a_report_delivered_twice_is_stored_and_counted_once(make_stream_env):
    env = make_stream_env([tenant()])
    env.publish("acme", rows(10, {}), id_field="id")
    reports = [r for r in env.drain() if r["messages"]]
    monitor = StreamMonitor(env.platform, env.store)
    monitor.ingest_reports([dict(r) for r in reports])
    monitor.ingest_reports([dict(r) for r in reports])
    assert sum(r["messages"] for r in env.store.stream_reports("acme")) == 10


@pytest.mark.postgres
def test_quarantine_in_two_sinks_holds_a_nul_byte_as_text(make_stream_env, pg_dsn):
    """PostgreSQL text cannot hold NUL: the row is refused, and quarantined in both sinks
    with the byte shown as ``\\0``."""
    env = make_stream_env([tenant(sinks=["default", "pg"])],
                          sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    env.publish("acme", rows(50, {7: {"note": "bad\x00byte"}, 8: {"note": "no"}}),
                id_field="id")
    env.drain()
    assert env.count() == env.count(sink="pg") == 48
    for sink in ("default", "pg"):
        q = quarantined(env, sink)
        assert [r["quality_source"] for r in q] == ["e7", "e8"], sink
        assert q[0]["note"] == "bad\\0byte" and "NUL byte" in q[0]["quality_reason"]


def _allow_connections(dsn: str, allow: bool) -> None:
    """Open or close the test database to connections (closing ends those it has)."""
    import psycopg

    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s", [name])


@pytest.mark.postgres
def test_a_sink_that_is_away_shows_in_the_reports_and_each_sink_gets_each_message_once(
        make_stream_env, pg_dsn, monkeypatch):
    """DuckDB and PostgreSQL; PostgreSQL's database closes to connections while messages
    come. Their micro-batches wait (looked up, retried, nacked, redelivered: written into
    neither sink meanwhile); the reports say PostgreSQL waits, and why; nothing is
    dead-lettered; once it is back each sink gets each message once."""
    monkeypatch.setattr(retry, "RETRY_BASE_SECS", 0.01)
    env = make_stream_env([tenant(sinks=["default", "pg"])],
                          sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    reports: list[dict[str, Any]] = []
    during: list[int] = []  # DuckDB's rows at the end of the outage

    async def until(cond: Any, secs: float = 20) -> None:
        deadline = time.monotonic() + secs
        while not cond() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def go() -> None:
        broker = open_broker(env.config.broker)
        stop = asyncio.Event()
        task = asyncio.create_task(
            StreamInstance(env.platform, "acme", "ev", "test-1", broker).run(stop))
        await publish(env.platform, "acme", make_messages(rows(10, {}), id_field="id"))
        await until(lambda: env.count(sink="pg") == 10)
        await asyncio.to_thread(_allow_connections, pg_dsn, False)
        try:
            await publish(env.platform, "acme",
                          make_messages(rows(30, {})[10:], id_field="id"))
            await asyncio.sleep(3)  # retried, nacked, redelivered: PostgreSQL stays away
            during.append(env.count())
        finally:
            await asyncio.to_thread(_allow_connections, pg_dsn, True)
        await until(lambda: env.count(sink="pg") == 30)
        await asyncio.sleep(1.2)  # a report after the catch-up
        stop.set()
        await task
        probe = open_broker(env.config.broker)
        reports.extend(await probe.fetch_reports(1000, 0.1))
        await probe.close()
        await broker.close()

    asyncio.run(go())
    assert env.count() == env.count(sink="pg") == 30
    assert env.dead_letters() == []
    pg = [r["sinks"]["pg"] for r in reports if r["sinks"] and "pg" in r["sinks"]]
    waiting = [s for s in pg if s["state"].startswith("waiting: ")]
    assert waiting and all(s["last_error"] for s in waiting)
    assert sum(s["failures"] for s in pg) >= 8  # one micro-batch's attempts at least
    assert pg[-1]["state"] == "committed"
    assert during == [10]
    assert sum(s["messages"] for r in reports for n, s in (r["sinks"] or {}).items()
               if n == "default") == 30  # each message committed once in DuckDB
    StreamMonitor(env.platform, env.store).ingest_reports(reports)
    assert any(r["sinks"]["pg"]["failures"] for r in env.store.stream_reports("acme")
               if r["sinks"] and "pg" in r["sinks"])


def test_quarantine_in_a_lake_table_with_the_buffered_micro_batches(make_stream_env, tmp_path):
    """Delta: micro-batches buffered into one commit; the quarantine table is one more table
    of that commit, so its rows are there once as well."""
    env = make_stream_env([tenant(sinks=["lake"])],
                          sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake")}})
    data = rows(300, {5: {"note": "no"}, 150: {"note": "x"}, 299: {"n": "many"}})
    env.publish("acme", data, id_field="id")
    env.publish("acme", data[:100], id_field="id")  # a publisher's duplicates
    env.drain()
    assert env.count(sink="lake") == 297
    assert [r["quality_source"] for r in quarantined(env, "lake")] == ["e150", "e299", "e5"]
    assert env.dead_letters() == []
