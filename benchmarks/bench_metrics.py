"""``/metrics`` scrape time: 100 tenants, 1,000,000 ingestion records in the state store.

    python -m benchmarks.bench_metrics [--tenants 100] [--records 1000000] [--scrapes 10]

Each scrape is ``GET /metrics`` with the operator key through the FastAPI app (in-process
client): authentication, the store collector's SQL, and the text exposition. The records are
spread over the last 24 hours, so about 1,400 of them ended within the collector's settle time
(read afresh by every scrape); the rest are folded into its running totals by the first
scrape. Scrapes are spaced by more than ``REUSE_SECS`` so that each one recomputes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from simbdp.api.app import create_app
from simbdp.observe.metrics import REUSE_SECS
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.state.store import today
from simbdp.testing import make_platform, stream_tenant

OUTCOMES = ["processed"] * 90 + ["rejected"] * 6 + ["failed"] * 3 + ["duplicate"]


def _fill(store: StateStore, tenants: list[str], records: int, reports: int) -> None:
    rnd, now = random.Random(1), time.time()
    sql = ("INSERT INTO ingestions (id, tenant, kind, source, app, bytes, rows_loaded, "
           "rows_rejected, started_at, ended_at, outcome) VALUES (?, ?, 'batch', ?, ?, ?, ?, ?, "
           "?, ?, ?)")
    for start in range(0, records, 50_000):
        rows = []
        for i in range(start, min(records, start + 50_000)):
            t0 = now - rnd.random() * 86_400
            rows.append((uuid.uuid4().hex, tenants[i % len(tenants)], f"f{i}.csv",
                         None if i % 3 else "clean", rnd.randrange(10**6), rnd.randrange(10**4),
                         rnd.randrange(10), t0, t0 + rnd.expovariate(1.0), rnd.choice(OUTCOMES)))
        with store.db.transaction():
            store.db.executemany(sql, rows)
    rep = []
    for i in range(reports):
        end = now - rnd.random() * 86_400
        rep.append((uuid.uuid4().hex, tenants[i % len(tenants)], "ev", f"i{i % 4}", end - 5, end,
                    500, 50_000, 495, 5, 20.0, 80.0, rnd.randrange(1000)))
    with store.db.transaction():
        store.db.executemany(
            "INSERT INTO stream_reports (id, tenant, app, instance, window_start, window_end, "
            "messages, bytes, rows_loaded, rows_rejected, latency_mean_ms, latency_p99_ms, "
            "backlog) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rep)
    for t in tenants:
        store.set_desired(t, "ev", 2)
        store.add_decision(t, "ev", "scale_up", "backlog", 1, 2)
        store.reserve_files(t, today(), 10, 10_000, 10**6, 10**12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--reports", type=int, default=100_000)
    ap.add_argument("--scrapes", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tenants = [f"t{i:03d}" for i in range(args.tenants)]
        platform = make_platform(Path(d), [stream_tenant(t) for t in tenants])
        store = StateStore.open(platform.config)
        t0 = time.perf_counter()
        _fill(store, tenants, args.records, args.reports)
        print(f"filled {args.records:,} records and {args.reports:,} stream reports "
              f"in {time.perf_counter() - t0:.1f} s")
        client = TestClient(create_app(platform, store))
        h = {"Authorization": f"Bearer {create_key(store, OPERATOR)}"}
        times, size = [], 0
        t0 = time.perf_counter()
        r = client.get("/metrics", headers=h)
        r.raise_for_status()
        first = time.perf_counter() - t0
        for _ in range(args.scrapes):
            time.sleep(REUSE_SECS + 0.1)
            t0 = time.perf_counter()
            r = client.get("/metrics", headers=h)
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            size = len(r.content)
        print(f"/metrics: {size / 1024:.0f} KiB, {len(r.text.splitlines()):,} lines; first "
              f"scrape (folds every settled record) {first:.3f} s; then median "
              f"{statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
              f"({args.scrapes} scrapes)")

if __name__ == "__main__":
    main()
