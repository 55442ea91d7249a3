"""``/dashboard`` time to first paint with 1,000,000 ingestion records in the state store.

    python -m benchmarks.bench_dashboard [--tenants 10] [--records 1000000] [--loads 3]
        [--state-dsn postgresql://...]

The records (and 20,000 stream reports) are spread over the last 24 hours as in
``bench_metrics``. A real API (uvicorn, as ``simbdp serve`` runs it) serves the page; headless
Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) opens ``/dashboard`` as the
operator (every tenant's panel), the key already in session storage. First paint is the page's
own mark: the first answer of ``/v1/dashboard`` rendered, plots drawn, one animation frame later
(``window.simbdpFirstPaint``, ms since navigation start). The data endpoint alone is timed too.
The state store is SQLite, or the (empty) PostgreSQL database ``--state-dsn`` names
(``VACUUM ANALYZE``d after the fill, as autovacuum would).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.bench_metrics import _fill
from simbdp.api.app import serve_api
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.testing import free_port, make_platform, stream_tenant, wait_port

CHROMIUM = "/usr/bin/chromium"





def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--state-dsn", default=None, help="an empty PostgreSQL database")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tenants = [f"t{i:03d}" for i in range(args.tenants)]
        port = free_port()
        extra = {"state_dsn": args.state_dsn} if args.state_dsn else {}
        platform = make_platform(Path(tmp) / "home", [stream_tenant(t) for t in tenants],
                                 api={"port": port, "requests_per_minute": 100_000}, **extra)
        store = StateStore.open(platform.config)
        t0 = time.perf_counter()
        _fill(store, tenants, args.records, 20_000)
        if store.db.dialect == "postgres":
            # what autovacuum does after a bulk insert (PostgreSQL 13+): planner statistics
            # (without, even the old queries scan the whole table) and the visibility map
            # (index-only scans then skip the table)
            for table in ("ingestions", "stream_reports", "decisions"):
                store.db.execute(f"VACUUM ANALYZE {table}")
        print(f"filled {args.records:,} records for {args.tenants} tenants in "
              f"{time.perf_counter() - t0:.1f} s")
        key = create_key(store, OPERATOR)
        stop = threading.Event()
        server = threading.Thread(target=serve_api, args=(platform, stop), daemon=True)
        server.start()
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        print(f"{'window':>8} {'in window':>10} {'data endpoint ms':>17} "
              f"{'first paint ms':>15} {'wall ms':>8}")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for window in (900, 86_400):
                since = time.time() - window
                n = store.db.query("SELECT COUNT(*) AS n FROM ingestions WHERE started_at >= ?",
                                   [since])[0]["n"]
                api: list[float] = []
                for _ in range(args.loads):
                    a = time.perf_counter()
                    r = httpx.get(f"{url}/v1/dashboard", params={"window_secs": window},
                                  headers={"Authorization": f"Bearer {key}"}, timeout=120)
                    r.raise_for_status()
                    api.append((time.perf_counter() - a) * 1000)
                paint: list[float] = []
                wall: list[float] = []
                for _ in range(args.loads):
                    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                    ctx.add_init_script(f"sessionStorage.setItem('simbdp.apiKey', '{key}')")
                    page = ctx.new_page()
                    a = time.perf_counter()
                    page.goto(f"{url}/dashboard?window={window}")
                    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                    wall.append((time.perf_counter() - a) * 1000)
                    paint.append(float(page.evaluate("window.simbdpFirstPaint")))
                    ctx.close()
                print(f"{window:>8} {n:>10,} {statistics.median(api):>17.0f} "
                      f"{statistics.median(paint):>15.0f} {statistics.median(wall):>8.0f}")
            browser.close()
        stop.set()
        server.join(30)
        store.close()


if __name__ == "__main__":
    main()
