"""Quality benchmark: ten quality rules against none, on the same data, in one run.

    python -m benchmarks.bench_quality [--rows 1000000] [--repeat 3]

Two figures, each as rows/s with the rules over rows/s without them (target >= 70%):
- the quality step alone: ``conform`` (casts, required columns, rules) over the file's rows
  in chunks of the size a batch worker uses, ``unique`` looking across the chunks, per second
  of CPU time;
- a whole batch ingestion of the same generated Reddit-comments CSV into DuckDB (staging
  folder, worker, read, conform, sink, ledger), no app: per second of the wall clock, and
  per CPU second of the manager and its worker (steadier on a shared machine).
Runs with and without rules alternate so that a busy machine slows both alike; the medians
of ``--repeat`` runs and the median ratio of the back-to-back pairs are reported.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import DATA, reddit_csv
from simbdp.batch import BatchIngestManager
from simbdp.profiles.tables import TableSpec
from simbdp.quality import SeenValues, conform
from simbdp.state import StateStore
from simbdp.testing import REDDIT_TABLE, make_platform, tenant_profile

SUBREDDITS = ["python", "datascience", "aww", "news", "worldnews", "askreddit", "programming",
              "dataengineering", "funny", "science"]

#: ten rules over the Reddit table, every kind that fits its columns
RULES: list[dict[str, Any]] = [
    {"name": "id_unique", "column": "id", "check": "unique"},
    {"name": "id_short", "column": "id", "check": "min_length", "value": 2},
    {"name": "id_long", "column": "id", "check": "max_length", "value": 20},
    {"name": "sub_known", "column": "subreddit", "check": "in", "value": SUBREDDITS},
    {"name": "sub_name", "column": "subreddit", "check": "regex", "value": "^[a-z]+$"},
    {"name": "author_set", "column": "author", "check": "not_null"},
    {"name": "author_name", "column": "author", "check": "regex", "value": "^user[0-9]+$"},
    {"name": "ups_floor", "column": "ups", "check": "min", "value": -100},
    {"name": "score_cap", "column": "score", "check": "max", "value": 100_000},
    {"name": "body_long", "column": "body", "check": "max_length", "value": 2000},
]
CHUNK_BYTES = 4 * 1024 * 1024  # the worker's read chunk with the default chunk_bytes


def _table(rules: bool) -> dict[str, Any]:
    return {**REDDIT_TABLE, "quality": RULES if rules else []}


def conform_rows_per_sec(chunks: list[pa.Table], rules: bool) -> float:
    """Rows per second of CPU time (this process's): steadier than the wall clock on a
    shared machine, and conform runs in one thread."""
    spec = TableSpec.model_validate(_table(rules))
    seen = SeenValues()
    rows = 0
    t0 = time.process_time()
    for chunk in chunks:
        c = conform(chunk, spec, "bench.csv", seen=seen)
        rows += c.rows_in
        if c.rows_rejected:
            raise RuntimeError(f"the benchmark data should pass every rule: {c.rule_failures}")
    return rows / (time.process_time() - t0)


def _cpu_secs() -> float:
    """CPU seconds of this process and of its children reaped so far (the workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def ingest_rows_per_sec(src: Path, rules: bool) -> tuple[float, float]:
    """Rows per second of the wall clock, and per CPU second of the manager and its worker
    (every thread, DuckDB's too: what the ingestion cost, whatever else the machine ran)."""
    tenant = f"t{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        platform = make_platform(Path(tmp) / "home",
                                 [tenant_profile(tenant, table=_table(rules))], workers=1)
        store = StateStore.open(platform.config)
        manager = BatchIngestManager(platform, store)
        try:
            staged = platform.config.staging_dir(tenant) / "comments.csv"
            shutil.copyfile(src, staged)  # before the clock starts
            cpu0, t0 = _cpu_secs(), time.perf_counter()
            [sub] = manager.submit(tenant, [staged])
            manager.run_until_idle(timeout_secs=3600)
            secs = time.perf_counter() - t0
        finally:
            manager.close()  # the worker exits and is reaped: its CPU time is counted
        cpu = _cpu_secs() - cpu0
        rec = store.record(sub.record_id)
        if rec is None or rec["outcome"] != "processed" or rec["rows_rejected"]:
            raise RuntimeError(f"the benchmark file did not load whole: {rec}")
        return float(rec["rows_loaded"]) / secs, float(rec["rows_loaded"]) / cpu


def _chunks(src: Path) -> list[pa.Table]:
    """The file read as the worker reads it (every column as text), in its chunk size."""
    opts = pacsv.ConvertOptions(column_types={c["name"]: pa.string()
                                              for c in REDDIT_TABLE["columns"]})
    data = pacsv.read_csv(src, convert_options=opts)
    per_chunk = max(1, int(data.num_rows * CHUNK_BYTES / max(1, data.nbytes)))
    return [data.slice(i, per_chunk) for i in range(0, data.num_rows, per_chunk)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    DATA.mkdir(exist_ok=True)
    src = reddit_csv(args.rows)
    chunks = _chunks(src)
    print(f"{args.rows:,} rows, {src.stat().st_size / 2**20:.0f} MiB CSV, {len(chunks)} chunks, "
          f"{len(RULES)} rules")
    results: dict[str, dict[bool, list[float]]] = {
        k: {False: [], True: []} for k in ("conform", "ingest", "ingest_cpu")}
    for _ in range(args.repeat):
        for rules in (False, True):
            results["conform"][rules].append(conform_rows_per_sec(chunks, rules))
        for rules in (False, True):
            wall, cpu = ingest_rows_per_sec(src, rules)
            results["ingest"][rules].append(wall)
            results["ingest_cpu"][rules].append(cpu)
        print("  run: " + ", ".join(f"{what} {'ten rules' if r else 'no rules'} "
                                    f"{v[r][-1]:,.0f} rows/s" for what, v in results.items()
                                    for r in (False, True)), flush=True)
    for what, label in (("conform", "quality step alone (conform, CPU time)"),
                        ("ingest", "whole batch ingestion into DuckDB (wall clock)"),
                        ("ingest_cpu", "whole batch ingestion into DuckDB (CPU time)")):
        none = statistics.median(results[what][False])
        ten = statistics.median(results[what][True])
        # runs with and without rules back to back: their ratio is the steadier figure
        pairs = statistics.median(t / n for n, t in zip(results[what][False],
                                                         results[what][True], strict=True))
        print(f"{label}: no rules {none:,.0f} rows/s, ten rules {ten:,.0f} rows/s (medians); "
              f"ten rules / none, median of {args.repeat} back-to-back pairs: {pairs:.0%} "
              "(target >= 70%)")

if __name__ == "__main__":
    main()
