"""Quality rules end to end on the real sinks (DuckDB, PostgreSQL): rows failing a rule are
kept out with their reason, the record holds the quality counts, a file under its table's
min_pass_rate is rejected whole (kept, nothing loaded), a rule naming an unknown column
disables the tenant with a clear reason."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simbdp.coredms.base import open_sink
from simbdp.testing import drop, table_rows, tenant_profile

RULES: list[dict[str, Any]] = [
    {"name": "uid", "column": "id", "check": "unique"},
    {"name": "fresh", "column": "seen_at", "check": "max_age", "value": "7d"},
    {"name": "short", "column": "code", "check": "min_length", "value": 2},
    {"name": "long", "column": "code", "check": "max_length", "value": 5},
    {"name": "pos", "column": "n", "check": "min", "value": 0},
]


def readings(**extra: Any) -> dict[str, Any]:
    return {"name": "readings",
            "columns": [{"name": "id", "type": "int", "nullable": False},
                        {"name": "n", "type": "int"}, {"name": "code", "type": "text"},
                        {"name": "seen_at", "type": "timestamp"}],
            "quality": RULES, **extra}


def file_of(n: int, bad: dict[int, dict[str, Any]]) -> bytes:
    """``n`` good rows (ids 0..n-1, fresh, valid), with the rows in ``bad`` replaced."""
    now = datetime.now(UTC).replace(tzinfo=None)
    out = io.StringIO()
    w = csv.DictWriter(out, ["id", "n", "code", "seen_at"])
    w.writeheader()
    for i in range(n):
        row = {"id": i, "n": i % 100, "code": f"c{i % 1000}",
               "seen_at": (now - timedelta(hours=1)).isoformat(sep=" ")}
        row.update(bad.get(i, {}))
        w.writerow(row)
    return out.getvalue().encode()


OLD = (datetime.now(UTC) - timedelta(days=30)).replace(tzinfo=None).isoformat(sep=" ")
# 60,000 rows (about 2 MB): several chunks, so ``unique`` must look across them
N = 60_000
BAD = {5: {"code": "x"}, 7: {"code": "toolong"}, 11: {"n": -1}, 13: {"seen_at": OLD},
       40_000: {"id": 3}, 59_999: {"id": 50_000}, 17: {"n": "many"}}


@pytest.fixture(params=["duckdb", "postgres"])
def sink_kind(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The sinks of the platform and the tenant's table, on each real engine."""
    if request.param == "duckdb":
        return {"config": {}, "table": {}}
    dsn = request.getfixturevalue("pg_dsn")
    return {"config": {"sinks": {"pg": {"kind": "postgres", "dsn": dsn}}},
            "table": {"sinks": ["pg"]}}


def _rows(env: Any, sink: str) -> list[dict[str, Any]]:
    s = open_sink(env.config.sinks[sink])
    try:
        return s.read_rows(env.platform.tenant("acme"), "readings", limit=100_000).to_pylist()
    finally:
        s.close()


def test_each_rule_keeps_its_rows_out_and_the_record_counts_them(make_env, sink_kind):
    env = make_env([tenant_profile("acme", table=readings(**sink_kind["table"]))],
                   **sink_kind["config"])
    sink = sink_kind["table"].get("sinks", ["default"])[0]
    drop(env.staging("acme") / "readings.csv", file_of(N, BAD))
    [rec] = env.ingest("acme", "readings.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert (rec["rows_in"], rec["rows_loaded"], rec["rows_rejected"]) == (N, N - 7, 7)
    ids = {r["id"] for r in _rows(env, sink)}
    assert len(ids) == N - 7
    assert not ids & {5, 7, 11, 13, 17, 40_000, 59_999}
    assert {3, 50_000} <= ids  # the first row of a repeated id loads
    q = rec["quality"]
    assert q["rows_checked"] == N and q["rows_passed"] == N - 7
    assert q["failed"] == {"uid": 2, "fresh": 1, "short": 1, "long": 1, "pos": 1}
    assert q["rows_failed_schema"] == 1
    assert q["pass_rate"] == pytest.approx((N - 7) / N)
    assert q["tables"]["readings"]["failed"] == q["failed"]
    rejected = (env.config.tenant_dir("acme") / "rejected-rows" /
                f"{rec['id']}-readings.csv.csv").read_text()
    assert "rule 'uid' (id unique) failed" in rejected
    assert "rule 'fresh' (seen_at max_age 7d) failed" in rejected
    assert "rule 'long' (code max_length 5.0) failed" in rejected


def test_min_pass_rate_breached_rejects_the_file_whole(make_env, sink_kind):
    env = make_env([tenant_profile("acme", table=readings(min_pass_rate=0.95,
                                                          **sink_kind["table"]))],
                   **sink_kind["config"])
    sink = sink_kind["table"].get("sinks", ["default"])[0]
    bad = {i: {"n": -1} for i in range(0, 1000, 10)}  # 100 of 1,000: 90% pass
    drop(env.staging("acme") / "readings.csv", file_of(1000, bad))
    [rec] = env.ingest("acme", "readings.csv")
    assert rec["outcome"] == "rejected"
    assert "pass rate 90.00%" in rec["reason"] and "min_pass_rate 95.00%" in rec["reason"]
    assert "'acme'" in rec["reason"] and "'readings.csv'" in rec["reason"]
    assert rec["rows_loaded"] == 0 and _rows(env, sink) == []
    assert rec["quality"]["rows_passed"] == 900 and rec["quality"]["failed"] == {"pos": 100}
    # nothing lost: the file is kept in rejected/ with the reason and its code
    assert "readings.csv" in env.outcome_files("acme", "rejected")
    details = json.loads((env.config.outcome_dir("acme", "rejected") /
                          "readings.csv.reason.json").read_text())
    assert details["code"] == "low_pass_rate" and "90.00%" in details["reason"]
    # the same rows above the rate load
    drop(env.staging("acme") / "readings-2.csv",
         file_of(1000, {i: {"n": -1} for i in range(0, 1000, 50)}))
    [ok] = env.ingest("acme", "readings-2.csv")
    assert ok["outcome"] == "processed" and ok["rows_loaded"] == 980
    assert len(_rows(env, sink)) == 980


def test_rule_on_unknown_column_disables_the_tenant_with_a_clear_reason(make_env):
    table = readings(quality=[{"name": "pos", "column": "amount", "check": "min", "value": 0}])
    env = make_env([tenant_profile("acme", table=table), tenant_profile("beta")])
    reason = env.platform.broken["acme"]
    assert "tenant 'acme'" in reason and "table 'readings'" in reason
    assert "quality rule 'pos'" in reason and "unknown column 'amount'" in reason
    assert "beta" in env.platform.tenants  # the other tenants run


@pytest.fixture(params=["duckdb", "postgres", "delta"])
def any_sink(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    if request.param == "duckdb":
        return {"config": {}, "table": {}}
    if request.param == "delta":
        return {"config": {"sinks": {"lake": {"kind": "delta", "path": str(tmp_path / "lake")}}},
                "table": {"sinks": ["lake"]}}
    return {"config": {"sinks": {"pg": {"kind": "postgres",
                                        "dsn": request.getfixturevalue("pg_dsn")}}},
            "table": {"sinks": ["pg"]}}


def _quarantined(env: Any, sink: str) -> list[dict[str, Any]]:
    return table_rows(env.platform, sink, "acme", "readings_quarantine", order_by="quality_row")


def test_failing_rows_land_in_the_quarantine_table_once(make_env, any_sink):
    env = make_env([tenant_profile("acme", table=readings(quarantine=True, min_pass_rate=0.5,
                                                          **any_sink["table"]))],
                   **any_sink["config"])
    sink = any_sink["table"]["sinks"][0] if any_sink["table"] else "default"
    data = file_of(N, BAD)
    drop(env.staging("acme") / "readings.csv", data)
    [rec] = env.ingest("acme", "readings.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_loaded"] == N - 7 and len(_rows(env, sink)) == N - 7
    q = _quarantined(env, sink)
    assert [r["quality_row"] for r in q] == sorted(BAD)  # the file's row numbers, from 0
    assert {r["quality_source"] for r in q} == {"readings.csv"}
    assert {r["quality_ingestion"] for r in q} == {rec["id"]}
    by_row = {r["quality_row"]: r for r in q}
    assert by_row[17]["n"] == "many" and "is not int64" in by_row[17]["quality_reason"]
    assert by_row[40_000]["id"] == "3" and "rule 'uid'" in by_row[40_000]["quality_reason"]
    assert "rule 'fresh'" in by_row[13]["quality_reason"]
    # the same content again is a duplicate: nothing more in either table
    drop(env.staging("acme") / "readings-again.csv", data)
    [dup] = env.ingest("acme", "readings-again.csv")
    assert dup["outcome"] == "duplicate" and len(_quarantined(env, sink)) == 7
    # found once read (the ledger is looked up at commit): its record counts nothing
    assert (dup["rows_in"], dup["rows_loaded"], dup["rows_rejected"]) == (0, 0, 0), dup
    assert not json.loads(dup["quality"] or "{}"), dup["quality"]
    # a file refused whole for its pass rate leaves nothing in the quarantine table either
    drop(env.staging("acme") / "readings-bad.csv",
         file_of(100, {i: {"n": -1} for i in range(60)}))
    [bad] = env.ingest("acme", "readings-bad.csv")
    assert bad["outcome"] == "rejected" and len(_quarantined(env, sink)) == 7


def test_quarantine_table_names_are_checked_at_load(make_env):
    clash = readings(quarantine=True)
    other = {"name": "readings_quarantine", "columns": [{"name": "x", "type": "int"}]}
    env = make_env([tenant_profile("acme", tables=[clash, other]),
                    tenant_profile("beta", table=readings(
                        quarantine=True, columns=[{"name": "quality_reason", "type": "text"}],
                        quality=[]))])
    assert "table names must be unique" in env.platform.broken["acme"]
    assert "quarantine table's own" in env.platform.broken["beta"]


def test_tenant_reads_its_quarantine_table_through_the_api(make_env):
    from fastapi.testclient import TestClient

    from simbdp.api.app import create_app
    from simbdp.state.keys import create_key

    env = make_env([tenant_profile("acme", table=readings(quarantine=True))])
    drop(env.staging("acme") / "readings.csv", file_of(50, {4: {"code": "x"}}))
    [rec] = env.ingest("acme", "readings.csv")
    client = TestClient(create_app(env.platform, env.store))
    key = {"Authorization": f"Bearer {create_key(env.store, 'acme')}"}
    [row] = client.get("/v1/tenants/acme/tables/readings_quarantine/rows", headers=key).json()
    assert row["id"] == "4" and row["code"] == "x" and row["quality_row"] == 4
    assert "rule 'short'" in row["quality_reason"] and row["quality_ingestion"] == rec["id"]


def test_small_files_in_one_transaction_keep_their_rules_rates_and_quarantine(make_env):
    env = make_env([tenant_profile("acme", table=readings(quarantine=True, min_pass_rate=0.8))],
                   stable_secs=0.0)
    names = [f"readings-{i}.csv" for i in range(6)]
    for i, n in enumerate(names):
        bad = {j: {"n": -1} for j in range(5)} if i == 2 else {1: {"code": "x"}}
        drop(env.staging("acme") / n, file_of(10, bad))  # file 2: 50% pass, under 80%
    subs = env.manager.submit("acme", [env.staging("acme") / n for n in names])
    env.manager.pump()
    [run] = env.manager.pool.running.values()
    assert sorted(j.path.name for j in run.jobs) == names  # one group, one transaction
    env.manager.run_until_idle(timeout_secs=120)
    rec = {s.path.name: env.store.record(s.record_id) for s in subs}
    low = rec.pop("readings-2.csv")
    assert low["outcome"] == "rejected" and "pass rate 50.00%" in low["reason"]
    assert low["quality"]["failed"] == {"pos": 5}
    assert all(r["outcome"] == "processed" and r["quality"]["rows_passed"] == 9
               for r in rec.values()), rec
    # each processed file: ids 0..9 but row 1 (ids repeat across files: unique is per file)
    assert len(_rows(env, "default")) == 5 * 9
    q = _quarantined(env, "default")
    assert sorted(r["quality_source"] for r in q) == sorted(rec)
    assert {r["quality_ingestion"] for r in q} == {r["id"] for r in rec.values()}
    assert {r["quality_row"] for r in q} == {1}
