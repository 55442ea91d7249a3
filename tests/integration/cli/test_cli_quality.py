"""Quality metadata where people read it: ``simbdp records show``, ``simbdp report``, the
tenant's records API and the operator's report API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from simbdp.api.app import create_app
from simbdp.batch import BatchIngestManager
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.stream.window import SinkWindow
from simbdp.testing import drop, make_platform, tenant_profile

SIMBDP = Path(sys.executable).with_name("simbdp")

TABLE: dict[str, Any] = {
    "name": "orders",
    "columns": [{"name": "id", "type": "int", "nullable": False},
                {"name": "amount", "type": "int"}, {"name": "code", "type": "text"}],
    "quality": [{"name": "uid", "column": "id", "check": "unique"},
                {"name": "pos", "column": "amount", "check": "min", "value": 0},
                {"name": "short", "column": "code", "check": "min_length", "value": 2}],
}


def simbdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SIMBDP), *args], capture_output=True, text=True, timeout=300,
                          check=False)


def csv_of(n: int, bad: dict[int, str]) -> bytes:
    lines = ["id,amount,code"]
    for i in range(n):
        lines.append(bad.get(i, f"{i},{i},ok{i}"))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def ingested(tmp_path: Path) -> tuple[Path, Platform, StateStore, dict[str, Any]]:
    """A home where one file of 200 rows was ingested: 4 fail rules, 1 fails its type."""
    home = tmp_path / "home"
    platform = make_platform(home, [tenant_profile("acme", table=TABLE), tenant_profile("beta")])
    store = StateStore.open(platform.config)
    drop(platform.config.staging_dir("acme") / "orders.csv",
         csv_of(200, {3: "4,1,ok", 7: "7,-5,ok", 8: "8,-1,ok", 9: "9,1,x", 10: "10,lots,ok"}))
    manager = BatchIngestManager(platform, store)
    try:
        [sub] = manager.submit("acme", [platform.config.staging_dir("acme") / "orders.csv"])
        manager.run_until_idle(timeout_secs=120)
    finally:
        manager.close()
    rec = store.record(sub.record_id)
    assert rec is not None and rec["outcome"] == "processed", rec
    return home, platform, store, rec


def test_records_show_and_report_print_the_quality(ingested):
    home, _, store, rec = ingested
    out = simbdp("records", "show", rec["id"], "--home", str(home))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "195 of 200 rows passed (97.5%)" in text, out.stdout
    assert "pos 2" in text and "uid 1" in text and "short 1" in text
    assert "types/required 1" in text

    # a stream report (a window of micro-batches) shows by its id too
    store.add_stream_report({
        "tenant": "acme", "app": "ev", "instance": "i1", "window_start": time.time() - 5,
        "window_end": time.time(), "messages": 50, "bytes": 5000, "rows_loaded": 48,
        "rows_rejected": 2, "backlog": 0,
        "quality": {"rows_checked": 50, "rows_passed": 48, "rows_failed_schema": 0,
                    "failed": {"pos": 2}, "pass_rate": 0.96},
        "sinks": {"default": sink_state(commits=1, messages=50, rows=50),
                  "pg": sink_state(failures=3, waiting=True, last_error="pg is away")}})
    [report] = store.stream_reports("acme")
    out = simbdp("records", "show", report["id"], "--home", str(home))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "48 of 50 rows passed (96.0%); failed: pos 2" in text, out.stdout
    assert "sink default │ committed; 1 commits, 50 messages, 50 rows" in text, out.stdout
    assert "sink pg │ waiting: pg is away; 0 commits, 0 messages, 0 rows; 3 failed " \
           "attempts, last: pg is away" in text, out.stdout
    store.set_desired("acme", "ev", 1)
    out = simbdp("stream", "status", "--home", str(home))
    assert out.returncode == 0, out.stderr
    assert "pg: waiting: pg is away" in " ".join(out.stdout.split()), out.stdout

    out = simbdp("report", "--home", str(home))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "quality per tenant" in text
    assert "│ acme │ batch │ 200 │ 195 │ 97.50% │ pos: 2, short: 1, uid: 1, " \
           "types/required: 1" in text, out.stdout
    assert "│ acme │ stream ev │ 50 │ 48 │ 96.00% │ pos: 2" in text, out.stdout


def sink_state(**fields: Any) -> dict[str, Any]:
    return SinkWindow(**fields).as_dict()


def test_records_api_and_operator_report_carry_the_quality(ingested):
    _, platform, store, rec = ingested
    client = TestClient(create_app(platform, store))
    tenant = {"Authorization": f"Bearer {create_key(store, 'acme')}"}
    op = {"Authorization": f"Bearer {create_key(store, OPERATOR)}"}
    [got] = client.get("/v1/tenants/acme/records", headers=tenant).json()
    q = got["quality"]
    assert (q["rows_checked"], q["rows_passed"], q["pass_rate"]) == (200, 195, 0.975)
    assert q["failed"] == {"uid": 1, "pos": 2, "short": 1}
    assert q["tables"]["orders"]["rows_failed_schema"] == 1
    [same] = client.get("/v1/operator/records", headers=op).json()
    assert same["quality"] == q
    [batch] = client.get("/v1/operator/report", headers=op).json()["batch"]
    assert batch["quality"]["pass_rate"] == 0.975 and batch["quality"]["failed"]["pos"] == 2
    # stored as JSON text, read back as an object
    raw = store.db.query("SELECT quality FROM ingestions WHERE id = ?", [rec["id"]])
    assert json.loads(raw[0]["quality"]) == q


def test_tenant_reads_its_stream_reports_with_their_quality(ingested):
    _, platform, store, _ = ingested
    for tenant in ("acme", "beta"):
        store.add_stream_report({
            "tenant": tenant, "app": "ev", "instance": "i1", "window_start": time.time() - 5,
            "window_end": time.time(), "messages": 10, "bytes": 100, "rows_loaded": 9,
            "rows_rejected": 1, "backlog": 0,
            "quality": {"rows_checked": 10, "rows_passed": 9, "rows_failed_schema": 0,
                        "failed": {"pos": 1}, "pass_rate": 0.9},
            "sinks": {"default": sink_state(commits=1, messages=10, rows=9)}})
    client = TestClient(create_app(platform, store))
    acme = {"Authorization": f"Bearer {create_key(store, 'acme')}"}
    [report] = client.get("/v1/tenants/acme/stream-reports", headers=acme).json()
    assert report["tenant"] == "acme" and report["quality"]["failed"] == {"pos": 1}
    assert report["sinks"]["default"]["state"] == "committed"
    assert client.get("/v1/tenants/acme/stream-reports?app=other", headers=acme).json() == []
    assert client.get("/v1/tenants/beta/stream-reports", headers=acme).status_code == 404
    beta = {"Authorization": f"Bearer {create_key(store, 'beta')}"}
    [theirs] = client.get("/v1/tenants/beta/stream-reports", headers=beta).json()
    assert theirs["tenant"] == "beta"
