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
from simbdp.testing import drop, tenant_profile

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
