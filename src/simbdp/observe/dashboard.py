"""The monitoring view (web dashboard and ``simbdp top``): per tenant figures over a window.

Everything is read from the records the CLI and ``/metrics`` read (``ingestions``,
``stream_reports``, ``decisions``, ``stream_desired``, ``quota_usage``) and aggregated in SQL:
the store answers with a few rows per tenant and time bucket whatever the number of records,
on SQLite and PostgreSQL alike. Batch figures are read per (tenant, time bucket) from a
covering index, so nothing sorts all the window's records; file-time p50/p99 are estimated
from a histogram (the buckets of ``/metrics``), exact where a bucket holds one value.

A batch record belongs to the window it started in; its rows and bytes are plotted in the
bucket where it ended (a record not finished yet, where it started). Stream figures come from
the instances' reports, placed at the end of their report window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from simbdp.observe.histogram import BATCH_SECS_BUCKETS, bucket_sql, quantile
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.state.store import OUTCOMES, today

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
#: outcomes listed with their reasons, in this order (then files loaded with rows rejected)
_PROBLEMS = ("failed", "interrupted", "rejected", "waiting")
#: threads running the batch buckets' queries, each with its own connection to the store
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="simbdp-dashboard")
#: an instance that reported within this many report intervals counts as running (as /metrics)
_RUNNING_INTERVALS = 3
_MIB = 1024 * 1024


def visible_tenants(platform: Platform, tenant: str | None) -> list[str]:
    """The tenants a caller sees: one tenant, or (operator, ``None``) every tenant, broken
    profiles included."""
    if tenant is not None:
        return [tenant]
    return sorted(set(platform.tenants) | set(platform.broken))


class _Query:
    def __init__(self, store: StateStore, tenants: Sequence[str], since: float, step: float):
        self.db, self.tenants, self.since, self.step = store.db, list(tenants), since, step

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

    def joined(self, expr: str) -> str:
        """The texts of a group joined with ``;`` (an aggregate)."""
        return f"string_agg({expr}, ';')" if self.db.dialect == "postgres" \
            else f"group_concat({expr}, ';')"

    def indexed(self, table: str, index: str) -> str:
        """``table`` read through ``index`` on SQLite, whose planner may otherwise take an
        index that avoids the sort of a ``GROUP BY`` and read the whole table."""
        return table if self.db.dialect == "postgres" else f"{table} INDEXED BY {index}"

    def real(self, expr: str) -> str:
        """A float as text that reads back as the same float."""
        return f"CAST({expr} AS TEXT)" if self.db.dialect == "postgres" \
            else f"printf('%!.17g', {expr})"


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
        # the two halves of the batch buckets in the pool's threads, the problem files' reasons
        # in this one: each SQLite or PostgreSQL query runs without holding the GIL
        halves = [_POOL.submit(_batch_rows, q, lo, hi)
                  for lo, hi in ((0, POINTS // 2 - 1), (POINTS // 2, POINTS - 1))]
        _problem_reasons(q, views)
        _batch(q, views, [r for h in halves for r in h.result()])
        _top_reasons(views)
        _stream(q, views)
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


def _batch_rows(q: _Query, first: int, last: int) -> list[dict[str, Any]]:
    """Per tenant and time bucket ``first`` to ``last``: the finished records that ended in it
    grouped by outcome, file-time histogram bucket and rows rejected or not, the groups joined
    in one text ``v`` (None when there are none). One range scan of the covering index
    ``ingestions_tenant_ended`` per (tenant, bucket), so nothing sorts all the window's
    records (SQLite has no hash aggregation: one ``GROUP BY`` over 1M records sorts them
    all)."""
    lat = bucket_sql("ended_at - started_at")
    group = (f"outcome || ':' || lb || ':' || rj || ':' || COUNT(*) || ':' || SUM(rows_loaded) "
             f"|| ':' || SUM(rows_rejected) || ':' || SUM(bytes) || ':' || {q.real('MIN(d)')} "
             f"|| ':' || {q.real('MAX(d)')} || ':' || {q.real('MAX(started_at)')}")
    tenants = ", ".join("(CAST(? AS TEXT))" for _ in q.tenants)
    finals = ", ".join(f"'{o}'" for o in OUTCOMES)
    return q.rows(
        f"WITH RECURSIVE tn(t) AS (VALUES {tenants}), "
        "bk(i) AS (SELECT CAST(? AS INTEGER) UNION ALL SELECT i + 1 FROM bk WHERE i < ?) "
        f"SELECT tn.t AS tenant, bk.i AS b, (SELECT {q.joined('g')} FROM (SELECT {group} AS g "
        "FROM (SELECT outcome, rows_loaded, rows_rejected, bytes, started_at, "
        "ended_at - started_at AS d, CASE WHEN rows_rejected > 0 THEN 1 ELSE 0 END AS rj, "
        f"CASE WHEN outcome <> 'processed' THEN -1 ELSE {lat} END AS lb "
        f"FROM {q.indexed('ingestions', 'ingestions_tenant_ended')} "
        f"WHERE tenant = tn.t AND kind = 'batch' AND outcome IN ({finals}) "
        "AND ended_at >= ? + bk.i * ? AND ended_at < "
        "CASE WHEN bk.i = ? THEN ? ELSE ? + (bk.i + 1) * ? END AND started_at >= ?) x "
        "GROUP BY outcome, lb, rj) y) AS v FROM tn CROSS JOIN bk",
        [*q.tenants, first, last, q.since, q.step, POINTS - 1, math.inf, q.since, q.step,
         q.since])


def _batch(q: _Query, views: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Files, rows, bytes and file-time percentiles per tenant, per time bucket and over the
    window, from :func:`_batch_rows` and the records not finished yet."""
    hists = {t: _Hist() for t in views}
    for r in rows:
        v, b, bucket = views[r["tenant"]], _at(r["b"]), _Hist()
        for g in r["v"].split(";") if r["v"] else ():
            outcome, lb, rj, n, loaded, rejected, nbytes, lo, hi, last = g.split(":")
            _count(v, b, outcome, int(n), int(loaded), int(rejected),
                   int(nbytes) if outcome == "processed" else 0)
            if int(lb) >= 0:
                bucket.add(int(lb), int(n), float(lo), float(hi))
            if rj == "1" and outcome not in _PROBLEMS:
                # files loaded with rows rejected: one entry per outcome, no reason (the
                # rows' reasons are in the rejected-rows files)
                _reason(v, outcome, None, int(n), int(rejected), float(last))
        hists[r["tenant"]].merge(bucket)
        for pct in (50, 99):
            v["series"][f"batch_p{pct}_secs"][b] = bucket.quantile(pct)
    for tenant, h in hists.items():
        for pct in (50, 99):
            views[tenant]["totals"][f"batch_p{pct}_secs"] = h.quantile(pct)
    _unfinished(q, views)


def _unfinished(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    """Records not finished yet (running, or waiting for a sink: few, found through the
    outcome index), plotted where they started; those waiting listed with their reasons."""
    for r in q.rows(
            f"SELECT tenant, outcome, reason, {q.bucket('started_at')} AS b, COUNT(*) AS n, "
            "SUM(rows_loaded) AS loaded, SUM(rows_rejected) AS rejected, "
            "MAX(started_at) AS last_at FROM ingestions WHERE outcome IN ('running', 'waiting') "
            "AND kind = 'batch' AND started_at >= ? GROUP BY tenant, outcome, reason, b",
            [q.since, q.step, q.since]):
        v = views.get(r["tenant"])
        if v is None:
            continue
        _count(v, _at(r["b"]), r["outcome"], r["n"], _i(r["loaded"]), _i(r["rejected"]), 0)
        if r["outcome"] == "waiting":
            _reason(v, "waiting", r["reason"], r["n"], _i(r["rejected"]), r["last_at"])


def _reason(v: dict[str, Any], outcome: str, reason: str | None, n: int, rejected: int,
            last: float) -> None:
    """Count files in ``v``'s reason entry (``outcome``, ``reason``)."""
    e = v.setdefault("_reasons", {}).setdefault((outcome, reason), {
        "outcome": outcome, "reason": reason, "files": 0, "rows_rejected": 0, "last_at": last})
    e["files"] += n
    e["rows_rejected"] += rejected
    e["last_at"] = max(e["last_at"], last)


def _count(v: dict[str, Any], b: int, outcome: str, n: int, loaded: int, rejected: int,
           nbytes: int) -> None:
    tot, s = v["totals"], v["series"]
    tot["files"][outcome] = tot["files"].get(outcome, 0) + n
    tot["batch_rows_loaded"] += loaded
    tot["batch_rows_rejected"] += rejected
    tot["bytes"] += nbytes
    s["rows"][b] += loaded
    s["bytes"][b] += nbytes


class _Hist:
    """File times in the buckets of :data:`BATCH_SECS_BUCKETS` (and above them): the count,
    smallest and largest per bucket. Percentiles from it are estimates (``quantile``)."""

    def __init__(self) -> None:
        size = len(BATCH_SECS_BUCKETS) + 1
        self.counts, self.lows, self.highs = [0] * size, [math.inf] * size, [-math.inf] * size

    def add(self, i: int, n: int, lo: float, hi: float) -> None:
        self.counts[i] += n
        self.lows[i], self.highs[i] = min(self.lows[i], lo), max(self.highs[i], hi)

    def merge(self, other: _Hist) -> None:
        for i, n in enumerate(other.counts):
            if n:
                self.add(i, n, other.lows[i], other.highs[i])

    def quantile(self, pct: int) -> float | None:
        return quantile(self.counts, self.lows, self.highs, pct)


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


def _problem_reasons(q: _Query, views: dict[str, dict[str, Any]]) -> None:
    """Finished files of a problem outcome (failed, interrupted, rejected) grouped by reason:
    a range of the (tenant, kind, outcome, ended_at, ...) index, only these rows read from the
    table."""
    finished = ", ".join(f"'{o}'" for o in _PROBLEMS if o != "waiting")
    for r in q.rows(
            "SELECT tenant, outcome, reason, COUNT(*) AS files, "
            "SUM(rows_rejected) AS rows_rejected, MAX(started_at) AS last_at "
            f"FROM {q.indexed('ingestions', 'ingestions_tenant_ended')} WHERE {q.among} "
            "AND kind = 'batch' AND ended_at >= ? AND started_at >= ? "
            f"AND outcome IN ({finished}) GROUP BY tenant, outcome, reason",
            [*q.tenants, q.since, q.since]):
        _reason(views[r["tenant"]], r["outcome"], r["reason"], r["files"],
                _i(r["rows_rejected"]), r["last_at"])


def _top_reasons(views: dict[str, dict[str, Any]]) -> None:
    """Why files failed, were interrupted or rejected, wait for a sink, and files loaded with
    rows rejected: per tenant the first TOP_REASONS (in the order of ``_PROBLEMS``, then by
    files, then the latest); no reason groups as ``None``. Entries come from
    :func:`_problem_reasons`, :func:`_batch` (files loaded with rows rejected: one entry per
    outcome) and :func:`_unfinished` (files waiting)."""
    order = {o: i for i, o in enumerate(_PROBLEMS)}
    for v in views.values():
        found = sorted(v.pop("_reasons", {}).values(), key=lambda e: (
            order.get(e["outcome"], len(order)), -e["files"], -e["last_at"]))
        v["reasons"] = found[:TOP_REASONS]


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
