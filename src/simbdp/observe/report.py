"""Reports read from the ingestion records: per tenant, batch and stream."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simbdp.quality import QualityStats
from simbdp.state import StateStore
from simbdp.units import mib

__all__ = ["BatchSummary", "StreamSummary", "batch_summary", "describe_sink", "queue_secs",
           "stream_summary", "unconfined_runs", "work_secs"]


@dataclass
class BatchSummary:
    tenant: str
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    duplicate: int = 0
    waiting: int = 0
    bytes: int = 0
    #: bytes read after decompression (the file's size where nothing was compressed)
    decompressed_bytes: int = 0
    rows_loaded: int = 0
    #: of the rows loaded, those that replaced a row with the same key (upserts)
    rows_updated: int = 0
    rows_rejected: int = 0
    #: accepted -> done (queue wait included), mean and p95 over processed files
    mean_secs: float = 0.0
    p95_secs: float = 0.0
    #: read + app + write time, mean over processed files
    work_mean_secs: float = 0.0
    #: accepted -> taken by a worker, mean: see :func:`queue_secs`
    queue_mean_secs: float = 0.0
    #: MiB read (decompressed) per second of read + app + write time
    mib_per_sec: float = 0.0
    #: quality, summed over the files (those rejected for their pass rate too)
    quality: QualityStats = field(default_factory=QualityStats)


def work_secs(record: dict[str, Any]) -> float:
    """Time a record spent reading, in the app and writing. The stages overlap (they run in
    threads, a chunk or two apart), so this sum is at least the worker's busy time."""
    return float(record["read_secs"] + record["app_secs"] + record["write_secs"])


def queue_secs(record: dict[str, Any]) -> float:
    """Accepted -> taken by a worker: the wait in the tenant's queue (measured; records of
    releases before ``work_started_at`` give accepted -> done minus the work instead)."""
    if record.get("work_started_at") is not None:
        return max(0.0, record["work_started_at"] - record["started_at"])
    total = (record["ended_at"] or record["started_at"]) - record["started_at"]
    return max(0.0, total - work_secs(record))


@dataclass
class StreamSummary:
    tenant: str
    app: str
    messages: int = 0
    bytes: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    latency_mean_ms: float = 0.0
    latency_p99_ms: float = 0.0
    instances_max: int = 0
    scale_ups: int = 0
    scale_downs: int = 0
    #: quality, summed over the micro-batches (those dead-lettered for their pass rate too)
    quality: QualityStats = field(default_factory=QualityStats)


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def batch_summary(store: StateStore, tenant: str | None = None,
                  since: float | None = None) -> list[BatchSummary]:
    """Files accepted / rejected / failed / waiting (for a sink), bytes (as sent and as read),
    rows, time (accepted -> done, at work, queued), MiB/s (of the bytes read, per
    second at work) per tenant."""
    recs = store.records(tenant, kind="batch", since=since, limit=10_000_000)
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by[r["tenant"]].append(r)
    out = []
    for t in sorted(by):
        s = BatchSummary(tenant=t)
        secs: list[float] = []
        work: list[float] = []
        queued: list[float] = []
        for r in by[t]:
            o = r["outcome"]
            if o == "processed":
                s.accepted += 1
                s.bytes += r["bytes"]
                s.decompressed_bytes += r.get("decompressed_bytes") or r["bytes"]
                secs.append((r["ended_at"] or r["started_at"]) - r["started_at"])
                work.append(work_secs(r))
                queued.append(queue_secs(r))
            elif o == "rejected":
                s.rejected += 1
            elif o == "failed":
                s.failed += 1
            elif o == "duplicate":
                s.duplicate += 1
            elif o == "waiting":
                s.waiting += 1
            s.rows_loaded += r["rows_loaded"]
            s.rows_updated += r.get("rows_updated") or 0
            s.rows_rejected += r["rows_rejected"]
            if r.get("quality"):
                s.quality.add(QualityStats.from_dict(r["quality"]))
        if secs:
            s.mean_secs = statistics.fmean(secs)
            s.p95_secs = _p(secs, 95)
            s.work_mean_secs = statistics.fmean(work)
            s.queue_mean_secs = statistics.fmean(queued)
            busy = sum(work)
            s.mib_per_sec = mib(s.decompressed_bytes) / busy if busy > 0 else 0.0
        out.append(s)
    return out


def stream_summary(store: StateStore, tenant: str | None = None,
                   since: float | None = None) -> list[StreamSummary]:
    """Messages, MB, rows, latency and instances over time per tenant and stream app."""
    reports = store.stream_reports(tenant, since=since, limit=10_000_000)
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in reports:
        by[(r["tenant"], r["app"])].append(r)
    decisions = store.decisions(tenant, since=since, limit=1_000_000)
    out = []
    for (t, a), rs in sorted(by.items()):
        s = StreamSummary(tenant=t, app=a)
        s.messages = sum(r["messages"] for r in rs)
        s.bytes = sum(r["bytes"] for r in rs)
        s.rows_loaded = sum(r["rows_loaded"] for r in rs)
        s.rows_rejected = sum(r["rows_rejected"] for r in rs)
        for r in rs:
            if r.get("quality"):
                s.quality.add(QualityStats.from_dict(r["quality"]))
        weighted = [(r["latency_mean_ms"], r["messages"]) for r in rs
                    if r["latency_mean_ms"] is not None and r["messages"]]
        if weighted:
            s.latency_mean_ms = sum(v * n for v, n in weighted) / sum(n for _, n in weighted)
        p99s = [r["latency_p99_ms"] for r in rs if r["latency_p99_ms"] is not None]
        s.latency_p99_ms = max(p99s) if p99s else 0.0
        windows: dict[float, set[str]] = defaultdict(set)
        for r in rs:
            windows[round(r["window_end"] / 5)].add(r["instance"])
        s.instances_max = max((len(v) for v in windows.values()), default=0)
        mine = [d for d in decisions if d["tenant"] == t and d["app"] == a]
        s.scale_ups = sum(1 for d in mine if d["action"] == "scale_up")
        s.scale_downs = sum(1 for d in mine if d["action"] == "scale_down")
        out.append(s)
    return out


def unconfined_runs(store: StateStore, tenant: str | None = None,
                    since: float | None = None) -> dict[str, int]:
    """Files and stream reports per tenant whose app ran without the sandbox."""
    where, params = "sandbox = 'unconfined'", []
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    counts: dict[str, int] = defaultdict(int)
    for table, col in (("ingestions", "started_at"), ("stream_reports", "window_end")):
        sql = f"SELECT tenant, COUNT(*) AS n FROM {table} WHERE {where}"
        args: list[Any] = list(params)
        if since is not None:
            sql += f" AND {col} >= ?"
            args.append(since)
        for r in store.db.query(sql + " GROUP BY tenant", args):
            counts[r["tenant"]] += r["n"]
    return dict(sorted(counts.items()))


def describe_sink(s: dict[str, Any]) -> str:
    """One line for a stream report's sink state (``simbdp.stream.window.SinkWindow``)."""
    line = (f"{s['state']}; {s['commits']:,} commits, {s['messages']:,} messages, "
            f"{s['rows']:,} rows")
    if s.get("completed"):
        line += f" ({s['completed']:,} messages completed: other sinks had them)"
    if s.get("failures"):
        line += f"; {s['failures']:,} failed attempts, last: {s['last_error']}"
    return line
