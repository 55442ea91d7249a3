"""The benchmark suite: every scenario as users run simbdp, beside what they would use instead.

    python -m benchmarks.suite [--quick] [--only NAME ...] [--pg DSN] [--out PATH]

``simbdp serve`` runs as a subprocess, timed from the files' drop into a tenant's staging
folder to the last record (the state store polled); ``simbdp ingest`` is timed as the whole
process. Beside them, in the same run and alternated: DuckDB's own reader into a fresh
database, ``psql \\copy`` and a dlt pipeline on the same files. Each figure is the median of
``repeat`` runs; the peak PSS of each process tree is sampled. Results go to one JSON file
under ``benchmarks/results/`` (records of :class:`benchmarks.common.Record`), which
``python -m benchmarks.render`` turns into docs/benchmarks.md.

Scenarios (``--only``): ``whole`` (a big Reddit-like CSV and the 19-column flights shape),
``memory`` (a 2 GB file, full mode only), ``flood`` (small files, pickup), ``seed000``
(100,000 events of 100 pairs as 1, 10 and 1,000 files), ``tenants`` (seeds 001-003's file
sizes for 1, 2 and 10 tenants at once),
``seed004`` (1, 2 and 4 writers into PostgreSQL, 10% of writes failing at first),
``stream`` (``benchmarks/bench_stream_ingest.py --json``, when it has that option).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import DATA, Record, machine_info, record
from benchmarks.datasets import (
    EVENT_COLUMNS,
    FLIGHTS_COLUMNS,
    REDDIT_COLUMNS,
    event_files,
    flights_csv,
    reddit_csv,
    reddit_files,
)
from benchmarks.engines import dlt_load, duckdb_load, psql_copy
from benchmarks.faults import seed004_bare, seed004_serve
from benchmarks.serve import Home, Server, ingest_cli

RESULTS = Path(__file__).parent / "results"
PG = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Sizes:
    repeat: int
    reddit_rows: int
    flights_rows: int
    flood_files: int
    flood_rows: int
    one_row_files: int
    pickup: int
    events: int
    event_files: tuple[int, ...]
    # seeds 001-003: (label, rows per file, files per tenant)
    seed_files: tuple[tuple[str, int, int], ...]
    tenants: tuple[int, ...]
    seed004_files: int
    seed004_rows: int
    seed004_repeat: int
    big_gb: float = 0.0


# a varied Reddit row is ~195 bytes: 500 rows ~ seed 003's 98 KB files, 22,000 ~ seed 001's
# 4.3 MB, 256,000 ~ seed 002's 50 MB limit
FULL = Sizes(repeat=3, reddit_rows=1_000_000, flights_rows=336_776, flood_files=1000,
             flood_rows=1000, one_row_files=10_000, pickup=40, events=100_000,
             event_files=(1, 10, 1000),
             seed_files=(("98 KB", 500, 5), ("4.3 MB", 22_000, 5), ("50 MB", 256_000, 1)),
             tenants=(1, 2, 10), seed004_files=40, seed004_rows=25_000, seed004_repeat=3,
             big_gb=2.0)
QUICK = Sizes(repeat=3, reddit_rows=100_000, flights_rows=50_000, flood_files=60,
              flood_rows=1000, one_row_files=100, pickup=10, events=5_000,
              event_files=(1, 10, 50),
              seed_files=(("98 KB", 500, 2), ("4.3 MB", 22_000, 1)),
              tenants=(1, 2, 10), seed004_files=20, seed004_rows=2_500, seed004_repeat=1)


class Run:
    """One run of the suite: sizes, the PostgreSQL DSN, a unique id for names, the records."""

    def __init__(self, sizes: Sizes, pg: str, tmp: Path):
        self.sizes, self.pg, self.tmp = sizes, pg, tmp
        self.id = uuid.uuid4().hex[:6]
        self.records: list[Record] = []
        self.schemas: list[str] = []

    def tenant(self, name: str) -> str:
        t = f"b{self.id}_{name}"
        self.schemas.append(t)
        return t

    def home(self, name: str, workers: int = 2) -> Home:
        return Home(self.tmp / name, workers=workers, pg_dsn=self.pg)

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def add(self, rec: Record) -> None:
        self.records.append(rec)
        vs = f", {rec['vs_bare']:.0%} of bare" if rec["vs_bare"] is not None else ""
        self.log(f"  {rec['scenario']} | {rec['what']} | {rec['engine']}: {rec['seconds']:.3f} s"
                 f" ({rec['rate']:,.0f} {rec['unit']}{vs})")


# whole files ------------------------------------------------------------------------------
def whole(run: Run) -> None:
    s = run.sizes
    shapes = [("reddit", f"Reddit-like comments, {s.reddit_rows:,} rows",
               reddit_csv(s.reddit_rows), s.reddit_rows, "comments", REDDIT_COLUMNS, None),
              ("flights", f"flights (19 columns, NULLs), {s.flights_rows:,} rows",
               flights_csv(s.flights_rows), s.flights_rows, "flights", FLIGHTS_COLUMNS,
               ["", "NA"])]
    for shape, scenario, csv, rows, table, cols, nulls in shapes:
        mb = csv.stat().st_size / 1e6
        run.log(f"{scenario} ({mb:.0f} MB)")
        serve_home, cli_home = run.home(f"{shape}-serve"), run.home(f"{shape}-cli")
        names = {}
        for i in range(s.repeat):
            for sink in ("default", "pg"):
                for h, kind in ((serve_home, "s"), (cli_home, "c")):
                    t = run.tenant(f"{shape[0]}{kind}{sink[0]}{i}")
                    names[kind, sink, i] = t
                    h.add_tenant(t, table, cols, sink, nulls)
        # the CLI copies the file in under its own name: it must start with the table's
        cli_file = run.tmp / f"{table}-{shape}.csv"
        cli_file.hardlink_to(csv)
        times: dict[tuple[str, str], list[float]] = {}
        mem: dict[tuple[str, str], list[float]] = {}

        def note(key: tuple[str, str], secs: float, peak: float,
                 times: dict[tuple[str, str], list[float]] = times,
                 mem: dict[tuple[str, str], list[float]] = mem) -> None:
            times.setdefault(key, []).append(secs)
            mem.setdefault(key, []).append(peak)

        with Server(serve_home) as server:
            for i in range(s.repeat):  # alternated: every engine sees the same machine
                note(("duckdb", "bare"), *duckdb_load([csv], shape, rows))
                t = names["s", "default", i]
                note(("duckdb", "serve"), *server.drop_and_wait(
                    server.stage(t, [csv], [f"{table}-{i}.csv"]), [t]))
                note(("duckdb", "ingest"), *ingest_cli(cli_home, names["c", "default", i],
                                                      [cli_file]))
                with tempfile.TemporaryDirectory(dir=DATA) as d:
                    secs, peak, whole_secs = dlt_load([csv], shape, "duckdb",
                                                      str(Path(d) / "dlt.duckdb"),
                                                      f"{shape}_{i}", rows)
                note(("duckdb", "dlt"), secs, peak)
                note(("duckdb", "dlt-process"), whole_secs, peak)
                note(("pg", "bare"), *psql_copy([csv], shape, run.pg, f"b{run.id}_copy", rows))
                t = names["s", "pg", i]
                note(("pg", "serve"), *server.drop_and_wait(
                    server.stage(t, [csv], [f"{table}-{i}.csv"]), [t]))
                note(("pg", "ingest"), *ingest_cli(cli_home, names["c", "pg", i], [cli_file]))
                dataset = f"b{run.id}_dlt_{shape}{i}"
                run.schemas.append(dataset)
                secs, peak, whole_secs = dlt_load([csv], shape, "postgres", run.pg, dataset,
                                                  rows)
                note(("pg", "dlt"), secs, peak)
                note(("pg", "dlt-process"), whole_secs, peak)
                run.log(f"  round {i + 1}: " + ", ".join(
                    f"{k[0]}/{k[1]} {v[-1]:.2f}" for k, v in times.items()))
        for sink, what, bare_name in (("duckdb", "-> DuckDB", "DuckDB read_csv (bare)"),
                                      ("pg", "-> PostgreSQL", "psql \\copy (bare)")):
            bare = times[sink, "bare"]
            labels = {"bare": bare_name, "serve": "simbdp serve", "ingest": "simbdp ingest",
                      "dlt": "dlt", "dlt-process": "dlt, whole process"}
            notes = {"ingest": "the whole process", "dlt": "pipeline.run() only",
                     "dlt-process": "imports and start included, as for simbdp ingest"}
            for eng, label in labels.items():
                run.add(record(f"whole:{scenario}, {mb:.0f} MB", what, label,
                               times[sink, eng], rows, "rows/s",
                               None if eng == "bare" else bare, mem[sink, eng],
                               note=notes.get(eng, "")))


# memory on a big file ----------------------------------------------------------------------
def memory(run: Run) -> None:
    """One big file (``big_gb``) under ``serve`` into DuckDB, beside DuckDB's own reader: the
    peak PSS of each process tree (quick mode: skipped)."""
    if not run.sizes.big_gb:
        run.log("memory: skipped (big_gb 0)")
        return
    rows = int(run.sizes.big_gb * 1e9 / 195)
    csv = reddit_csv(rows)
    gb = csv.stat().st_size / 1e9
    run.log(f"memory: {gb:.2f} GB file, {rows:,} rows")
    home = run.home("memory")
    t = run.tenant("big")
    home.add_tenant(t, "comments", REDDIT_COLUMNS)
    b = duckdb_load([csv], "reddit", rows)
    with Server(home) as server:
        o = server.drop_and_wait(server.stage(t, [csv], ["comments-big.csv"]), [t])
    what = f"{gb:.2f} GB file ({rows:,} rows) -> DuckDB"
    run.add(record("memory", what, "DuckDB read_csv (bare)", [b[0]], rows, "rows/s", None,
                   [b[1]]))
    run.add(record("memory", what, "simbdp serve", [o[0]], rows, "rows/s", [b[0]], [o[1]],
                   note="peak PSS of serve and its workers and apps; target < 600 MB"))


# small files -------------------------------------------------------------------------------
def flood(run: Run) -> None:
    s = run.sizes
    floods = [(f"{s.flood_files:,} files x {s.flood_rows:,} rows", s.flood_files, s.flood_rows,
               True),
              (f"{s.one_row_files:,} one-row files", s.one_row_files, 1, False)]
    home = run.home("flood")
    plan = []
    for label, n, rows, with_pg in floods:
        files = reddit_files(DATA / f"flood-{n}x{rows}", n, rows)
        sinks = ("default", "pg") if with_pg else ("default",)
        tenants = {(sink, i): run.tenant(f"f{rows}{sink[0]}{i}") for sink in sinks
                   for i in range(s.repeat)}
        for (sink, _), t in tenants.items():
            home.add_tenant(t, "comments", REDDIT_COLUMNS, sink)
        plan.append((label, files, rows, sinks, tenants))
    pick = run.tenant("pickup")
    home.add_tenant(pick, "comments", REDDIT_COLUMNS)
    with Server(home) as server:
        for label, files, rows, sinks, tenants in plan:
            run.log(f"small files: {label}")
            n = len(files)
            names = [f.name for f in files]
            for sink in sinks:
                bare, ours, bmem, omem = [], [], [], []
                for i in range(s.repeat):
                    if sink == "pg":
                        b = psql_copy(files, "reddit", run.pg, f"b{run.id}_flood", n * rows)
                    else:
                        b = duckdb_load(files, "reddit", n * rows)
                    bare.append(b[0])
                    bmem.append(b[1])
                    t = tenants[sink, i]
                    o = server.drop_and_wait(server.stage(t, files, names), [t])
                    ours.append(o[0])
                    omem.append(o[1])
                what = f"{label} -> {'PostgreSQL' if sink == 'pg' else 'DuckDB'}"
                bare_name = ("psql -f, one \\copy per file (bare)" if sink == "pg"
                             else "DuckDB read_csv loop (bare)")
                run.add(record("flood", what, bare_name, bare, n, "files/s", None, bmem))
                run.add(record("flood", what, "simbdp serve", ours, n, "files/s", bare, omem))
        run.log(f"pickup: {s.pickup} files dropped one at a time")
        lat = pickup(server, pick, s.pickup)
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        for q, v in (("p50", p50), ("p99", p99)):
            rec = record("pickup", f"drop -> accepted, {q}", "simbdp serve", [v], 1, "ms", None)
            rec["rate"] = round(v * 1000, 2)
            rec["note"] = (f"{len(lat)} files, one at a time, half renamed in, half written "
                           f"in place; max {max(lat) * 1000:.1f} ms")
            run.add(rec)


def pickup(server: Server, tenant: str, n: int) -> list[float]:
    """Latencies (s) from a file's drop to its acceptance, files dropped one at a time."""
    files = reddit_files(DATA / "pickup", n, 100, prefix="comments")
    staging = server.home.staging(tenant)
    lat = []
    for i, f in enumerate(files):
        target = staging / f.name
        if i % 2:  # written in place: taken on close-write
            data = f.read_bytes()
            with target.open("wb") as out:
                out.write(data)
            dropped = time.time()
        else:  # renamed in: taken on moved-to
            (src,) = server.stage(tenant, [f], [f.name])
            dropped = time.time()
            src[0].rename(target)
        lat.append(server.accepted(tenant, f.name) - dropped)
        server.wait(i + 1, [tenant], 0.0, 60)
    return sorted(lat)


# seed 000 ----------------------------------------------------------------------------------
def seed000(run: Run) -> None:
    s = run.sizes
    home = run.home("seed000")
    tenants = {(k, i): run.tenant(f"e{k}_{i}") for k in s.event_files for i in range(s.repeat)}
    for t in tenants.values():
        home.add_tenant(t, "events", EVENT_COLUMNS)
    with Server(home) as server:
        for k in s.event_files:
            files = event_files(s.events, k)
            mb = sum(f.stat().st_size for f in files) / 1e6
            run.log(f"seed 000: {s.events:,} events as {k} file(s), {mb:.0f} MB")
            bare, ours, bmem, omem = [], [], [], []
            for i in range(s.repeat):
                b = duckdb_load(files, "events", s.events)
                bare.append(b[0])
                bmem.append(b[1])
                t = tenants[k, i]
                o = server.drop_and_wait(server.stage(t, files, [f.name for f in files]), [t])
                ours.append(o[0])
                omem.append(o[1])
            what = f"{s.events:,} events x 100 pairs as {k:,} file(s), {mb:.0f} MB"
            run.add(record("seed000", what, "DuckDB read_json loop (bare)", bare, s.events,
                           "events/s", None, bmem))
            run.add(record("seed000", what, "simbdp serve", ours, s.events, "events/s", bare,
                           omem))


# seeds 001-003: tenants at once -----------------------------------------------------------
def tenants_at_once(run: Run) -> None:
    s = run.sizes
    top = max(s.tenants)
    home = run.home("tenants")
    ids = {(label, n, j): run.tenant(f"t{rows}_{n}_{j}") for label, rows, _ in s.seed_files
           for n in s.tenants for j in range(n)}
    for t in ids.values():
        home.add_tenant(t, "comments", REDDIT_COLUMNS)
    with Server(home) as server:
        for label, rows, per in s.seed_files:
            files = reddit_files(DATA / f"seedfiles-{rows}", per * top, rows)
            mb_file = files[0].stat().st_size / 1e6
            for n in s.tenants:
                run.log(f"seeds 001-003: {n} tenant(s) x {per} file(s) of {label}")
                drops, ts = [], []
                every = files[:n * per]  # each tenant its own files
                for j in range(n):
                    mine = every[j * per:(j + 1) * per]
                    t = ids[label, n, j]
                    ts.append(t)
                    drops += server.stage(t, mine, [f.name for f in mine])
                # interleave the tenants' drops, as tenants working at once would
                drops = [d for k in range(per) for d in drops[k::per]]
                b = duckdb_load(every, "reddit", len(every) * rows)
                o = server.drop_and_wait(drops, ts)
                total_mb = mb_file * len(every)
                what = f"{label} files: {n} tenant(s) x {per} at once"
                run.add(record("tenants", what, "DuckDB read_csv loop (bare)", [b[0]], total_mb,
                               "MB/s", None, [b[1]]))
                run.add(record("tenants", what, "simbdp serve", [o[0]], total_mb, "MB/s",
                               [b[0]], [o[1]]))


# seed 004 -----------------------------------------------------------------------------------
def seed004(run: Run) -> None:
    s = run.sizes
    files = reddit_files(DATA / f"seed004-{s.seed004_rows}", s.seed004_files, s.seed004_rows)
    total = s.seed004_files * s.seed004_rows
    for writers in (1, 2, 4):
        run.log(f"seed 004: {writers} writer(s), {s.seed004_files} files, 10% of writes fail")
        bare, ours, bmem, omem, bnotes, onotes = [], [], [], [], [], []
        for i in range(s.seed004_repeat):
            b = seed004_bare(run.pg, files, writers, f"b{run.id}_w{writers}_{i}", total)
            bare.append(b.seconds)
            bmem.append(b.peak_mb)
            bnotes.append(f"{b.failed} of {b.attempts} writes failed and were retried")
            home = run.home(f"seed004-{writers}-{i}", workers=writers)
            t = run.tenant(f"w{writers}_{i}")
            o = seed004_serve(home, t, run.pg, files, total)
            ours.append(o.seconds)
            omem.append(o.peak_mb)
            onotes.append(f"{o.failed} of {o.attempts} writes failed and were retried")
        what = f"{writers} writer(s), {s.seed004_files} files x {s.seed004_rows:,} rows"
        lost = f"; {total:,} rows counted, none lost"
        run.add(record("seed004", what, "psql \\copy + retry (bare)", bare, total, "rows/s",
                       None, bmem, note=" / ".join(dict.fromkeys(bnotes)) + lost))
        run.add(record("seed004", what, "simbdp serve", ours, total, "rows/s", bare, omem,
                       note=" / ".join(dict.fromkeys(onotes)) + lost))


# stream --------------------------------------------------------------------------------------
def stream(run: Run, quick: bool) -> list[dict[str, Any]]:
    """The stream benchmark's own records, if it has ``--json`` (run as a subprocess)."""
    mod = [sys.executable, "-m", "benchmarks.bench_stream_ingest"]
    helptext = subprocess.run([*mod, "--help"], capture_output=True, text=True, check=False)
    if "--json" not in helptext.stdout:
        run.log("stream: bench_stream_ingest has no --json option yet; skipped")
        return []
    out = run.tmp / "stream.json"
    cmd = [*mod, *(["--quick"] if quick and "--quick" in helptext.stdout else []),
           "--json", str(out)]
    run.log("stream: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True)
    data = json.loads(out.read_text(encoding="utf-8"))
    return list(data if isinstance(data, list) else data.get("results", []))


def _drop_schemas(run: Run) -> None:
    import psycopg

    try:
        with psycopg.connect(run.pg, autocommit=True) as c:
            for name in run.schemas:
                c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            c.execute(f"DROP TABLE IF EXISTS b{run.id}_copy, b{run.id}_flood")
    except psycopg.Error as e:
        print(f"could not drop the benchmark's schemas: {e}", file=sys.stderr)


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "whole": whole, "memory": memory, "flood": flood, "seed000": seed000,
    "tenants": tenants_at_once, "seed004": seed004}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (a few minutes)")
    ap.add_argument("--only", nargs="+", choices=[*SCENARIOS, "stream"])
    ap.add_argument("--pg", default=PG, help="PostgreSQL DSN (default %(default)s)")
    ap.add_argument("--sizes", help="JSON object overriding sizes, e.g. '{\"repeat\": 1}'")
    ap.add_argument("--out", type=Path, help="result file (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.sizes:  # for trying the suite out on smaller data
        sizes = replace(sizes, **{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                  if isinstance(v, list) else v
                                  for k, v in json.loads(args.sizes).items()})
    DATA.mkdir(exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"kind": "simbdp-benchmarks", "mode": "quick" if args.quick else "full",
                           "started": started.isoformat(timespec="seconds"),
                           "machine": machine_info(), "sizes": asdict(sizes)}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        run = Run(sizes, args.pg, Path(tmp))
        try:
            for name, fn in SCENARIOS.items():
                if not args.only or name in args.only:
                    fn(run)
            stream_records = (stream(run, args.quick) if not args.only or "stream" in args.only
                              else [])
        finally:
            _drop_schemas(run)
    doc["results"] = run.records
    doc["stream"] = stream_records
    doc["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = args.out or RESULTS / f"{started:%Y%m%dT%H%M%SZ}-{doc['mode']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results: {out} ({doc['wall_seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
