"""The cost of metrics on the hot path: batch throughput with ``/metrics`` scraped vs not.

    python -m benchmarks.bench_metrics_overhead [--files 200] [--rows 5000] [--repeat 3]
        [--interval 1.0]

simbdp keeps no counters on the hot path: ``/metrics`` is computed from the records when it
is scraped. So "metrics on" means what a deployment does: a scraper calling ``GET /metrics``
every ``--interval`` seconds while files flow. Each run is a fresh ``simbdp serve`` (a
subprocess, DuckDB sink, no app); ``--files`` CSV files of ``--rows`` rows are renamed into
the staging folder at once and timed from the drop to the last record. Runs alternate off/on;
medians compared (target: on >= 97% of off's files/s). The CPU seconds of each ``serve``
process (workers included) are compared too: on a shared machine they move much less than
the wall clock.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.csv as pacsv

from benchmarks.common import DATA
from simbdp.datagen import reddit_comments
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.testing import free_port, make_platform, tenant_profile


def _scrape(url: str, key: str, interval: float, stop: threading.Event, got: list[float]
            ) -> None:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
            got.append(time.perf_counter() - t0)
        except OSError:
            pass  # not listening yet
        stop.wait(max(0.0, interval - (time.perf_counter() - t0)))


def run(files: list[Path], scrape_every: float | None) -> tuple[float, list[float], float]:
    """Seconds from the drop to the last record; the seconds of each scrape answered
    meanwhile; CPU seconds of the whole ``serve`` process (its workers included), start to
    exit."""
    cpu0 = _children_cpu()
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        root, port = Path(tmp), free_port()
        profile = tenant_profile("acme", batch={"max_files_per_day": 1_000_000,
                                                "max_bytes_per_day": "1TB"})
        platform = make_platform(root / "home", [profile], api={"port": port})
        store = StateStore.open(platform.config)
        key = create_key(store, OPERATOR)
        store.close()
        cli = Path(sys.executable).with_name("simbdp")
        with (root / "serve.log").open("wb") as log:
            proc = subprocess.Popen([str(cli), "serve", "--home", str(root / "home")],
                                    stdout=log, stderr=subprocess.STDOUT)
        stop, got = threading.Event(), []
        try:
            health = f"http://127.0.0.1:{port}/v1/health"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(health, timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"simbdp serve did not start; see {root}/serve.log"
                                         ) from None
                    time.sleep(0.1)
            scraper = threading.Thread(target=_scrape, args=(
                f"http://127.0.0.1:{port}/metrics", key, scrape_every, stop, got), daemon=True)
            src = root / "src"
            src.mkdir()
            copies = [Path(shutil.copyfile(f, src / f.name)) for f in files]
            staging = platform.config.staging_dir("acme")
            if scrape_every is not None:
                scraper.start()
            started = time.time()
            for c in copies:
                os.rename(c, staging / c.name)
            db = sqlite3.connect(root / "home" / "state.sqlite", timeout=30)
            while True:
                done, last = db.execute(
                    "SELECT count(*), max(ended_at) FROM ingestions WHERE outcome = 'processed'"
                ).fetchone()
                if done >= len(files):
                    break
                time.sleep(0.02)
            db.close()
            secs = float(last) - started
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        return secs, got, _children_cpu() - cpu0


def _children_cpu() -> float:
    """CPU seconds of this process's children that have exited (and of theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        files = []
        for i in range(args.files):
            path = Path(tmp) / f"comments-{i:05}.csv"
            pacsv.write_csv(reddit_comments(args.rows, seed=i, start_id=i * args.rows), path)
            files.append(path)
        off, on, scrapes, cpu_off, cpu_on = [], [], [], [], []
        for i in range(args.repeat):
            secs, _, cpu = run(files, None)
            off.append(secs)
            cpu_off.append(cpu)
            secs, got, cpu = run(files, args.interval)
            on.append(secs)
            cpu_on.append(cpu)
            scrapes.extend(got)
            print(f"run {i + 1}: metrics off {off[-1]:.2f} s ({cpu_off[-1]:.1f} CPU s), "
                  f"scraped every {args.interval:g} s {on[-1]:.2f} s ({cpu_on[-1]:.1f} CPU s; "
                  f"{len(got)} scrapes, median "
                  f"{statistics.median(got) * 1000 if got else 0:.1f} ms)", flush=True)
    o, s = statistics.median(off), statistics.median(on)
    pairs = sorted(a / b for a, b in zip(off, on, strict=True))
    co, cs = statistics.median(cpu_off), statistics.median(cpu_on)
    cpu_pairs = sorted(a / b for a, b in zip(cpu_off, cpu_on, strict=True))
    print(f"{args.files} files x {args.rows} rows, medians of {args.repeat}: off {o:.2f} s, "
          f"scraped {s:.2f} s: throughput with metrics = {o / s:.0%} of without; per "
          f"alternated pair {', '.join(f'{p:.0%}' for p in pairs)} (median "
          f"{statistics.median(pairs):.0%}; target >= 97%)")
    print(f"CPU seconds of serve (start to exit), medians: off {co:.1f}, scraped {cs:.1f}: "
          f"files per CPU second with metrics = {co / cs:.1%} of without; per pair "
          f"{', '.join(f'{p:.1%}' for p in cpu_pairs)} (median "
          f"{statistics.median(cpu_pairs):.1%})")
    print(f"a scrape took {statistics.median(scrapes or [0]) * 1000:.1f} ms (median of "
          f"{len(scrapes)}, max {max(scrapes, default=0) * 1000:.1f} ms)")

if __name__ == "__main__":
    main()
