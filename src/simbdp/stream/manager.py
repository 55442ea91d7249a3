"""The streamingestmanager: keeps the running instances of every stream app equal to the
desired count in the state store (set by ``simbdp stream``, the API and the monitor).

Each instance is a process (``python -m simbdp.stream.consumer``). A crashed instance is
restarted with exponential back-off, reset once an instance has run ``healthy_secs``; a stop
sends SIGTERM, the instance drains its batch in flight and exits, and is killed after
``grace_secs`` if it does not. An instance whose heartbeat file has not been touched for
``stuck_secs`` is stuck: it is killed and restarted. Instances die with the manager: Linux
sends them SIGTERM when the thread that started them ends, so call ``reconcile`` from the one
long-lived thread that runs the manager (``run``).

A tenant whose profile routes by message type (``stream.route_by``) runs one set of instances
for all its stream apps, under the app name ``routed`` (``stream/route.py``): as many as the
most wanted of its stream apps' desired counts. When a profile change turns routing on or off,
the new instances start once the old ones have drained (never both kinds at once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.profiles.models import TenantProfile
from simbdp.state import StateStore
from simbdp.stream.heartbeat import heartbeat_path
from simbdp.stream.route import ROUTED, instance_app

__all__ = ["StreamManager"]


def _spec(profile: TenantProfile, app: str) -> object:
    """What an instance of ``app`` runs with: its spec (a routed tenant's: those of all its
    stream apps), the tables and sinks, the limits (not the batch part of the profile)."""
    specs = (profile.stream_apps() if app == ROUTED and profile.routed
             else [a for a in profile.apps if a.name == app])
    return (profile.model_dump(exclude={"batch", "apps"}), [a.model_dump() for a in specs])


@dataclass
class _Instance:
    id: str
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    stuck: bool = False


@dataclass
class _AppState:
    instances: list[_Instance] = field(default_factory=list)
    stopping: list[_Instance] = field(default_factory=list)
    restarts: int = 0
    next_start: float = 0.0
    #: the profile changed: no new instance starts until the old ones have drained
    reloading: bool = False


class StreamManager:
    """Reconciles desired and running stream instances, per (tenant, app)."""

    def __init__(self, platform: Platform, store: StateStore, *, grace_secs: float = 10.0,
                 poll_secs: float = 0.5, healthy_secs: float = 60.0,
                 stuck_secs: float | None = None):
        self.platform, self.store = platform, store
        self.grace_secs, self.poll_secs = grace_secs, poll_secs
        self.healthy_secs = healthy_secs
        # an instance beats at least every second while its loop runs; a broker call is
        # bounded (15 s), so ten report intervals of silence mean it is stuck
        self.stuck_secs = stuck_secs or max(30.0, 10 * platform.config.report_interval_secs)
        self.apps: dict[tuple[str, str], _AppState] = {}
        self.log = get_logger("simbdp.stream.manager")
        self._pending: Platform | None = None
        self._pending_lock = threading.Lock()

    def apply(self, platform: Platform) -> None:
        """Take a reloaded platform (any thread); the next ``reconcile`` acts on it."""
        with self._pending_lock:
            self._pending = platform

    def _refresh(self, now: float) -> None:
        """Switch to the platform handed to :meth:`apply`. Instances of an app whose spec
        (or its tenant's tables or sinks) changed drain and are then started again with the
        new profile (an instance reads it when it starts); those of removed tenants stop."""
        with self._pending_lock:
            new, self._pending = self._pending, None
        if new is None:
            return
        old, self.platform = self.platform, new
        for (tenant, app), st in self.apps.items():
            before, after = old.tenants.get(tenant), new.tenants.get(tenant)
            if before is None or after is None or not st.instances:
                continue  # a removed tenant's instances stop: it has no desired count now
            if _spec(before, app) == _spec(after, app):
                continue
            n = len(st.instances)
            for inst in st.instances:
                inst.proc.send_signal(signal.SIGTERM)
                inst.started = now
            st.stopping.extend(st.instances)
            st.instances.clear()
            st.reloading = True
            reason = f"the profile of tenant {tenant!r} changed; restarting {n} instance(s) " \
                     "with it once they have drained"
            self.store.add_decision(tenant, app, "restart", reason, n, 0)
            self.log.info("instances_reloading", tenant=tenant, app=app, instances=n,
                          reason=reason)

    def _spawn(self, tenant: str, app: str) -> _Instance:
        iid = f"{tenant}-{app}-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "simbdp.stream.consumer", "--home",
             str(self.platform.config.home), "--tenant", tenant, "--app", app,
             "--instance", iid, "--parent-pid", str(os.getpid())], stdin=subprocess.DEVNULL)
        self.log.info("instance_started", tenant=tenant, app=app, instance=iid, pid=proc.pid)
        return _Instance(iid, proc)

    def reconcile(self) -> None:
        """One pass: start, stop and restart instances to match the desired counts."""
        now = time.monotonic()
        self._refresh(now)
        desired: dict[tuple[str, str], int] = {}
        for r in self.store.desired():
            profile = self.platform.tenants.get(r["tenant"])
            if profile is None or not profile.enabled:
                continue
            key = (r["tenant"], instance_app(profile, r["app"]))
            desired[key] = max(desired.get(key, 0), r["instances"])
        for key in set(desired) | set(self.apps):
            st = self.apps.setdefault(key, _AppState())
            want = desired.get(key, 0)
            for inst in st.instances:
                self._kill_if_stuck(key, inst)
            for inst in [i for i in st.instances if i.proc.poll() is not None]:
                st.instances.remove(inst)
                self._forget(inst)
                code = inst.proc.returncode
                if now - inst.started >= self.healthy_secs:
                    st.restarts = 0  # it ran well for a while: this is a fresh crash
                st.restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(st.restarts, 6))
                st.next_start = now + delay
                self.store.add_decision(key[0], key[1], "restart",
                                        f"instance {inst.id} "
                                        f"{'was stuck (no heartbeat), ' if inst.stuck else ''}"
                                        f"exited with code {code}; "
                                        f"restarting in {delay:.1f} s",
                                        len(st.instances) + 1, len(st.instances))
                self.log.warning("instance_died", tenant=key[0], app=key[1], instance=inst.id,
                                 code=code)
            while len(st.instances) > want:
                inst = st.instances.pop()
                inst.proc.send_signal(signal.SIGTERM)
                inst.started = now
                st.stopping.append(inst)
            for inst in list(st.stopping):
                if inst.proc.poll() is not None:
                    st.stopping.remove(inst)
                    self._forget(inst)
                elif now - inst.started > self.grace_secs:
                    inst.proc.kill()
            if st.reloading and not st.stopping:
                st.reloading = False  # drained: start again with the new profile
            while (len(st.instances) < want and now >= st.next_start and not st.reloading
                   and not self._other_kind_draining(key)):
                st.instances.append(self._spawn(*key))

    def _other_kind_draining(self, key: tuple[str, str]) -> bool:
        """Whether instances of the tenant that route differently (routed vs one app) are
        still draining after a profile change: one kind at a time on the tenant's queue."""
        tenant, routed = key[0], key[1] == ROUTED
        return any(k[0] == tenant and (k[1] == ROUTED) != routed and st.reloading
                   for k, st in self.apps.items())

    def _kill_if_stuck(self, key: tuple[str, str], inst: _Instance) -> None:
        if inst.proc.poll() is not None:
            return
        try:
            silent = time.time() - heartbeat_path(self.platform.config.home,
                                                  inst.id).stat().st_mtime
        except FileNotFoundError:  # not started yet: count from its start
            silent = time.monotonic() - inst.started
        if silent > self.stuck_secs:
            self.log.error("instance_stuck", tenant=key[0], app=key[1], instance=inst.id,
                           silent_secs=round(silent, 1),
                           reason=f"no heartbeat for {silent:.0f} s; killing it to restart")
            inst.stuck = True
            inst.proc.kill()
            inst.proc.wait()

    def _forget(self, inst: _Instance) -> None:
        heartbeat_path(self.platform.config.home, inst.id).unlink(missing_ok=True)

    def status(self) -> dict[tuple[str, str], int]:
        return {k: len(v.instances) for k, v in self.apps.items()}

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop`` is set; then stop every instance (they drain first)."""
        while not stop.is_set():
            try:
                self.reconcile()
            except Exception as e:  # keep managing the other tenants
                self.log.error("reconcile_failed", reason=f"{type(e).__name__}: {e}")
            stop.wait(self.poll_secs)
        self.shutdown()

    def shutdown(self) -> None:
        procs = [i.proc for st in self.apps.values() for i in st.instances + st.stopping]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_secs
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for st in self.apps.values():
            for inst in st.instances + st.stopping:
                self._forget(inst)
        self.apps.clear()
