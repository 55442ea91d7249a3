"""Prometheus metrics derived from the state store at scrape time.

Workers and stream instances are separate processes; every figure they produce is already a
record (``ingestions``), a report (``stream_reports``), a decision or a quota row. So
:class:`StoreCollector` runs aggregate SQL (``GROUP BY`` in the database) on each scrape instead
of keeping counters in memory: one source of truth, right across processes and restarts. Only
API requests are counted in the API process itself (:func:`api_requests_counter`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
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

from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.state.store import today

__all__ = ["BATCH_SECS_BUCKETS", "StoreCollector", "api_requests_counter", "metrics_registry"]

#: upper bounds (seconds) of the per-file batch ingestion time histogram
BATCH_SECS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: finished outcomes counted for files (``running``/``waiting`` are not finished yet)
_FINAL = "('processed', 'rejected', 'failed', 'duplicate', 'interrupted')"
#: a stream instance reporting within this many report intervals counts as running
_RUNNING_INTERVALS = 3


class StoreCollector(Collector):
    """Every ingestion figure, aggregated in SQL from the state store on each scrape."""

    def __init__(self, platform: Platform, store: StateStore):
        self.platform, self.store = platform, store

    def _q(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return self.store.db.query(sql, params or [])

    def collect(self) -> Iterator[Metric]:
        yield from self._batch()
        yield from self._stream()
        yield from self._instances()
        yield from self._decisions()
        yield from self._quotas()

    def _batch(self) -> Iterator[Metric]:
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
        # one scan: group by outcome and, for processed files, by histogram bucket index
        bucket = " ".join(f"WHEN ended_at - started_at <= ? THEN {i}"
                          for i in range(len(BATCH_SECS_BUCKETS)))
        rows = self._q(
            "SELECT tenant, COALESCE(app, '') AS app, outcome, "
            f"CASE WHEN outcome <> 'processed' OR ended_at IS NULL THEN NULL {bucket} "
            f"ELSE {len(BATCH_SECS_BUCKETS)} END AS bucket, COUNT(*) AS files, "
            "SUM(bytes) AS bytes, SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS rejected, "
            "SUM(ended_at - started_at) AS secs "
            f"FROM ingestions WHERE kind = 'batch' AND outcome IN {_FINAL} "
            "GROUP BY tenant, COALESCE(app, ''), outcome, bucket", list(BATCH_SECS_BUCKETS))
        per_outcome: dict[tuple[str, str, str], list[int]] = {}
        per_app: dict[tuple[str, str], list[int]] = {}
        per_bucket: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            o = per_outcome.setdefault((r["tenant"], r["app"], r["outcome"]), [0, 0])
            o[0] += r["files"]
            o[1] += r["bytes"] or 0
            a = per_app.setdefault((r["tenant"], r["app"]), [0, 0])
            a[0] += r["loaded"] or 0
            a[1] += r["rejected"] or 0
            if r["bucket"] is not None:
                h = per_bucket.setdefault((r["tenant"], r["app"]),
                                          [0.0] * (len(BATCH_SECS_BUCKETS) + 2))
                h[r["bucket"]] += r["files"]
                h[-1] += r["secs"] or 0.0
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
        for r in self._q("SELECT tenant, app, SUM(rows_loaded) AS loaded, "
                         "SUM(rows_rejected) AS rejected FROM stream_reports "
                         "GROUP BY tenant, app"):
            loaded.add_metric([r["tenant"], r["app"], "stream"], r["loaded"] or 0)
            rejected.add_metric([r["tenant"], r["app"], "stream"], r["rejected"] or 0)
        yield from (files, nbytes, loaded, rejected, hist)

    def _stream(self) -> Iterator[Metric]:
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
        rows = self._q(
            "SELECT tenant, app, SUM(messages) AS messages, SUM(bytes) AS bytes, "
            "SUM(rows_rejected) AS dead, "
            "SUM(CASE WHEN latency_mean_ms IS NULL THEN 0 ELSE messages - rows_rejected END) "
            "AS n, SUM(COALESCE(latency_mean_ms * (messages - rows_rejected), 0)) AS ms "
            "FROM stream_reports GROUP BY tenant, app")
        for r in rows:
            key = [r["tenant"], r["app"]]
            msgs.add_metric(key, r["messages"] or 0)
            nbytes.add_metric(key, r["bytes"] or 0)
            dead.add_metric(key, r["dead"] or 0)
            lat.add_metric(key, r["n"] or 0, float(r["ms"] or 0.0) / 1000)
        backlog = GaugeMetricFamily("simbdp_stream_backlog", "Messages waiting in the "
                                    "tenant's queue (latest report of the app).", labels=labels)
        p99 = GaugeMetricFamily("simbdp_stream_latency_p99_seconds", "p99 publish-to-commit "
                                "latency of the latest report window.", labels=labels)
        for r in self._q(
                "SELECT s.tenant, s.app, MAX(s.backlog) AS backlog, "
                "MAX(s.latency_p99_ms) AS p99 FROM stream_reports s JOIN "
                "(SELECT tenant, app, MAX(window_end) AS w FROM stream_reports "
                "GROUP BY tenant, app) m ON s.tenant = m.tenant AND s.app = m.app "
                "AND s.window_end = m.w GROUP BY s.tenant, s.app"):
            backlog.add_metric([r["tenant"], r["app"]], r["backlog"])
            if r["p99"] is not None:
                p99.add_metric([r["tenant"], r["app"]], r["p99"] / 1000)
        yield from (msgs, nbytes, dead, lat, backlog, p99)

    def _instances(self) -> Iterator[Metric]:
        labels = ["tenant", "app"]
        desired = GaugeMetricFamily("simbdp_stream_instances_desired", "Instances the "
                                    "monitor wants for the app.", labels=labels)
        for r in self._q("SELECT tenant, app, instances FROM stream_desired"):
            desired.add_metric([r["tenant"], r["app"]], r["instances"])
        running = GaugeMetricFamily("simbdp_stream_instances_running", "Instances that "
                                    "reported within the last "
                                    f"{_RUNNING_INTERVALS} report intervals.", labels=labels)
        since = time.time() - _RUNNING_INTERVALS * self.platform.config.report_interval_secs
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
