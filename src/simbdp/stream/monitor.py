"""The streamingestmonitor: stores instance reports, enforces daily stream quotas and decides
scaling, by writing desired instance counts that the manager carries out.

Scaling: backlog above the app's ``target_backlog`` or p99 latency above
``target_latency_ms`` in ``high_windows`` consecutive evaluations adds one instance (up to
``max_instances``); no backlog and (almost) no messages in ``idle_windows`` consecutive
evaluations removes one (down to ``min_instances``); after any change the app is left alone
for ``cooldown_secs``, so it does not flap. Every decision is a record with its reason.

A routed tenant's stream apps share one set of instances (``stream/route.py``): they scale
together, as app ``routed``, on the reports of all of them (the tenant queue's backlog, the
highest p99, the messages of all), within the most of their ``min_instances`` and
``max_instances`` and the least of their targets; a decision sets every started app of the
tenant to the new count and is recorded once, as app ``routed``.

The monitor waits out broker outages like an instance does (``stream/retry.py``) and records
each instance's outage, as its report tells it, as a ``broker_reconnected`` decision. A
watchdog restarts its loop, with a fresh broker connection, when the loop has not come round
for ``stuck_secs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from simbdp.errors import BrokerUnavailable
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.profiles.models import AppSpec, TenantProfile
from simbdp.state import StateStore, today
from simbdp.stream.brokers import Broker, open_broker
from simbdp.stream.retry import Backoff, Outage
from simbdp.stream.route import ROUTED, instance_app, scaling_spec

__all__ = ["Decision", "ScalingPolicy", "StreamMonitor"]


@dataclass(frozen=True)
class Decision:
    action: str  # scale_up | scale_down
    instances: int
    reason: str


@dataclass
class _Trend:
    high: int = 0
    idle: int = 0
    changed_at: float = -1e9


@dataclass
class ScalingPolicy:
    """Pure scaling logic with hysteresis; ``observe`` is called once per window."""

    high_windows: int = 2
    idle_windows: int = 3
    cooldown_secs: float = 10.0
    _trends: dict[tuple[str, str], _Trend] = field(default_factory=dict)

    def observe(self, tenant: str, spec: AppSpec, current: int, backlog: int,
                p99_ms: float | None, messages: int, now: float) -> Decision | None:
        t = self._trends.setdefault((tenant, spec.name), _Trend())
        hot = backlog > spec.target_backlog or (p99_ms or 0) > spec.target_latency_ms
        idle = not hot and backlog == 0 and messages <= spec.batch_max_rows // 10
        if now - t.changed_at < self.cooldown_secs:
            t.high = t.idle = 0  # a change needs fresh evidence gathered after it
            return None
        t.high = t.high + 1 if hot else 0
        t.idle = t.idle + 1 if idle else 0
        if t.high >= self.high_windows and current < spec.max_instances:
            t.high, t.changed_at = 0, now
            why = (f"backlog {backlog} > target {spec.target_backlog}"
                   if backlog > spec.target_backlog
                   else f"p99 latency {p99_ms:.0f} ms > target {spec.target_latency_ms} ms")
            return Decision("scale_up", current + 1,
                            f"{why} for {self.high_windows} windows")
        if t.idle >= self.idle_windows and current > spec.min_instances:
            t.idle, t.changed_at = 0, now
            return Decision("scale_down", current - 1,
                            f"idle (no backlog, {messages} messages) for "
                            f"{self.idle_windows} windows")
        return None


class StreamMonitor:
    """Consumes reports from the broker; quota enforcement and scaling decisions."""

    def __init__(self, platform: Platform, store: StateStore,
                 policy: ScalingPolicy | None = None, *, stuck_secs: float | None = None):
        self.platform, self.store = platform, store
        self.policy = policy or ScalingPolicy(
            cooldown_secs=2 * platform.config.report_interval_secs)
        self.log = get_logger("simbdp.stream.monitor")
        self._window: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.stuck_secs = stuck_secs or max(30.0, 10 * platform.config.report_interval_secs)
        self._beat = time.monotonic()

    def apply(self, platform: Platform) -> None:
        """Take a reloaded platform: one attribute swapped, read afresh by each pass."""
        self.platform = platform

    # reports ------------------------------------------------------------------------------
    def ingest_reports(self, reports: list[dict[str, Any]]) -> None:
        for r in reports:
            if r.get("tenant") not in self.platform.tenants:
                continue
            start, secs = r.pop("broker_outage_start", None), r.pop("broker_outage_secs", None)
            if not self.store.add_stream_report(r):
                continue  # delivered again: counted once
            if secs is not None:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start))
                self.store.add_decision(
                    r["tenant"], r["app"], "broker_reconnected",
                    f"instance {r['instance']}: broker away {secs:.1f} s from {when} UTC")
            self.store.add_messages(r["tenant"], today(r["window_end"]), r["messages"],
                                    r["bytes"])
            self._window.setdefault((r["tenant"], r["app"]), []).append(r)

    def evaluate(self, now: float | None = None) -> None:
        """Quotas first, then scaling, from the reports received since the last call."""
        now = time.time() if now is None else now
        desired = {(r["tenant"], r["app"]): r for r in self.store.desired()}
        for profile in self.platform.tenants.values():
            self._enforce_quota(profile, desired)
        desired = {(r["tenant"], r["app"]): r for r in self.store.desired()}
        window, self._window = self._window, {}
        routed: dict[str, list[dict[str, Any]]] = {}  # tenant -> its started stream apps' rows
        for (tenant, app), row in desired.items():
            if (row["paused_reason"] or row["instances"] == 0
                    or tenant not in self.platform.tenants):
                continue
            if instance_app(self.platform.tenants[tenant], app) == ROUTED:
                routed.setdefault(tenant, []).append(row)
                continue
            reports = window.get((tenant, app), [])
            if reports:
                self._scale(tenant, self.platform.tenants[tenant].app(app), [row], reports, now)
        for tenant, rows in routed.items():
            profile = self.platform.tenants[tenant]
            spec = scaling_spec([profile.app(r["app"]) for r in rows])
            reports = [r for a in [*(r["app"] for r in rows), ROUTED]
                       for r in window.get((tenant, a), [])]
            self._scale(tenant, spec, rows, reports, now)

    def _scale(self, tenant: str, spec: AppSpec, rows: list[dict[str, Any]],
               reports: list[dict[str, Any]], now: float) -> None:
        """Observe one window of ``spec``'s reports; a decision sets the desired count of
        each app in ``rows`` (several: a routed tenant's, ``spec`` being theirs together)."""
        if not reports:
            return
        current = max(r["instances"] for r in rows)
        backlog = max(r["backlog"] for r in reports)
        p99s = [r["latency_p99_ms"] for r in reports if r["latency_p99_ms"] is not None]
        messages = sum(r["messages"] for r in reports)
        d = self.policy.observe(tenant, spec, current, backlog, max(p99s) if p99s else None,
                                messages, now)
        if d is None:
            return
        profile = self.platform.tenants[tenant]
        for row in rows:
            self.store.set_desired(tenant, row["app"],
                                   min(d.instances, profile.app(row["app"]).max_instances))
        self.store.add_decision(tenant, spec.name, d.action, d.reason, current, d.instances)
        self.log.info(d.action, tenant=tenant, app=spec.name, instances=d.instances,
                      reason=d.reason)

    def _enforce_quota(self, profile: TenantProfile, desired: dict[tuple[str, str], Any]
                       ) -> None:
        tenant, limits = profile.tenant_id, profile.stream
        used = self.store.usage(tenant, today())
        over = None
        if used["messages"] > limits.max_messages_per_day:
            over = f"{used['messages']} messages today, over the quota of " \
                   f"{limits.max_messages_per_day}"
        elif used["stream_bytes"] > limits.max_bytes_per_day:
            over = f"{used['stream_bytes']} bytes today, over the quota of " \
                   f"{int(limits.max_bytes_per_day)}"
        for spec in profile.stream_apps():
            row = desired.get((tenant, spec.name))
            if row is None:
                continue
            if over and not row["paused_reason"] and row["instances"] > 0:
                self.store.set_desired(tenant, spec.name, 0, paused_reason=over)
                self.store.add_decision(tenant, spec.name, "pause",
                                        f"tenant {tenant!r}: {over}; consumption paused until "
                                        "tomorrow or a higher quota", row["instances"], 0)
                self.log.warning("quota_pause", tenant=tenant, app=spec.name, reason=over)
            elif not over and row["paused_reason"]:
                n = max(1, spec.min_instances)
                self.store.set_desired(tenant, spec.name, n)
                self.store.add_decision(tenant, spec.name, "resume",
                                        "quota available again (new day or raised limit)", 0, n)

    # loop --------------------------------------------------------------------------------
    async def _loop(self, stop: threading.Event, broker: Broker) -> None:
        outage, backoff = Outage(self.log), Backoff()
        interval = self.platform.config.report_interval_secs
        next_eval = time.monotonic() + interval
        while not stop.is_set():
            self._beat = time.monotonic()
            try:
                await broker.connect()
                reports = await broker.fetch_reports(1000, min(0.5, interval))
            except BrokerUnavailable as e:
                outage.lost(str(e))
                await broker.close()
                await backoff.wait(stop)
                continue
            outage.back()
            backoff.reset()
            self.ingest_reports(reports)
            if time.monotonic() >= next_eval:
                self.evaluate()
                next_eval = time.monotonic() + interval
        await broker.close()

    async def _supervised(self, stop: threading.Event) -> None:
        broker = open_broker(self.platform.config.broker)
        self._beat = time.monotonic()
        task = asyncio.create_task(self._loop(stop, broker))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                silent = time.monotonic() - self._beat
                if not task.done() and silent > self.stuck_secs:
                    self.log.error("monitor_stuck", silent_secs=round(silent, 1),
                                   reason="the report loop has not come round; restarting it")
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
            task.result()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.close(), 5)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (in its own thread and event loop); a loop that is
        stuck or fails is logged and started again."""
        while not stop.is_set():
            try:
                asyncio.run(self._supervised(stop))
            except Exception as e:  # keep monitoring: scaling and quotas depend on it
                self.log.error("monitor_failed", reason=f"{type(e).__name__}: {e}")
                stop.wait(1.0)
