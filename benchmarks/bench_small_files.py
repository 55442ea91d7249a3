"""Small files as users drop them: ``simbdp serve`` (the real CLI) beside a bare DuckDB loop.

    python -m benchmarks.bench_small_files [--files 1000] [--rows 1000] [--repeat 3]
        [--pickup 40]

- Throughput: ``--files`` CSV files of ``--rows`` rows each are renamed at once into one
  tenant's staging folder of a running ``simbdp serve`` (a subprocess with its own home in a
  temporary folder, DuckDB sink, no app), timed from the first drop to the last record's end
  (the state store is polled). Beside it, in the same run and alternated, a bare DuckDB loop
  in one process: ``INSERT INTO t SELECT * FROM read_csv(file)`` per file, each its own
  transaction. Medians of ``--repeat`` runs; the ratio is simbdp's files/s over bare's.
- Pickup: ``--pickup`` files dropped one at a time into the same running server, half renamed
  in (moved-to), half written in place (close-write); latency from the drop to the record's
  ``started_at`` (acceptance), p50 and p99.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.csv as pacsv
import yaml

from benchmarks.common import DATA, REDDIT_DDL
from simbdp.datagen import reddit_comments
from simbdp.profiles import load_platform
from simbdp.testing import tenant_profile

TENANT = "flood"


def make_files(folder: Path, files: int, rows: int) -> list[Path]:
    """``files`` CSV files of ``rows`` distinct rows each (distinct content: no duplicates)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(files):
        path = folder / f"comments-{i:05}.csv"
        pacsv.write_csv(reddit_comments(rows, seed=i, start_id=i * rows), path)
        out.append(path)
    return out


class Server:
    """``simbdp serve`` on a fresh home, as a subprocess of the real command."""

    def __init__(self, root: Path, workers: int):
        self.home = root / "home"
        (self.home / "tenants").mkdir(parents=True)
        cfg = {"workers": workers, "api": {"port": 0}}
        (self.home / "platform.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        (self.home / "tenants" / f"{TENANT}.yaml").write_text(
            yaml.safe_dump(tenant_profile(TENANT, batch={"max_files_per_day": 1_000_000})),
            encoding="utf-8")
        self.staging = load_platform(self.home).config.staging_dir(TENANT)
        cli = Path(sys.executable).with_name("simbdp")
        self.log = (root / "serve.log").open("wb")
        self.proc = subprocess.Popen([str(cli), "serve", "--home", str(self.home)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (self.staging.is_dir() and (self.home / "state.sqlite").exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"simbdp serve did not start; see {root / 'serve.log'}")
            time.sleep(0.05)
        time.sleep(1.0)  # the watcher and the workers are up
        self.db = sqlite3.connect(self.home / "state.sqlite", timeout=30)

    def ended(self, n: int, since: float, timeout: float) -> float:
        """Wait until ``n`` records started after ``since`` have ended; the last end."""
        deadline = time.monotonic() + timeout
        while True:
            done, last, bad = self.db.execute(
                "SELECT count(*), max(ended_at), sum(outcome != 'processed') FROM ingestions "
                "WHERE started_at >= ? AND ended_at IS NOT NULL", [since]).fetchone()
            if bad:
                raise SystemExit("a benchmark file was not processed: " + repr(self.db.execute(
                    "SELECT source, reason FROM ingestions WHERE outcome != 'processed'"
                ).fetchone()))
            if done >= n:
                return float(last)
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done}/{n} files done after {timeout:.0f} s")
            time.sleep(0.02)

    def accepted(self, name: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.db.execute("SELECT started_at FROM ingestions WHERE source = ? "
                                  "ORDER BY started_at DESC LIMIT 1", [name]).fetchone()
            if row:
                return float(row[0])
            time.sleep(0.002)
        raise SystemExit(f"{name} was not accepted within {timeout:.0f} s")

    def stop(self) -> None:
        self.db.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def simbdp_flood(files: list[Path], workers: int, timeout: float) -> float:
    """Seconds from the first drop to the last record of ``files`` under ``simbdp serve``."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        root = Path(tmp)
        server = Server(root, workers)
        try:
            src = root / "src"  # same filesystem as staging: each drop is one rename
            src.mkdir()
            copies = [Path(shutil.copyfile(f, src / f.name)) for f in files]
            started = time.time()
            for c in copies:
                os.rename(c, server.staging / c.name)
            return server.ended(len(files), started, timeout) - started
        finally:
            server.stop()


def bare_loop(files: list[Path]) -> float:
    """A DuckDB ``read_csv`` loop in one process, one transaction per file."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        con = duckdb.connect(str(Path(tmp) / "bare.duckdb"))
        con.execute(f"CREATE TABLE comments ({REDDIT_DDL})")
        t0 = time.perf_counter()
        for f in files:
            con.execute("INSERT INTO comments SELECT * FROM read_csv(?, header=true)", [str(f)])
        elapsed = time.perf_counter() - t0
        con.close()
        return elapsed


def pickup(n: int, workers: int, rows: int) -> dict[str, float]:
    """Drop files one at a time; latency (ms) from the drop to acceptance, p50 and p99."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        root = Path(tmp)
        server = Server(root, workers)
        lat = []
        try:
            src = root / "src"
            for i, f in enumerate(make_files(src, n, rows)):
                target = server.staging / f.name
                if i % 2:  # written in place: taken on close-write
                    data = f.read_bytes()
                    with target.open("wb") as out:
                        out.write(data)
                    dropped = time.time()
                else:  # renamed in: taken on moved-to
                    dropped = time.time()
                    os.rename(f, target)
                lat.append((server.accepted(f.name) - dropped) * 1000)
                server.ended(i + 1, 0.0, 60)
        finally:
            server.stop()
    lat.sort()
    return {"p50_ms": statistics.median(lat), "p99_ms": lat[min(len(lat) - 1,
                                                                int(len(lat) * 0.99))],
            "max_ms": lat[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pickup", type=int, default=40, help="files for pickup latency (0: skip)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        files = make_files(Path(tmp) / "files", args.files, args.rows)
        ours, bare = [], []
        for i in range(args.repeat):  # alternated, so both see the same machine
            ours.append(simbdp_flood(files, args.workers, args.timeout))
            bare.append(bare_loop(files))
            print(f"run {i + 1}: simbdp {ours[-1]:.2f} s, bare DuckDB loop {bare[-1]:.2f} s",
                  flush=True)
    o, b = statistics.median(ours), statistics.median(bare)
    n = args.files
    print(f"{n} files x {args.rows} rows, medians of {args.repeat}: simbdp serve {o:.2f} s "
          f"({o / n * 1000:.1f} ms/file, {n / o:.0f} files/s); bare DuckDB read_csv loop "
          f"{b:.2f} s ({b / n * 1000:.1f} ms/file, {n / b:.0f} files/s); simbdp = "
          f"{b / o:.0%} of bare files/s")
    if args.pickup:
        p = pickup(args.pickup, args.workers, args.rows)
        print(f"pickup over {args.pickup} files dropped one at a time (half renamed in, half "
              f"written in place): p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, "
              f"max {p['max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
