"""The Delta Lake sink beside ``deltalake.write_deltalake`` of the same Arrow data alone.

    python -m benchmarks.bench_lake [--rows 1000000] [--repeat 3] [--files 50]
    python -m benchmarks.bench_lake --stream 10000

- Throughput: one Reddit-like Arrow table of ``--rows`` rows committed through the sink (a
  transaction: the rows, the file's app transaction, then the ledger row) beside one
  ``write_deltalake(mode="append")`` of the same table into a fresh table. Alternated, medians.
- Small files: ``--files`` commits of 1,000 rows each (one per file, as the batch path makes
  them), the table's data files before and after ``DeltaSink.compact``.
- Streams (``--stream N``): N messages published through the embedded broker and consumed by
  one stream instance with ``batch_max_rows: 1``, so N micro-batches; the lake buffer commits
  them (profile ``lake`` defaults: 128 MB, 60 s capped at half the 30 s lease). The table's
  data files (``DeltaTable.file_uris()``) after the stream, and after ``simbdp lake compact``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from deltalake import DeltaTable, write_deltalake

from simbdp.coredms.base import LedgerEntry
from simbdp.coredms.compaction import compact_lake
from simbdp.coredms.delta import LEDGER_TABLE, DeltaSink
from simbdp.datagen import reddit_comments
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings
from simbdp.stream.brokers import open_broker
from simbdp.stream.client import make_messages, publish
from simbdp.stream.instance import StreamInstance
from simbdp.testing import EVENTS_TABLE, REDDIT_TABLE, make_platform, tenant_profile


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


def stream_files(messages: int) -> None:
    """Data files after ``messages`` micro-batches of one message each, and after compaction."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        tenant = {"tenant_id": "acme", "tables": [
            {**EVENTS_TABLE, "primary_key": [], "sinks": ["lake"]}],
            "apps": [{"name": "ev", "kind": "stream", "tables": ["events"],
                      "batch_max_rows": 1, "batch_max_wait_ms": 50}]}
        platform = make_platform(home, [tenant], report_interval_secs=60,
                                 sinks={"lake": {"kind": "delta", "path": str(Path(tmp) / "lake")}})
        rows = [{"id": f"e{i}", "n": i, "note": "hello"} for i in range(messages)]
        asyncio.run(publish(platform, "acme", make_messages(rows, id_field="id")))

        async def consume() -> float:
            broker, probe = open_broker(platform.config.broker), open_broker(platform.config.broker)
            stop = asyncio.Event()
            t0 = time.perf_counter()
            task = asyncio.create_task(
                StreamInstance(platform, "acme", "ev", "bench-1", broker).run(stop))
            while await probe.backlog("acme") > 0:
                await asyncio.sleep(0.2)
            stop.set()  # the last micro-batches are in the buffer: a stop commits them
            await task
            await probe.close()
            return time.perf_counter() - t0

        secs = asyncio.run(consume())
        uri = str(Path(tmp) / "lake" / "acme" / "events")
        table = DeltaTable(uri)
        files, count = len(table.file_uris()), table.to_pyarrow_dataset().count_rows()
        keys = DeltaTable(str(Path(tmp) / "lake" / "acme" / LEDGER_TABLE)).to_pyarrow_table(
            columns=["key"]).column("key").to_pylist()
        [c] = compact_lake(platform, "acme", "events")
        after = len(DeltaTable(uri).file_uris())
        print(f"{messages:,} stream micro-batches of 1 message in {secs:.1f} s "
              f"({messages / secs:,.0f}/s): {count:,} rows, {len(keys)} commits, "
              f"{files} data files; after lake compact {after} (compaction saw "
              f"{c.files_before}, {c.files_deleted} deleted)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--stream", type=int, default=0,
                    help="only: data files after this many stream micro-batches")
    args = ap.parse_args()
    if args.stream:
        stream_files(args.stream)
        return
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
