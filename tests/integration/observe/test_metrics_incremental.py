"""``/metrics`` keeps running totals of settled records: the figures stay those of the records,
a scrape reads only the records that ended since the watermark, and a late stream report is
still counted (SQLite and PostgreSQL state stores)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from simbdp.observe.metrics import StoreCollector
from simbdp.state import StateStore
from simbdp.testing import make_platform, stream_tenant, tenant_profile

SETTLE = 60.0


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _samples(collector: StoreCollector) -> dict[tuple[str, frozenset], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if f.name not in ("simbdp_stream_instances_running",)}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def setup(request: Any, tmp_path: Path) -> Any:
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    extra = {"state_dsn": dsn} if dsn else {}
    platform = make_platform(tmp_path / "home", [tenant_profile("acme"), stream_tenant("beta")],
                             **extra)
    store = StateStore.open(platform.config)
    yield platform, store
    store.close()


def _file(store: StateStore, rid: str, tenant: str, outcome: str, ended: float, secs: float,
          loaded: int, app: str | None = None) -> None:
    store.db.execute(
        "INSERT INTO ingestions (id, tenant, kind, source, app, bytes, rows_loaded, "
        "rows_rejected, started_at, ended_at, outcome) VALUES (?, ?, 'batch', ?, ?, ?, ?, ?, "
        "?, ?, ?)", [rid, tenant, f"{rid}.csv", app, 10 * loaded, loaded, loaded % 3,
                     ended - secs, ended, outcome])


def _report(store: StateStore, end: float, messages: int, backlog: int) -> None:
    store.add_stream_report({
        "tenant": "beta", "app": "ev", "instance": "i1", "window_start": end - 1,
        "window_end": end, "messages": messages, "bytes": messages * 10,
        "rows_loaded": messages - 1, "rows_rejected": 1, "latency_mean_ms": 20.0,
        "latency_p99_ms": 50.0, "backlog": backlog})


def test_running_totals_stay_equal_to_the_records(setup):
    platform, store = setup
    t0 = time.time()
    clock = Clock(t0)
    # records ended long ago (folded on the first scrape) and just now (read afresh)
    for i in range(30):
        _file(store, f"old{i}", "acme", ["processed", "rejected", "failed"][i % 3],
              t0 - 3600 + i, [0.05, 0.4, 3.0, 20.0, 4000.0][i % 5], 100 + i,
              app="clean" if i % 2 else None)
        _report(store, t0 - 3600 + i, 50 + i, i)
    for i in range(5):
        _file(store, f"new{i}", "acme", "processed", t0 - 5 + i, 0.3, 7)
    _report(store, t0 - 2, 9, 4)
    kept = StoreCollector(platform, store, settle_secs=SETTLE, reuse_secs=0, clock=clock)
    first = _samples(kept)
    assert first == _samples(StoreCollector(platform, store, settle_secs=0, reuse_secs=0))
    key = ("simbdp_batch_files_total",
           frozenset({"tenant": "acme", "app": "", "outcome": "processed"}.items()))
    assert first[key] == 5 + 5  # old0, 6, 12, 18, 24 (no app) and the five new ones

    # time passes: the new records settle too; more arrive, and a report filed late for a
    # window that was folded long ago (a monitor catching up)
    clock.now = t0 + 2 * SETTLE
    for i in range(4):
        _file(store, f"later{i}", "acme", "processed", clock.now - 1, 1.5, 3)
    _report(store, t0 - 7200, 1000, 77)
    _report(store, clock.now - 1, 5, 6)
    second = _samples(kept)
    assert second == _samples(StoreCollector(platform, store, settle_secs=0, reuse_secs=0))
    assert second[key] == 5 + 5 + 4
    msgs = ("simbdp_stream_messages_total", frozenset({"tenant": "beta", "app": "ev"}.items()))
    assert second[msgs] == sum(50 + i for i in range(30)) + 9 + 1000 + 5
    backlog = ("simbdp_stream_backlog", frozenset({"tenant": "beta", "app": "ev"}.items()))
    assert second[backlog] == 6  # the latest window's, not the late one's


def test_settled_records_are_not_read_again(setup):
    """Records that ended before the watermark are in the running totals: a scrape reads
    only what ended after it (finished records never change; changing one here shows it)."""
    platform, store = setup
    now = time.time()
    _file(store, "settled", "acme", "processed", now - 3600, 1.0, 100)
    _file(store, "recent", "acme", "processed", now - 1, 1.0, 10)
    kept = StoreCollector(platform, store, settle_secs=SETTLE, reuse_secs=0)
    loaded = ("simbdp_rows_loaded_total",
              frozenset({"tenant": "acme", "app": "", "path": "batch"}.items()))
    assert _samples(kept)[loaded] == 110
    store.db.execute("UPDATE ingestions SET rows_loaded = rows_loaded + 1000")
    assert _samples(kept)[loaded] == 100 + 1010
    assert _samples(StoreCollector(platform, store, reuse_secs=0))[loaded] == 1100 + 1010


def test_a_scrape_soon_after_another_answers_the_same_figures(setup):
    platform, store = setup
    clock = Clock(time.time())
    kept = StoreCollector(platform, store, reuse_secs=0.5, clock=clock)
    _file(store, "a", "acme", "processed", clock.now - 1, 1.0, 10)
    files = ("simbdp_batch_files_total",
             frozenset({"tenant": "acme", "app": "", "outcome": "processed"}.items()))
    assert _samples(kept)[files] == 1
    _file(store, "b", "acme", "processed", clock.now - 1, 1.0, 10)
    clock.now += 0.4
    assert _samples(kept)[files] == 1
    clock.now += 0.2
    assert _samples(kept)[files] == 2
