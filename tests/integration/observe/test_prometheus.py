"""A real Prometheus scrapes ``/metrics`` of a live API; the shipped alert rules pass promtool."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from simbdp.api.app import serve_api
from simbdp.batch import BatchIngestManager
from simbdp.datagen import reddit_comments
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.stream.brokers import open_broker
from simbdp.stream.client import make_messages, publish
from simbdp.stream.consumer import StreamInstance
from simbdp.stream.monitor import StreamMonitor
from simbdp.testing import (
    REDDIT_TABLE,
    drop,
    free_port,
    make_platform,
    missing,
    stream_tenant,
    tenant_profile,
    wait_port,
)

DEPLOY = Path(__file__).parents[3] / "deploy" / "prometheus"


def need(binary: str) -> str:
    """The path of a Prometheus binary; skip without it (fail in CI)."""
    path = shutil.which(binary)
    if path is None:
        missing(f"{binary} is not installed (Debian package prometheus)")
    return path


def csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts_test.yml"]])
def test_promtool_accepts_the_rules_and_each_alert_fires(args):
    r = subprocess.run([need("promtool"), *args], cwd=DEPLOY, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr





def _profile(tenant: str) -> dict[str, Any]:
    """Batch (comments, straight to the table) and a stream app ``ev`` (events)."""
    p = stream_tenant(tenant)
    p["tables"] = [REDDIT_TABLE, *p["tables"]]
    p["batch"] = tenant_profile(tenant)["batch"]
    return p


def _ingest_batch(platform: Platform, store: StateStore, files: dict[str, dict[str, bytes]]
                  ) -> None:
    manager = BatchIngestManager(platform, store)
    for tenant, named in files.items():
        staged = [drop(platform.config.staging_dir(tenant) / n, b) for n, b in named.items()]
        manager.submit(tenant, staged)
    manager.run_until_idle(timeout_secs=120)


def _ingest_stream(platform: Platform, store: StateStore, messages: dict[str, list]) -> None:
    """Publish, consume with one real instance per tenant, and file its reports."""
    async def go() -> list[dict[str, Any]]:
        for tenant, rows in messages.items():
            await publish(platform, tenant, make_messages(rows, id_field="id"))
        stop = asyncio.Event()
        brokers = [open_broker(platform.config.broker) for _ in messages]
        tasks = [asyncio.create_task(StreamInstance(platform, t, "ev", f"{t}-1", b).run(stop))
                 for t, b in zip(messages, brokers, strict=True)]
        probe = open_broker(platform.config.broker)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                [await probe.backlog(t) for t in messages]):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a report window after the last commit
        stop.set()
        await asyncio.gather(*tasks)
        reports = await probe.fetch_reports(10_000, 0.5)
        await probe.close()
        return reports
    StreamMonitor(platform, store).ingest_reports(asyncio.run(go()))


def _ready(prom: str) -> bool:
    try:
        with urllib.request.urlopen(f"{prom}/-/ready", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):  # 503 while it starts
        return False


def _query(prom: str, promql: str) -> dict[str, float]:
    """An instant PromQL query through Prometheus's HTTP API: {tenant: value}."""
    url = f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise AssertionError(f"{promql}: {body}")
    return {s["metric"].get("tenant", ""): float(s["value"][1]) for s in body["data"]["result"]}


def test_prometheus_scrapes_figures_that_equal_the_records(tmp_path):
    prometheus = need("prometheus")
    api_port, prom_port = free_port(), free_port()
    platform = make_platform(tmp_path / "home", [_profile("acme"), _profile("beta")],
                             broker={"kind": "embedded", "lease_secs": 2},
                             report_interval_secs=0.5, api={"port": api_port})
    store = StateStore.open(platform.config)
    op_key = create_key(store, OPERATOR)
    _ingest_batch(platform, store, {
        "acme": {"comments_a1.csv": csv_bytes(reddit_comments(120, seed=1, start_id=0)),
                 "comments_a2.csv": csv_bytes(reddit_comments(80, seed=2, start_id=1000)),
                 "notes.xml": b"<x/>"},
        "beta": {"comments_b1.csv": csv_bytes(reddit_comments(55, seed=3, start_id=0))}})
    _ingest_stream(platform, store, {
        "acme": [{"id": f"e{i}", "n": i, "note": "hi"} for i in range(150)],
        "beta": [{"id": f"e{i}", "n": i, "note": "hi"} for i in range(70)]
        + [{"id": "bad", "n": "lots", "note": "x"}]})

    stop = threading.Event()
    server = threading.Thread(target=serve_api, args=(platform, stop), daemon=True)
    server.start()
    wait_port(api_port)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: simbdp\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{api_port}']}}]\n"
        f"    authorization: {{type: Bearer, credentials: '{op_key}'}}\n")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))  # noqa: SIM115
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        wait_port(prom_port)
        deadline = time.monotonic() + 60
        while not _ready(prom):  # its HTTP port opens before it answers queries (503)
            if time.monotonic() > deadline:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-3000:])
            time.sleep(0.2)
        while _query(prom, 'up{job="simbdp"}') != {"": 1.0}:
            if time.monotonic() > deadline:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-3000:])
            time.sleep(0.5)
        _check_sums(prom, store)
    finally:
        proc.terminate()
        proc.wait(30)
        stop.set()
        server.join(30)


def _check_sums(prom: str, store: StateStore) -> None:
    def db(sql: str) -> dict[str, float]:
        return {r["tenant"]: float(r["v"]) for r in store.db.query(sql)}

    batch_loaded = db("SELECT tenant, SUM(rows_loaded) AS v FROM ingestions GROUP BY tenant")
    stream_loaded = db("SELECT tenant, SUM(rows_loaded) AS v FROM stream_reports "
                       "GROUP BY tenant")
    assert batch_loaded == {"acme": 200, "beta": 55}
    assert stream_loaded == {"acme": 150, "beta": 70}
    assert _query(prom, "sum by (tenant) (simbdp_rows_loaded_total)") == {
        t: batch_loaded[t] + stream_loaded[t] for t in ("acme", "beta")}
    assert _query(prom, 'sum by (tenant) (simbdp_batch_files_total{outcome="processed"})') \
        == db("SELECT tenant, COUNT(*) AS v FROM ingestions WHERE outcome = 'processed' "
              "GROUP BY tenant") == {"acme": 2, "beta": 1}
    assert _query(prom, 'sum by (tenant) (simbdp_batch_files_total{outcome="rejected"})') \
        == {"acme": 1}
    assert _query(prom, "sum by (tenant) (simbdp_batch_bytes_total)") == db(
        "SELECT tenant, SUM(bytes) AS v FROM ingestions GROUP BY tenant")
    assert _query(prom, "sum by (tenant) (simbdp_stream_messages_total)") == {
        "acme": 150, "beta": 71}
    assert _query(prom, "sum by (tenant) (simbdp_stream_dead_letters_total)") == {
        "acme": 0, "beta": 1}
    assert _query(prom, "sum by (tenant) (simbdp_batch_file_seconds_count)") == {
        "acme": 2, "beta": 1}
    assert _query(prom, "sum by (tenant) (simbdp_stream_latency_seconds_count)") == {
        "acme": 150, "beta": 70}
    assert _query(prom, 'simbdp_quota_used{quota="messages"}') == db(
        "SELECT tenant, messages AS v FROM quota_usage")
    assert _query(prom, 'simbdp_quota_used{quota="files"}') == db(
        "SELECT tenant, files AS v FROM quota_usage")
    assert _query(prom, "sum by (tenant) (simbdp_stream_backlog)") == {"acme": 0, "beta": 0}
