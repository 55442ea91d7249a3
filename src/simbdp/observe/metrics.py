"""Prometheus metrics derived from the state store at scrape time.

Workers and stream instances are separate processes; every figure they produce is already a
record (``ingestions``), a report (``stream_reports``), a decision or a quota row. So
:class:`StoreCollector` derives every figure from them with aggregate SQL (``GROUP BY`` in the
database) instead of keeping counters in memory: one source of truth, right across processes
and restarts. Only API requests are counted in the API process itself
(:func:`api_requests_counter`).

A scrape costs the same whatever the number of records: finished records never change, so
the collector keeps running totals of those that ended before a watermark (``SETTLE_SECS``
behind the clock), advances them by the records that ended since the last scrape, and
aggregates only the records newer than the watermark afresh. A scrape within ``REUSE_SECS``
of the previous one answers the same figures.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from simbdp.observe.histogram import BATCH_SECS_BUCKETS, bucket_sql
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.state.store import today

__all__ = ["BATCH_SECS_BUCKETS", "REUSE_SECS", "SETTLE_SECS", "StoreCollector",
           "api_requests_counter", "metrics_registry"]

#: finished outcomes counted for files (``running``/``waiting`` are not finished yet)
_FINAL = "('processed', 'rejected', 'failed', 'duplicate', 'interrupted')"
#: a stream instance reporting within this many report intervals counts as running
_RUNNING_INTERVALS = 3
#: records that ended (reports whose window ended) this long before a scrape are folded into
#: the running totals; newer ones are aggregated afresh on each scrape. A record's ``ended_at``
#: is the time its outcome is written, so one that ended before the watermark is in the store
#: by then unless writing it took longer than this (SQLite's busy timeout is 30 s).
SETTLE_SECS = 120.0
#: a scrape within this many seconds of the previous one answers the same figures
REUSE_SECS = 0.5
#: per (tenant, app, outcome, histogram bucket or None): files, bytes, rows loaded, rows
#: rejected, seconds
_BATCH_SQL = (
    "SELECT tenant, COALESCE(app, '') AS app, outcome, "
    "CASE WHEN outcome <> 'processed' THEN NULL ELSE "
    f"{bucket_sql('ended_at - started_at')} END AS bucket, COUNT(*) AS files, "
    "SUM(bytes) AS bytes, SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS rejected, "
    "SUM(ended_at - started_at) AS secs FROM {table} "
    # ``outcome || ''``: read the range of the ended_at index, not the outcome index
    f"WHERE kind = 'batch' AND outcome || '' IN {_FINAL} AND ended_at > ? AND ended_at <= ? "
    "GROUP BY tenant, COALESCE(app, ''), outcome, bucket")
#: per (tenant, app): reports, messages, bytes, rows loaded, dead letters, messages with a
#: latency, their latency (ms) summed
_STREAM_SQL = (
    "SELECT tenant, app, COUNT(*) AS reports, SUM(messages) AS messages, SUM(bytes) AS bytes, "
    "SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS dead, "
    "SUM(CASE WHEN latency_mean_ms IS NULL THEN 0 ELSE messages - rows_rejected END) AS n, "
    "SUM(COALESCE(latency_mean_ms * (messages - rows_rejected), 0)) AS ms "
    "FROM stream_reports WHERE window_end > ? AND window_end <= ? GROUP BY tenant, app")
#: per (tenant, app): the latest report window's end, backlog and p99 (ms)
_LATEST_SQL = (
    "SELECT s.tenant, s.app, s.window_end AS w, MAX(s.backlog) AS backlog, "
    "MAX(s.latency_p99_ms) AS p99 FROM stream_reports s JOIN "
    "(SELECT tenant, app, MAX(window_end) AS w FROM stream_reports "
    "WHERE window_end > ? AND window_end <= ? GROUP BY tenant, app) m "
    "ON s.tenant = m.tenant AND s.app = m.app AND s.window_end = m.w "
    "GROUP BY s.tenant, s.app, s.window_end")

_Key = tuple[Any, ...]


def _add(into: dict[_Key, list[float]], more: dict[_Key, list[float]]) -> None:
    for key, values in more.items():
        have = into.setdefault(key, [0] * len(values))
        for i, v in enumerate(values):
            have[i] += v


def _later(into: dict[_Key, tuple[float, int, float | None]],
           more: dict[_Key, tuple[float, int, float | None]]) -> None:
    """Keep per key the latest report window (ties: the largest backlog and p99)."""
    for key, (w, backlog, p99) in more.items():
        have = into.get(key)
        if have is None or w > have[0]:
            into[key] = (w, backlog, p99)
        elif w == have[0]:
            into[key] = (w, max(backlog, have[1]),
                         p99 if have[2] is None else have[2] if p99 is None else max(p99, have[2]))


class _Totals:
    """The records folded so far: batch records that ended at or before ``batch_until``,
    stream reports whose window ended at or before ``stream_until``."""

    def __init__(self) -> None:
        self.batch_until = self.stream_until = -math.inf
        self.batch: dict[_Key, list[float]] = {}
        self.stream: dict[_Key, list[float]] = {}
        self.latest: dict[_Key, tuple[float, int, float | None]] = {}


class StoreCollector(Collector):
    """Every ingestion figure, aggregated in SQL from the state store (see the module)."""

    def __init__(self, platform: Platform, store: StateStore, *,
                 settle_secs: float = SETTLE_SECS, reuse_secs: float = REUSE_SECS,
                 clock: Callable[[], float] = time.time):
        self.platform, self.store = platform, store
        self.settle_secs, self.reuse_secs, self.clock = settle_secs, reuse_secs, clock
        self._totals = _Totals()
        self._lock = threading.Lock()
        self._last: tuple[float, list[Metric]] | None = None

    def _q(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.store.db.query(sql, params or [])

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._last is None or not 0 <= now - self._last[0] < self.reuse_secs:
                self._last = (now, self._collect(now))
            return iter(self._last[1])

    def _collect(self, now: float) -> list[Metric]:
        batch, stream, latest = self._records(now)
        return [*self._batch(batch, stream), *self._stream(stream, latest),
                *self._instances(now), *self._decisions(), *self._quotas()]

    # records: running totals up to the watermark + the records after it --------------------
    def _records(self, now: float) -> tuple[dict[_Key, list[float]], dict[_Key, list[float]],
                                            dict[_Key, tuple[float, int, float | None]]]:
        t = self._totals
        until = max(t.batch_until, t.stream_until, now - self.settle_secs)
        if t.stream_until > -math.inf and self._q(
                "SELECT COUNT(*) AS n FROM stream_reports WHERE window_end <= ?",
                [t.stream_until])[0]["n"] != sum(v[0] for v in t.stream.values()):
            # a report filed late (a monitor catching up) for a window already folded
            t.stream, t.latest, t.stream_until = {}, {}, -math.inf
        if until > t.batch_until:
            _add(t.batch, self._batch_rows(t.batch_until, until))
            t.batch_until = until
        if until > t.stream_until:
            _add(t.stream, self._stream_rows(t.stream_until, until))
            _later(t.latest, self._latest_rows(t.stream_until, until))
            t.stream_until = until
        batch = {k: list(v) for k, v in t.batch.items()}
        stream = {k: list(v) for k, v in t.stream.items()}
        latest = dict(t.latest)
        _add(batch, self._batch_rows(until, math.inf))
        _add(stream, self._stream_rows(until, math.inf))
        _later(latest, self._latest_rows(until, math.inf))
        return batch, stream, latest

    def _batch_rows(self, after: float, until: float) -> dict[_Key, list[float]]:
        # the first fold reads (nearly) every record: SQLite scans the table faster than it
        # looks each record up through the ended_at index
        table = "ingestions NOT INDEXED" if after == -math.inf and \
            self.store.db.dialect == "sqlite" else "ingestions"
        return {(r["tenant"], r["app"], r["outcome"], r["bucket"]):
                [r["files"], int(r["bytes"] or 0), int(r["loaded"] or 0),
                 int(r["rejected"] or 0), float(r["secs"] or 0.0)]
                for r in self._q(_BATCH_SQL.format(table=table), [after, until])}

    def _stream_rows(self, after: float, until: float) -> dict[_Key, list[float]]:
        return {(r["tenant"], r["app"]):
                [r["reports"], int(r["messages"] or 0), int(r["bytes"] or 0),
                 int(r["loaded"] or 0), int(r["dead"] or 0), int(r["n"] or 0),
                 float(r["ms"] or 0.0)]
                for r in self._q(_STREAM_SQL, [after, until])}

    def _latest_rows(self, after: float, until: float
                     ) -> dict[_Key, tuple[float, int, float | None]]:
        return {(r["tenant"], r["app"]): (r["w"], r["backlog"], r["p99"])
                for r in self._q(_LATEST_SQL, [after, until])}

    # families ---------------------------------------------------------------------------
    def _batch(self, rows: dict[_Key, list[float]], stream: dict[_Key, list[float]]
               ) -> Iterator[Metric]:
        labels = ["tenant", "app", "outcome"]
        files = CounterMetricFamily("simbdp_batch_files", "Files by final outcome "
                                    "(processed = accepted).", labels=labels)
        nbytes = CounterMetricFamily("simbdp_batch_bytes", "File bytes by final outcome.",
                                     labels=labels)
        loaded = CounterMetricFamily("simbdp_rows_loaded", "Rows loaded into the tenant's "
                                     "tables.", labels=["tenant", "app", "path"])
        rejected = CounterMetricFamily("simbdp_rows_rejected", "Rows rejected (batch) or "
                                       "messages dead-lettered (stream).",
                                       labels=["tenant", "app", "path"])
        hist = HistogramMetricFamily(
            "simbdp_batch_file_seconds", "Ingestion time of each processed file (record "
            "started to ended).", labels=["tenant", "app"])
        per_outcome: dict[tuple[str, str, str], list[int]] = {}
        per_app: dict[tuple[str, str], list[int]] = {}
        per_bucket: dict[tuple[str, str], list[float]] = {}
        for (tenant, app, outcome, bucket), (n, b, n_loaded, n_rejected, secs) in \
                sorted(rows.items(), key=lambda kv: kv[0][:3]):
            o = per_outcome.setdefault((tenant, app, outcome), [0, 0])
            o[0] += int(n)
            o[1] += int(b)
            a = per_app.setdefault((tenant, app), [0, 0])
            a[0] += int(n_loaded)
            a[1] += int(n_rejected)
            if bucket is not None:
                h = per_bucket.setdefault((tenant, app), [0.0] * (len(BATCH_SECS_BUCKETS) + 2))
                h[bucket] += n
                h[-1] += secs
        for key, (n, b) in per_outcome.items():
            files.add_metric(list(key), n)
            nbytes.add_metric(list(key), b)
        for (tenant, app), (n_loaded, n_rejected) in per_app.items():
            loaded.add_metric([tenant, app, "batch"], n_loaded)
            rejected.add_metric([tenant, app, "batch"], n_rejected)
        for (tenant, app), h in per_bucket.items():
            cumulative = list(itertools.accumulate(h[:-1]))
            bounds = [*(_le(b) for b in BATCH_SECS_BUCKETS), "+Inf"]
            hist.add_metric([tenant, app], list(zip(bounds, cumulative, strict=True)), h[-1])
        for (tenant, app), v in sorted(stream.items()):
            loaded.add_metric([tenant, app, "stream"], int(v[3]))
            rejected.add_metric([tenant, app, "stream"], int(v[4]))
        return iter((files, nbytes, loaded, rejected, hist))

    def _stream(self, rows: dict[_Key, list[float]],
                latest: dict[_Key, tuple[float, int, float | None]]) -> Iterator[Metric]:
        labels = ["tenant", "app"]
        msgs = CounterMetricFamily("simbdp_stream_messages", "Messages consumed.",
                                   labels=labels)
        nbytes = CounterMetricFamily("simbdp_stream_bytes", "Message bytes consumed.",
                                     labels=labels)
        dead = CounterMetricFamily("simbdp_stream_dead_letters", "Messages sent to the "
                                   "dead-letter queue.", labels=labels)
        # each report holds the mean publish-to-commit latency of its committed messages
        # (messages - dead letters): mean * count gives the exact sum; no per-message buckets
        lat = SummaryMetricFamily("simbdp_stream_latency_seconds", "Publish-to-commit latency "
                                  "of committed messages.", labels=labels)
        for (tenant, app), (_, n_msgs, b, _, n_dead, n, ms) in sorted(rows.items()):
            key = [tenant, app]
            msgs.add_metric(key, int(n_msgs))
            nbytes.add_metric(key, int(b))
            dead.add_metric(key, int(n_dead))
            lat.add_metric(key, int(n), float(ms) / 1000)
        backlog = GaugeMetricFamily("simbdp_stream_backlog", "Messages waiting in the "
                                    "tenant's queue (latest report of the app).", labels=labels)
        p99 = GaugeMetricFamily("simbdp_stream_latency_p99_seconds", "p99 publish-to-commit "
                                "latency of the latest report window.", labels=labels)
        for (tenant, app), (_, n_backlog, p99_ms) in sorted(latest.items()):
            backlog.add_metric([tenant, app], n_backlog)
            if p99_ms is not None:
                p99.add_metric([tenant, app], p99_ms / 1000)
        return iter((msgs, nbytes, dead, lat, backlog, p99))

    def _instances(self, now: float) -> Iterator[Metric]:
        labels = ["tenant", "app"]
        desired = GaugeMetricFamily("simbdp_stream_instances_desired", "Instances the "
                                    "monitor wants for the app.", labels=labels)
        for r in self._q("SELECT tenant, app, instances FROM stream_desired"):
            desired.add_metric([r["tenant"], r["app"]], r["instances"])
        running = GaugeMetricFamily("simbdp_stream_instances_running", "Instances that "
                                    "reported within the last "
                                    f"{_RUNNING_INTERVALS} report intervals.", labels=labels)
        since = now - _RUNNING_INTERVALS * self.platform.config.report_interval_secs
        for r in self._q("SELECT tenant, app, COUNT(DISTINCT instance) AS n FROM stream_reports "
                         "WHERE window_end >= ? GROUP BY tenant, app", [since]):
            running.add_metric([r["tenant"], r["app"]], r["n"])
        yield from (desired, running)

    def _decisions(self) -> Iterator[Metric]:
        c = CounterMetricFamily("simbdp_stream_decisions", "Scaling and control decisions "
                                "(scale_up, scale_down, restart, pause, ...).",
                                labels=["tenant", "app", "action"])
        for r in self._q("SELECT tenant, COALESCE(app, '') AS app, action, COUNT(*) AS n "
                         "FROM decisions GROUP BY tenant, COALESCE(app, ''), action"):
            c.add_metric([r["tenant"], r["app"], r["action"]], r["n"])
        yield c

    def _quotas(self) -> Iterator[Metric]:
        labels = ["tenant", "quota"]
        used = GaugeMetricFamily("simbdp_quota_used", "Daily quota used today (UTC).",
                                 labels=labels)
        allowed = GaugeMetricFamily("simbdp_quota_allowed", "Daily quota allowed by the "
                                    "tenant's profile.", labels=labels)
        rows = {r["tenant"]: r for r in self._q(
            "SELECT tenant, files, bytes, messages, stream_bytes FROM quota_usage WHERE day = ?",
            [today()])}
        for tid, p in self.platform.tenants.items():
            limits = {"files": p.batch.max_files_per_day, "bytes": int(p.batch.max_bytes_per_day),
                      "messages": p.stream.max_messages_per_day,
                      "stream_bytes": int(p.stream.max_bytes_per_day)}
            row = rows.get(tid, {})
            for quota, limit in limits.items():
                used.add_metric([tid, quota], row.get(quota) or 0)
                allowed.add_metric([tid, quota], limit)
        yield from (used, allowed)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def api_requests_counter(registry: CollectorRegistry) -> Counter:
    """API requests by route template, method and status (counted in the API process)."""
    return Counter("simbdp_api_requests", "API requests answered.",
                   ["route", "method", "status"], registry=registry)


def metrics_registry(platform: Platform, store: StateStore) -> CollectorRegistry:
    """A registry with the store collector (not the process-global default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(platform, store))
    return registry
