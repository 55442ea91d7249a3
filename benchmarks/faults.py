"""Seed 004's scenario: parallel writers into PostgreSQL while 10% of the writes fail at
first, and nothing may be lost.

The failures come from PostgreSQL itself: a statement trigger on the target table draws
from a sequence (sequences are not transactional, so a retry draws anew) and raises
``serialization_failure`` (40001, a transient error) on the first write and one in ten
after it. simbdp's
``serve`` (``workers`` = writers) waits out the failed write and tries the file again; the
bare alternative is what the seed's loader ended up with: ``writers`` parallel loops of
``psql \\copy``, each retrying a failed file with back-off (base 200 ms, 8 attempts).

    python -m benchmarks.faults --dsn DSN --table T --writers N FILE...   (the bare loops)
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "flaky_copies", "seed004_bare", "seed004_serve"]


@dataclass(frozen=True)
class Outcome:
    seconds: float
    peak_mb: float
    attempts: int
    failed: int
    rows: int


def flaky_copies(conn: Any, table: str, name: str) -> None:
    """The 1st, 11th, 21st, ... write into the table fails (SQLSTATE 40001): one in ten, and
    the first always (simbdp may write a group of small files in one statement)."""
    conn.execute(f"CREATE SEQUENCE {name}_seq")
    conn.execute(f"""CREATE FUNCTION {name}_fn() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('{name}_seq') % 10 = 1 THEN
            RAISE EXCEPTION 'injected transient failure' USING ERRCODE = '40001';
          END IF;
          RETURN NULL;
        END $$""")
    conn.execute(f"CREATE TRIGGER {name}_tr BEFORE INSERT ON {table} "
                 f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_fn()")


def _attempts(conn: Any, name: str) -> int:
    row = conn.execute(f"SELECT last_value, is_called FROM {name}_seq").fetchone()
    return int(row[0]) if row and row[1] else 0


def _failed(attempts: int) -> int:
    return (attempts + 9) // 10


def _cleanup(conn: Any, name: str) -> None:
    conn.execute(f"DROP FUNCTION IF EXISTS {name}_fn() CASCADE")
    conn.execute(f"DROP SEQUENCE IF EXISTS {name}_seq")


def seed004_bare(dsn: str, files: list[Path], writers: int, table: str,
                 expect_rows: int) -> Outcome:
    import psycopg

    from benchmarks.common import run_measured
    from benchmarks.datasets import REDDIT_COLUMNS, sql_ddl

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
        c.execute(f"CREATE TABLE {table} ({sql_ddl(REDDIT_COLUMNS, pg=True)})")
        flaky_copies(c, table, table)
    try:
        _, peak, out = run_measured([sys.executable, "-m", "benchmarks.faults", "--dsn", dsn,
                                     "--table", table, "--writers", str(writers),
                                     *map(str, files)])
        secs = float(json.loads(out.strip().splitlines()[-1])["seconds"])
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
            rows = int(row[0]) if row else 0
            attempts = _attempts(c, table)
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {table}")
            _cleanup(c, table)
    if rows != expect_rows:
        raise SystemExit(f"bare seed-004 loaders lost rows: {rows} of {expect_rows}")
    return Outcome(secs, peak, attempts, _failed(attempts), rows)


def seed004_serve(home: Any, tenant: str, dsn: str, files: list[Path],
                  expect_rows: int) -> Outcome:
    """``simbdp serve`` with ``home``'s workers; the tenant's table is made by a first
    one-row file (before the clock), then made flaky."""
    import psycopg
    import pyarrow.csv as pacsv

    from benchmarks.datasets import REDDIT_COLUMNS, reddit_table
    from benchmarks.serve import Server

    home.add_tenant(tenant, "comments", REDDIT_COLUMNS, "pg")
    warm = home.root / "comments-first.csv"
    pacsv.write_csv(reddit_table(1, seed=10**6, start_id=10**9), warm)
    flaky = f"{tenant}_flaky"
    with Server(home) as server:
        server.drop_and_wait(server.stage(tenant, [warm], [warm.name]), [tenant])
        with psycopg.connect(dsn, autocommit=True) as c:
            flaky_copies(c, f"{tenant}.comments", flaky)
        try:
            secs, peak = server.drop_and_wait(
                server.stage(tenant, files, [f.name for f in files]), [tenant])
            with psycopg.connect(dsn, autocommit=True) as c:
                row = c.execute(f"SELECT count(*) FROM {tenant}.comments").fetchone()
                rows = (int(row[0]) if row else 0) - 1
                attempts = _attempts(c, flaky)
        finally:
            with psycopg.connect(dsn, autocommit=True) as c:
                _cleanup(c, flaky)
    if rows != expect_rows:
        raise SystemExit(f"simbdp lost rows under failing writes: {rows} of {expect_rows}")
    return Outcome(secs, peak, attempts, _failed(attempts), rows)


def _bare_main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--writers", type=int, required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    todo: queue.Queue[str] = queue.Queue()
    for f in args.files:
        todo.put(f)
    errors: list[str] = []

    def writer() -> None:
        while True:
            try:
                f = todo.get_nowait()
            except queue.Empty:
                return
            for attempt in range(8):
                p = subprocess.run(["psql", args.dsn, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                                    f"\\copy {args.table} FROM '{f}' WITH (FORMAT csv, HEADER)"],
                                   capture_output=True, check=False)
                if p.returncode == 0:
                    break
                time.sleep(0.2 * 2 ** attempt)
            else:
                errors.append(f)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=writer) for _ in range(args.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} files never loaded: {errors[:3]}")
    print(json.dumps({"seconds": secs}))


if __name__ == "__main__":
    _bare_main()
