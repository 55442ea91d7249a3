"""What users would run instead of simbdp, each in a process of its own (so its memory is
measured like simbdp's): DuckDB's own readers, ``psql \\copy`` and a dlt pipeline.

    python -m benchmarks.engines duckdb --db PATH --shape reddit FILE...
    python -m benchmarks.engines dlt --dest duckdb|postgres --target PATH|DSN --dataset NAME
        --shape reddit FILE...

Both print one JSON line: ``{"seconds": ..., "rows": ...}``, the seconds of the load itself
(for dlt: ``pipeline.run``; ``process_seconds`` adds its imports and start). The callers in
this package (:func:`duckdb_load`, :func:`psql_copy`, :func:`dlt_load`) return
(seconds, peak PSS MB).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.common import DATA, run_measured
from benchmarks.datasets import EVENT_COLUMNS, FLIGHTS_COLUMNS, REDDIT_COLUMNS, sql_ddl

__all__ = ["SHAPES", "dlt_load", "duckdb_load", "psql_copy"]

SHAPES: dict[str, list[tuple[str, str, str, bool]]] = {
    "reddit": REDDIT_COLUMNS, "flights": FLIGHTS_COLUMNS, "events": EVENT_COLUMNS}
_T0 = time.perf_counter()


def _duckdb_read(shape: str) -> str:
    cols = SHAPES[shape]
    types = "{" + ", ".join(f"'{n}': '{s}'" for n, _, s, _ in cols) + "}"
    if shape == "events":
        return f"read_json(?, format='newline_delimited', columns={types})"
    null = ", nullstr=['NA', '']" if shape == "flights" else ""
    return f"read_csv(?, header=true, quote='\"', escape='\"', columns={types}{null})"


def _duckdb_main(args: argparse.Namespace) -> dict[str, Any]:
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(args.db)
    con.execute(f"CREATE TABLE t ({sql_ddl(SHAPES[args.shape])})")
    read = _duckdb_read(args.shape)
    for f in args.files:  # one transaction per file, as each file stands alone
        con.execute(f"INSERT INTO t SELECT * FROM {read}", [f])
    con.close()
    secs = time.perf_counter() - t0
    rows = duckdb.connect(args.db, read_only=True).execute("SELECT count(*) FROM t").fetchone()
    return {"seconds": secs, "rows": rows[0] if rows else 0}


def _arrow_batches(shape: str, files: list[str]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    types = {n: {"int": pa.int64(), "text": pa.string(), "timestamp": pa.timestamp("us")}[t]
             for n, t, _, _ in SHAPES[shape]}
    for f in files:
        if shape == "events":
            yield pajson.read_json(f, parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema(types.items())))
            continue
        conv = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                    null_values=["NA", ""] if shape == "flights" else [""])
        parse = pacsv.ParseOptions(newlines_in_values=True)
        with pacsv.open_csv(f, parse_options=parse, convert_options=conv) as reader:
            for batch in reader:
                yield pa.Table.from_batches([batch])


def _dlt_main(args: argparse.Namespace) -> dict[str, Any]:
    import dlt

    if args.dest == "duckdb":
        dest: Any = dlt.destinations.duckdb(args.target)
    else:  # dlt insists on a password; a server trusting local users ignores it
        url = urlsplit(args.target)
        if url.password is None and url.username:
            url = url._replace(netloc=f"{url.username}:unused@{url.hostname}:{url.port or 5432}")
        dest = dlt.destinations.postgres(urlunsplit(url))
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        pipe = dlt.pipeline(pipeline_name=args.dataset, destination=dest,
                            dataset_name=args.dataset, pipelines_dir=tmp, progress=None)
        res = dlt.resource(_arrow_batches(args.shape, args.files), name="t",
                           write_disposition="append")
        t0 = time.perf_counter()
        # csv (COPY) into PostgreSQL: dlt's fastest loader for Arrow data there; DuckDB
        # takes dlt's default (parquet)
        fmt = "csv" if args.dest == "postgres" else None
        info = pipe.run(res, loader_file_format=fmt)
        secs = time.perf_counter() - t0
        with pipe.sql_client() as c:
            rows = c.execute_sql("SELECT count(*) FROM t")[0][0]
    return {"seconds": secs, "rows": rows, "process_seconds": time.perf_counter() - _T0,
            "target": args.target, "loads": len(info.loads_ids)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="engine", required=True)
    d = sub.add_parser("duckdb")
    d.add_argument("--db", required=True)
    g = sub.add_parser("dlt")
    g.add_argument("--dest", choices=["duckdb", "postgres"], required=True)
    g.add_argument("--target", required=True)
    g.add_argument("--dataset", required=True)
    for p in (d, g):
        p.add_argument("--shape", choices=sorted(SHAPES), required=True)
        p.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    out = _duckdb_main(args) if args.engine == "duckdb" else _dlt_main(args)
    print(json.dumps(out), flush=True)


def _python_engine(argv: list[str]) -> tuple[float, float, dict[str, Any]]:
    secs, peak, out = run_measured([sys.executable, "-m", "benchmarks.engines", *argv])
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_seconds"] = secs
    return float(res["seconds"]), peak, res


def duckdb_load(files: list[Path], shape: str, expect_rows: int) -> tuple[float, float]:
    """DuckDB's own reader into a fresh database, one ``INSERT ... SELECT`` per file."""
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        secs, peak, res = _python_engine(["duckdb", "--db", str(Path(tmp) / "bare.duckdb"),
                                          "--shape", shape, *map(str, files)])
    _check_rows("DuckDB", res["rows"], expect_rows)
    return secs, peak


def dlt_load(files: list[Path], shape: str, dest: str, target: str, dataset: str,
             expect_rows: int) -> tuple[float, float, float]:
    """A dlt pipeline of Arrow batches; (pipeline.run seconds, peak MB, process seconds)."""
    secs, peak, res = _python_engine(["dlt", "--dest", dest, "--target", target, "--dataset",
                                      dataset, "--shape", shape, *map(str, files)])
    _check_rows(f"dlt ({res})", res["rows"], expect_rows)
    return secs, peak, float(res["wall_seconds"])


def psql_copy(files: list[Path], shape: str, dsn: str, table: str,
              expect_rows: int) -> tuple[float, float]:
    """``psql -f`` of one ``\\copy`` per file (each its own transaction) into a fresh table;
    the whole psql process is timed."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
        c.execute(f"CREATE TABLE {table} ({sql_ddl(SHAPES[shape], pg=True)})")
    null = " NULL 'NA'," if shape == "flights" else ""
    with tempfile.NamedTemporaryFile("w", dir=DATA, suffix=".sql") as script:
        for f in files:
            script.write(f"\\copy {table} FROM '{f}' WITH (FORMAT csv,{null} HEADER)\n")
        script.flush()
        secs, peak, _ = run_measured(["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1", "-f",
                                      script.name])
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
        c.execute(f"DROP TABLE {table}")
    _check_rows("psql", row[0] if row else 0, expect_rows)
    return secs, peak


def _check_rows(who: str, got: int, want: int) -> None:
    if got != want:
        raise SystemExit(f"{who} loaded {got} rows, expected {want}")


if __name__ == "__main__":
    main()
