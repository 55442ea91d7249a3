"""The Delta Lake sink beside ``deltalake.write_deltalake`` of the same Arrow data alone.

    python -m benchmarks.bench_lake [--rows 1000000] [--repeat 3] [--files 50]

- Throughput: one Reddit-like Arrow table of ``--rows`` rows committed through the sink (a
  transaction: the rows, the file's app transaction, then the ledger row) beside one
  ``write_deltalake(mode="append")`` of the same table into a fresh table. Alternated, medians.
- Small files: ``--files`` commits of 1,000 rows each (one per file, as the batch path makes
  them), the table's data files before and after ``DeltaSink.compact``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from deltalake import write_deltalake

from simbdp.coredms.base import LedgerEntry
from simbdp.coredms.delta import DeltaSink
from simbdp.datagen import reddit_comments
from simbdp.profiles.models import SinkSettings, TenantProfile
from simbdp.testing import REDDIT_TABLE, tenant_profile


def _profile() -> TenantProfile:
    return TenantProfile.model_validate(
        tenant_profile("lake", tables=[{**REDDIT_TABLE, "sinks": ["lake"]}]))


def sink_commit(root: Path, data, key: str) -> float:  # type: ignore[no-untyped-def]
    sink, profile = DeltaSink(SinkSettings(kind="delta", path=root)), _profile()
    sink.ensure_tables(profile)
    t0 = time.perf_counter()
    txn = sink.begin(profile)
    txn.write(profile.table("comments"), data)
    txn.commit(LedgerEntry(tenant="lake", key=key, source="bench.csv", ingestion_id=key,
                           rows=data.num_rows))
    return time.perf_counter() - t0


def bare_write(root: Path, data) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    write_deltalake(str(root / "bare"), data, mode="append")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", type=int, default=50)
    args = ap.parse_args()
    profile = _profile()
    data = reddit_comments(args.rows).cast(profile.table("comments").arrow_schema())
    ours, bare = [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ours.append(sink_commit(Path(a), data, f"sha256:{i}"))
            bare.append(bare_write(Path(b), data))
        print(f"run {i + 1}: simbdp delta sink {ours[-1]:.2f} s, write_deltalake "
              f"{bare[-1]:.2f} s", flush=True)
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"{args.rows:,} rows, medians of {args.repeat}: sink {args.rows / o:,.0f} rows/s, "
          f"write_deltalake {args.rows / b:,.0f} rows/s: sink = {b / o:.0%} of bare "
          "(target >= 70%)")
    with tempfile.TemporaryDirectory() as tmp:
        sink = DeltaSink(SinkSettings(kind="delta", path=Path(tmp)))
        sink.ensure_tables(profile)
        small = data.slice(0, 1000)
        for i in range(args.files):
            txn = sink.begin(profile)
            txn.write(profile.table("comments"), small)
            txn.commit(LedgerEntry(tenant="lake", key=f"sha256:f{i}", source=f"f{i}.csv",
                                   ingestion_id=f"f{i}", rows=1000))
        c = sink.compact(profile, "comments")
        print(f"{args.files} files of 1,000 rows: {c.files_before} data files, "
              f"{c.files_after} after compaction, {sink.count_rows(profile, 'comments'):,} rows")


if __name__ == "__main__":
    main()
