"""The monitoring view (web dashboard and ``simbdp top``): per tenant figures over a window.

Everything is read from the records the CLI and ``/metrics`` read (``ingestions``,
``stream_reports``, ``decisions``, ``stream_desired``, ``quota_usage``) and aggregated in SQL
(``GROUP BY``, window functions for percentiles): the store answers with a few rows per tenant
and time bucket whatever the number of records, on SQLite and PostgreSQL alike.

A batch record belongs to the window it started in (the store's index is on the start time);
its rows and bytes are plotted in the bucket where it ended. Stream figures come from the
instances' reports, placed at the end of their report window.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.state.store import today

__all__ = ["CRASH_LOOP_RESTARTS", "CRASH_LOOP_SECS", "DEFAULT_WINDOW_SECS", "LAST_DECISIONS",
           "LAST_FILES", "LAST_INSTANCES", "POINTS", "TOP_REASONS", "WINDOWS_SECS",
           "dashboard_view", "visible_tenants"]

#: the window shown unless another is chosen: the last 15 minutes
DEFAULT_WINDOW_SECS = 900
#: windows offered by the page and ``simbdp top``
WINDOWS_SECS = (300, 900, 3600, 6 * 3600, 24 * 3600)
#: time buckets per window (the points of each plot)
POINTS = 60
#: restarts of an app's instances within CRASH_LOOP_SECS that make a crash loop (as the
#: SimbdpStreamInstanceCrashLoop alert in deploy/prometheus/alerts.yml)
CRASH_LOOP_RESTARTS, CRASH_LOOP_SECS = 3, 900
LAST_FILES, LAST_DECISIONS, LAST_INSTANCES, TOP_REASONS = 20, 20, 20, 10
#: an instance that reported within this many report intervals counts as running (as /metrics)
_RUNNING_INTERVALS = 3
_MIB = 1024 * 1024
#: records in the window above which SQLite scans the table instead of using the index
_SCAN_ABOVE = 50_000


def visible_tenants(platform: Platform, tenant: str | None) -> list[str]:
    """The tenants a caller sees: one tenant, or (operator, ``None``) every tenant, broken
    profiles included."""
    if tenant is not None:
        return [tenant]
    return sorted(set(platform.tenants) | set(platform.broken))


class _Query:
    def __init__(self, store: StateStore, tenants: Sequence[str], since: float, step: float):
        self.db, self.tenants, self.since, self.step = store.db, list(tenants), since, step

    @functools.cached_property
    def ingestions(self) -> str:
        """``ingestions``, read by a plain scan on SQLite when the window holds so many
        records that looking each up through the (tenant, started_at) index costs more."""
        if self.db.dialect != "sqlite":
            return "ingestions"
        n = self.db.query(f"SELECT COUNT(*) AS n FROM ingestions WHERE {self.among} "
                          "AND started_at >= ?", [*self.tenants, self.since])[0]["n"]
        return "ingestions NOT INDEXED" if n > _SCAN_ABOVE else "ingestions"

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.db.query(sql, list(params))

    @property
    def among(self) -> str:
        return f"tenant IN ({', '.join('?' * len(self.tenants))})"

    def bucket(self, col: str) -> str:
        """The bucket index of a time column (``?`` twice: since, step); clamped by callers."""
        expr = f"({col} - ?) / ?"
        return f"CAST(FLOOR({expr}) AS INTEGER)" if self.db.dialect == "postgres" \
            else f"CAST({expr} AS INTEGER)"


def _nearest_rank(rank: str = "rn", count: str = "n") -> str:
    """Rows holding the p50 or p99 (nearest rank: the ceil(q * n)-th of n)."""
    return " OR ".join(f"({rank} * 100 >= {count} * {q} AND ({rank} - 1) * 100 < {count} * {q})"
                       for q in (50, 99))


def dashboard_view(platform: Platform, store: StateStore, tenants: Sequence[str],
                   window_secs: float = DEFAULT_WINDOW_SECS, now: float | None = None
                   ) -> dict[str, Any]:
    """Every figure of the monitoring view for ``tenants`` over the last ``window_secs``.

    Returns ``{"now", "window_secs", "step_secs", "since", "tenants": [view, ...]}``, each view
    a JSON-ready dict: ``tenant``, ``enabled``, ``disabled_reason``, ``totals``, ``series``
    (``t`` bucket starts, ``rows_per_sec``, ``mib_per_sec``, ``batch_p50_secs``,
    ``batch_p99_secs``, ``stream_p99_ms``), ``quota``, ``reasons``, ``apps``, ``instances``
    (each that reported in the window, the latest first), ``decisions``, ``files``.
    Raises ``ValueError`` for a window that is not positive.
    """
    if window_secs <= 0:
        raise ValueError(f"window_secs must be positive, not {window_secs}")
    now = time.time() if now is None else now
    step = window_secs / POINTS
    since = now - window_secs
    views = {t: _empty_view(platform, t, since, step) for t in tenants}
    if views:
        q = _Query(store, list(views), since, step)
        _batch(q, views)
        _batch_latency(q, views)
        _stream(q, views)
        _reasons(q, views)
        _apps(q, views, now, platform.config.report_interval_secs)
        _quota(q, views, platform)
        _latest(q, views)
    for v in views.values():
        _finish(v)
    return {"now": now, "window_secs": window_secs, "step_secs": step, "since": since,
            "tenants": list(views.values())}


def _empty_view(platform: Platform, tenant: str, since: float, step: float) -> dict[str, Any]:
    profile = platform.tenants.get(tenant)
    if tenant in platform.broken:
        reason: str | None = f"profile did not load: {platform.broken[tenant]}"
    elif profile is not None and not profile.enabled:
        reason = "enabled: false in its profile"
    else:
        reason = None
    return {
        "tenant": tenant, "enabled": reason is None, "disabled_reason": reason,
        "totals": {"files": {}, "rows_loaded": 0, "rows_rejected": 0, "bytes": 0,
                   "batch_rows_loaded": 0, "batch_rows_rejected": 0, "messages": 0,
                   "stream_bytes": 0, "stream_rows_loaded": 0, "dead_letters": 0,
                   "batch_p50_secs": None, "batch_p99_secs": None, "stream_p99_ms": None,
                   "stream_mean_ms": None, "backlog": 0, "instances_running": 0,
                   "instances_desired": 0, "crash_looping": False},
        "series": {"t": [since + i * step for i in range(POINTS)],
                   "rows": [0] * POINTS, "bytes": [0] * POINTS,
                   "batch_p50_secs": [None] * POINTS, "batch_p99_secs": [None] * POINTS,
                   "stream_p99_ms": [None] * POINTS},
        "quota": [], "reasons": [], "apps": [], "instances": [], "decisions": [], "files": [],
    }


def _i(value: Any) -> int:
    """A count or sum as an int (PostgreSQL sums BIGINT to NUMERIC; empty sums are NULL)."""
    return int(value or 0)


def _at(bucket: Any) -> int:
    return min(max(int(bucket), 0), POINTS - 1)


def _batch(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    for r in q.rows(
            f"SELECT tenant, outcome, {q.bucket('COALESCE(ended_at, started_at)')} AS b, "
            "COUNT(*) AS n, SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS rejected, "
            "SUM(CASE WHEN outcome = 'processed' THEN bytes ELSE 0 END) AS bytes "
            f"FROM {q.ingestions} WHERE kind = 'batch' AND {q.among} AND started_at >= ? "
            "GROUP BY tenant, outcome, b", [q.since, q.step, *q.tenants, q.since]):
        v = views[r["tenant"]]
        tot, s, b = v["totals"], v["series"], _at(r["b"])
        tot["files"][r["outcome"]] = tot["files"].get(r["outcome"], 0) + r["n"]
        tot["batch_rows_loaded"] += _i(r["loaded"])
        tot["batch_rows_rejected"] += _i(r["rejected"])
        tot["bytes"] += _i(r["bytes"])
        s["rows"][b] += _i(r["loaded"])
        s["bytes"][b] += _i(r["bytes"])


def _batch_latency(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    """p50 and p99 (nearest rank) of accepted -> done per processed file, per bucket and over
    the window: one scan, two window orders."""
    # ``outcome || ''``: keeps SQLite on the (tenant, started_at) index; the outcome index
    # would read most of the table (nearly every record is processed)
    for r in q.rows(
            "SELECT tenant, b, d, rb, nb, rw, nw FROM (SELECT tenant, b, d, "
            "ROW_NUMBER() OVER (PARTITION BY tenant, b ORDER BY d) AS rb, "
            "COUNT(*) OVER (PARTITION BY tenant, b) AS nb, "
            "ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY d) AS rw, "
            "COUNT(*) OVER (PARTITION BY tenant) AS nw FROM "
            f"(SELECT tenant, {q.bucket('ended_at')} AS b, ended_at - started_at AS d "
            f"FROM {q.ingestions} WHERE kind = 'batch' AND outcome || '' = 'processed' AND "
            f"{q.among} AND started_at >= ? AND ended_at IS NOT NULL) s) r "
            f"WHERE {_nearest_rank('rb', 'nb')} OR {_nearest_rank('rw', 'nw')}",
            [q.since, q.step, *q.tenants, q.since]):
        v = views[r["tenant"]]
        for pct in (50, 99):
            if _is_rank(r["rb"], r["nb"], pct):
                v["series"][f"batch_p{pct}_secs"][_at(r["b"])] = r["d"]
            if _is_rank(r["rw"], r["nw"], pct):
                v["totals"][f"batch_p{pct}_secs"] = r["d"]


def _is_rank(rank: int, count: int, pct: int) -> bool:
    return rank * 100 >= count * pct and (rank - 1) * 100 < count * pct


def _stream(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    for r in q.rows(
            f"SELECT tenant, {q.bucket('window_end')} AS b, SUM(messages) AS messages, "
            "SUM(bytes) AS bytes, SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS dead, "
            "MAX(latency_p99_ms) AS p99, "
            "SUM(CASE WHEN latency_mean_ms IS NULL THEN 0 ELSE messages - rows_rejected END) "
            "AS n, SUM(COALESCE(latency_mean_ms * (messages - rows_rejected), 0)) AS ms "
            f"FROM stream_reports WHERE {q.among} AND window_end >= ? GROUP BY tenant, b",
            [q.since, q.step, *q.tenants, q.since]):
        v = views[r["tenant"]]
        tot, s, b = v["totals"], v["series"], _at(r["b"])
        tot["messages"] += _i(r["messages"])
        tot["stream_bytes"] += _i(r["bytes"])
        tot["stream_rows_loaded"] += _i(r["loaded"])
        tot["dead_letters"] += _i(r["dead"])
        tot.setdefault("_lat", [0, 0.0])
        tot["_lat"][0] += _i(r["n"])
        tot["_lat"][1] += float(r["ms"] or 0.0)
        s["rows"][b] += _i(r["loaded"])
        s["bytes"][b] += _i(r["bytes"])
        if r["p99"] is not None:
            prev = s["stream_p99_ms"][b]
            s["stream_p99_ms"][b] = r["p99"] if prev is None else max(prev, r["p99"])
            tp = tot["stream_p99_ms"]
            tot["stream_p99_ms"] = r["p99"] if tp is None else max(tp, r["p99"])


def _reasons(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    """Why files failed or were rejected, and files loaded with rows rejected: per tenant
    the first TOP_REASONS (failures first, then by count); no reason groups as ``None``."""
    for r in q.rows(
            "SELECT tenant, outcome, reason, files, rows_rejected, last_at FROM ("
            "SELECT tenant, outcome, reason, COUNT(*) AS files, "
            "SUM(rows_rejected) AS rows_rejected, MAX(started_at) AS last_at, "
            "ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY CASE outcome WHEN 'failed' "
            "THEN 0 WHEN 'interrupted' THEN 1 WHEN 'rejected' THEN 2 WHEN 'waiting' THEN 3 "
            "ELSE 4 END, COUNT(*) DESC, MAX(started_at) DESC) AS rn "
            f"FROM {q.ingestions} "
            f"WHERE kind = 'batch' AND {q.among} AND started_at >= ? AND (outcome IN "
            "('rejected', 'failed', 'interrupted', 'waiting') OR rows_rejected > 0) "
            "GROUP BY tenant, outcome, reason) g WHERE rn <= ? ORDER BY tenant, rn",
            [*q.tenants, q.since, TOP_REASONS]):
        views[r["tenant"]]["reasons"].append(
            {"outcome": r["outcome"], "reason": r["reason"], "files": r["files"],
             "rows_rejected": _i(r["rows_rejected"]), "last_at": r["last_at"]})


def _apps(q: _Query, views: dict[str, dict[str, Any]], now: float,
          report_interval_secs: float) -> None:
    apps: dict[tuple[str, str], dict[str, Any]] = {}

    def app(tenant: str, name: str) -> dict[str, Any]:
        return apps.setdefault((tenant, name), {
            "app": name, "desired": 0, "paused_reason": None, "running": 0, "backlog": 0,
            "last_report_at": None, "restarts": 0, "crash_looping": False})

    for r in q.rows(f"SELECT tenant, app, instances, paused_reason FROM stream_desired "
                    f"WHERE {q.among}", q.tenants):
        a = app(r["tenant"], r["app"])
        a["desired"], a["paused_reason"] = r["instances"], r["paused_reason"]
    for r in q.rows(f"SELECT tenant, app, COUNT(DISTINCT instance) AS n FROM stream_reports "
                    f"WHERE {q.among} AND window_end >= ? GROUP BY tenant, app",
                    [*q.tenants, now - _RUNNING_INTERVALS * report_interval_secs]):
        app(r["tenant"], r["app"])["running"] = r["n"]
    for r in q.rows(
            "SELECT s.tenant, s.app, MAX(s.backlog) AS backlog, MAX(s.window_end) AS at "
            "FROM stream_reports s JOIN (SELECT tenant, app, MAX(window_end) AS w "
            f"FROM stream_reports WHERE {q.among} GROUP BY tenant, app) m "
            "ON s.tenant = m.tenant AND s.app = m.app AND s.window_end = m.w "
            "GROUP BY s.tenant, s.app", q.tenants):
        a = app(r["tenant"], r["app"])
        a["backlog"], a["last_report_at"] = r["backlog"], r["at"]
    for r in q.rows(f"SELECT tenant, app, COUNT(*) AS n FROM decisions WHERE {q.among} "
                    "AND action = 'restart' AND app IS NOT NULL AND at >= ? "
                    "GROUP BY tenant, app", [*q.tenants, now - CRASH_LOOP_SECS]):
        a = app(r["tenant"], r["app"])
        a["restarts"] = r["n"]
        a["crash_looping"] = r["n"] >= CRASH_LOOP_RESTARTS
    for (tenant, _), a in sorted(apps.items()):
        views[tenant]["apps"].append(a)
    live_since = now - _RUNNING_INTERVALS * report_interval_secs
    for r in q.rows(
            "SELECT tenant, app, instance, at, messages FROM (SELECT tenant, app, instance, "
            "MAX(window_end) AS at, SUM(messages) AS messages, ROW_NUMBER() OVER (PARTITION "
            "BY tenant ORDER BY MAX(window_end) DESC) AS rn FROM stream_reports "
            f"WHERE {q.among} AND window_end >= ? GROUP BY tenant, app, instance) i "
            "WHERE rn <= ? ORDER BY tenant, at DESC", [*q.tenants, q.since, LAST_INSTANCES]):
        views[r["tenant"]]["instances"].append(
            {"app": r["app"], "instance": r["instance"], "last_report_at": r["at"],
             "messages": _i(r["messages"]), "running": r["at"] >= live_since})


def _quota(q: _Query, views: dict[str, dict[str, Any]], platform: Platform) -> None:
    used = {r["tenant"]: r for r in q.rows(
        f"SELECT tenant, files, bytes, messages, stream_bytes FROM quota_usage WHERE "
        f"{q.among} AND day = ?", [*q.tenants, today()])}
    for tenant, v in views.items():
        p = platform.tenants.get(tenant)
        if p is None:
            continue
        row = used.get(tenant, {})
        for quota, allowed in (("files", p.batch.max_files_per_day),
                               ("bytes", int(p.batch.max_bytes_per_day)),
                               ("messages", p.stream.max_messages_per_day),
                               ("stream_bytes", int(p.stream.max_bytes_per_day))):
            n = row.get(quota) or 0
            v["quota"].append({"quota": quota, "used": n, "allowed": allowed,
                               "fraction": n / allowed if allowed else 0.0})


def _latest(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    """The last files (whatever the window) and the decisions of the window, per tenant:
    each an index range scan on (tenant, time)."""
    for tenant, v in views.items():
        v["files"] = [
            {k: r[k] for k in ("source", "outcome", "bytes", "rows_loaded", "rows_rejected",
                               "started_at", "ended_at", "reason", "attempt")}
            for r in q.rows("SELECT * FROM ingestions WHERE tenant = ? AND kind = 'batch' "
                            "ORDER BY started_at DESC LIMIT ?", [tenant, LAST_FILES])]
        v["decisions"] = [
            {k: r[k] for k in ("at", "app", "action", "instances_before", "instances_after",
                               "reason")}
            for r in q.rows("SELECT * FROM decisions WHERE tenant = ? AND at >= ? "
                            "ORDER BY at DESC LIMIT ?", [tenant, q.since, LAST_DECISIONS])]


def _finish(v: dict[str, Any]) -> None:
    """Derived figures: rates per bucket, totals across batch and stream."""
    tot, s = v["totals"], v["series"]
    step = s["t"][1] - s["t"][0]
    s["rows_per_sec"] = [n / step for n in s.pop("rows")]
    s["mib_per_sec"] = [n / step / _MIB for n in s.pop("bytes")]
    lat = tot.pop("_lat", None)
    if lat and lat[0]:
        tot["stream_mean_ms"] = lat[1] / lat[0]
    tot["rows_loaded"] = tot["batch_rows_loaded"] + tot["stream_rows_loaded"]
    tot["rows_rejected"] = tot["batch_rows_rejected"] + tot["dead_letters"]
    # the last minute (or the last bucket, when buckets are longer)
    recent = max(1, round(60 / step))
    tot["rows_per_sec_now"] = sum(s["rows_per_sec"][-recent:]) / recent
    tot["backlog"] = sum(a["backlog"] for a in v["apps"])
    tot["instances_running"] = sum(a["running"] for a in v["apps"])
    tot["instances_desired"] = sum(a["desired"] for a in v["apps"])
    tot["crash_looping"] = any(a["crash_looping"] for a in v["apps"])
    tot["failed_files"] = tot["files"].get("failed", 0)
    tot["rejected_files"] = tot["files"].get("rejected", 0)
    tot["quota_max_fraction"] = max((x["fraction"] for x in v["quota"]), default=0.0)
