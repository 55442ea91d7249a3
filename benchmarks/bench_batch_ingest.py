"""Batch ingestion benchmark: simbdp's whole path beside the bare engines, in one run.

    python -m benchmarks.bench_batch_ingest [--rows 1000000] [--big-gb 2] [--repeat 3]
        [--pg DSN]

Measures, on a generated Reddit-comments CSV:
- DuckDB: ``INSERT INTO t SELECT * FROM read_csv(...)`` (bare) vs simbdp (staging folder,
  watcher, identity app, cast, ledger), unkeyed and keyed on (subreddit, id);
- PostgreSQL: ``psql \\copy`` (bare) vs simbdp into the PostgreSQL sink;
- a per-row INSERT loader (the seeds' way) on a sample, as a ratio;
- peak RSS of the manager and its workers on a big file (``--big-gb``, 0 to skip);
- two tenants at once vs one tenant doing the same total work.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import psycopg

from benchmarks.common import REDDIT_DDL, peak_rss, reddit_csv, timed
from simbdp.batch import BatchIngestManager
from simbdp.datagen import write_reddit_csv
from simbdp.state import StateStore
from simbdp.testing import REDDIT_TABLE, make_platform, tenant_profile

IDENTITY_APP = "def identity(data, ctx):\n    return data\n"


def _profile(tenant: str, keyed: bool, sink: str = "default", app: bool = True) -> dict:
    table = {**REDDIT_TABLE, "sinks": [sink]}
    if keyed:
        table["primary_key"] = ["subreddit", "id"]
    apps = [{"name": "identity", "entrypoint": "identity:identity", "tables": ["comments"],
             "memory_mb": 2048, "timeout_secs": 600}] if app else []
    return tenant_profile(tenant, tables=[table], apps=apps)


def simbdp_run(files: dict[str, list[Path]], *, keyed: bool, sink: dict | None = None,
               workers: int = 2) -> tuple[float, dict]:
    # a fresh namespace per run, so runs on a shared PostgreSQL never see each other's ledger
    run = uuid.uuid4().hex[:6]
    files = {f"{t}_{run}": paths for t, paths in files.items()}
    """Drop files into staging folders, serve until all are done; (seconds, peak memory)."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "data") as tmp:
        sinks = {"bench": sink} if sink else {}
        sink_name = "bench" if sink else "default"
        tenants = [_profile(t, keyed, sink_name) for t in files]
        platform = make_platform(Path(tmp) / "home", tenants, sinks=sinks, workers=workers,
                                 stable_secs=0.0, rescan_secs=0.2,
                                 apps={t: {"identity.py": IDENTITY_APP} for t in files})
        store = StateStore.open(platform.config)
        manager = BatchIngestManager(platform, store)
        for tenant, paths in files.items():
            for p in paths:
                # a copy, before the clock starts (a hard link would be rejected: a staged
                # file must have no other name)
                shutil.copyfile(p, platform.config.staging_dir(tenant) / p.name)
        stop = threading.Event()
        with peak_rss() as mem:
            started = time.time()
            manager.serve(stop, idle_exit=True)
        records = store.records()
        bad = [r for r in records if r["outcome"] != "processed"]
        if bad:
            raise SystemExit(f"benchmark ingestion failed: {bad[0]['reason']}")
        # from the manager's start until the last file is committed, moved and recorded; the
        # manager's own shutdown afterwards (its watcher can take 0.5 s to stop) is not counted
        return max(r["ended_at"] for r in records) - started, mem


def duckdb_bare(csv: Path, keyed: bool) -> float:
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "data") as tmp:
        con = duckdb.connect(str(Path(tmp) / "bare.duckdb"))
        pk = ", PRIMARY KEY (subreddit, id)" if keyed else ""
        con.execute(f"CREATE TABLE t ({REDDIT_DDL}{pk})")
        secs = timed(lambda: con.execute(f"INSERT INTO t SELECT * FROM read_csv('{csv}')"))
        con.close()
        return secs


def psql_copy(csv: Path, dsn: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS bench_copy")
        c.execute(f"CREATE TABLE bench_copy ({REDDIT_DDL.replace('VARCHAR', 'text')})")
    secs = timed(lambda: subprocess.run(
        ["psql", dsn, "-q", "-c", f"\\copy bench_copy FROM '{csv}' WITH (FORMAT csv, HEADER)"],
        check=True))
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE bench_copy")
    return secs


def per_row_insert(csv: Path, dsn: str, *, autocommit: bool, rows: int = 20_000) -> float:
    """Rows/s of the seeds' loader: one INSERT per row from Python's csv module; each row its
    own transaction (``autocommit``, as each write of the seeds' Cassandra and MongoDB loaders
    stood alone) or one commit at the end."""
    import csv as csvmod

    with psycopg.connect(dsn, autocommit=autocommit) as c, open(csv, newline="") as f:
        c.execute("DROP TABLE IF EXISTS bench_rows")
        c.execute(f"CREATE TABLE bench_rows ({REDDIT_DDL.replace('VARCHAR', 'text')})")
        reader = csvmod.reader(f)
        next(reader)
        t0 = time.perf_counter()
        for i, row in enumerate(reader):
            if i >= rows:
                break
            c.execute("INSERT INTO bench_rows VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
        c.commit()
        secs = time.perf_counter() - t0
        c.execute("DROP TABLE bench_rows")
        c.commit()
    return rows / secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each pair (bare, simbdp), alternated; medians are shown")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    Path(__file__).parent.joinpath("data").mkdir(exist_ok=True)
    csv = reddit_csv(args.rows)
    mb = csv.stat().st_size / 1e6
    n = args.rows

    if args.big_gb > 0:  # first, while the manager (this process) holds nothing else
        rows = int(args.big_gb * 1e9 / (mb * 1e6 / n))
        big = reddit_csv(rows)
        secs, mem = simbdp_run({"acme": [big]}, keyed=False)
        def split(d: dict[str, float]) -> str:
            return ", ".join(f"{k} {v:.0f}" for k, v in sorted(d.items()))

        print(f"{big.stat().st_size / 1e9:.2f} GB file ({rows:,} rows): {secs:.1f} s, "
              f"peak memory (PSS) of manager + workers {mem['peak_mb']:.0f} MB "
              f"({split(mem['at_peak'])}) (target < 600 MB); peak of the RSS sum "
              f"{mem['peak_rss_mb']:.0f} MB ({split(mem['rss_at_peak'])})\n")

    print(f"# batch benchmark: {n:,} rows, {mb:.0f} MB CSV, median of {args.repeat} runs\n")
    print("| what | seconds (runs) | rows/s | vs bare |")
    print("| --- | ---: | ---: | ---: |")

    def pair(label: str, bare: Callable[[], float] | None, ours: Callable[[], float],
             bare_label: str) -> float:
        """Alternate bare and simbdp runs; print both medians; simbdp's median seconds."""
        b_runs, o_runs = [], []
        for _ in range(args.repeat):
            if bare is not None:
                b_runs.append(bare())
            o_runs.append(ours())
        b = statistics.median(b_runs) if b_runs else None
        if b is not None:
            _row(bare_label, b, b_runs, None)
        o = statistics.median(o_runs)
        _row(label, o, o_runs, b)
        return o

    def _row(name: str, secs: float, runs: list[float], bare: float | None) -> None:
        ratio = f"{bare / secs:.0%}" if bare else "-"
        shown = " / ".join(f"{r:.2f}" for r in runs)
        print(f"| {name} | {secs:.2f} ({shown}) | {n / secs:,.0f} | {ratio} |", flush=True)

    pg = {"kind": "postgres", "dsn": args.pg}
    for keyed in (False, True):
        label = "keyed (subreddit, id)" if keyed else "unkeyed"
        pair(f"simbdp -> DuckDB, {label}", lambda k=keyed: duckdb_bare(csv, k),
             lambda k=keyed: simbdp_run({"acme": [csv]}, keyed=k)[0],
             f"DuckDB read_csv, {label} (bare)")
    ours = pair("simbdp -> PostgreSQL, unkeyed", lambda: psql_copy(csv, args.pg),
                lambda: simbdp_run({"acme": [csv]}, keyed=False, sink=pg)[0],
                "psql \\copy (bare)")
    pair("simbdp -> PostgreSQL, keyed (subreddit, id)", None,
         lambda: simbdp_run({"acme": [csv]}, keyed=True, sink=pg)[0], "")
    print()
    for autocommit, how in ((True, "a transaction per row"), (False, "one transaction")):
        rps = per_row_insert(csv, args.pg, autocommit=autocommit)
        print(f"per-row INSERT loader, {how}: {rps:,.0f} rows/s; simbdp -> PostgreSQL is "
              f"{n / ours / rps:.0f}x faster")

    half = reddit_csv(n // 2)
    second = half.with_name(f"reddit-{n // 2}-b.csv")
    if not second.exists():
        write_reddit_csv(second, n // 2, seed=1)
    ones, twos = [], []
    for _ in range(args.repeat):
        ones.append(simbdp_run({"acme": [half, second]}, keyed=False)[0])
        twos.append(simbdp_run({"acme": [half], "beta": [second]}, keyed=False)[0])
    one, two = statistics.median(ones), statistics.median(twos)
    print(f"\none tenant, 2 files of {n // 2:,} rows: {one:.2f} s; two tenants, one file each "
          f"at once: {two:.2f} s; ratio {two / one:.2f} (target <= 1.2)")
    shutil.rmtree(Path(__file__).parent / "data" / "tmp", ignore_errors=True)


if __name__ == "__main__":
    main()
