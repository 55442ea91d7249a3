"""The streamingestmanager: keeps the running instances of every stream app equal to the
desired count in the state store (set by ``simbdp stream``, the API and the monitor).

Each instance is a process (``python -m simbdp.stream.consumer``). A crashed instance is
restarted with exponential back-off; a stop sends SIGTERM, the instance drains its batch in
flight and exits, and is killed after ``grace_secs`` if it does not.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.state import StateStore

__all__ = ["StreamManager"]


@dataclass
class _Instance:
    id: str
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


@dataclass
class _AppState:
    instances: list[_Instance] = field(default_factory=list)
    stopping: list[_Instance] = field(default_factory=list)
    restarts: int = 0
    next_start: float = 0.0


class StreamManager:
    """Reconciles desired and running stream instances, per (tenant, app)."""

    def __init__(self, platform: Platform, store: StateStore, *, grace_secs: float = 30.0,
                 poll_secs: float = 0.5):
        self.platform, self.store = platform, store
        self.grace_secs, self.poll_secs = grace_secs, poll_secs
        self.apps: dict[tuple[str, str], _AppState] = {}
        self.log = get_logger("simbdp.stream.manager")

    def _spawn(self, tenant: str, app: str) -> _Instance:
        iid = f"{tenant}-{app}-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "simbdp.stream.consumer", "--home",
             str(self.platform.config.home), "--tenant", tenant, "--app", app,
             "--instance", iid], stdin=subprocess.DEVNULL)
        self.log.info("instance_started", tenant=tenant, app=app, instance=iid, pid=proc.pid)
        return _Instance(iid, proc)

    def reconcile(self) -> None:
        """One pass: start, stop and restart instances to match the desired counts."""
        desired = {(r["tenant"], r["app"]): r["instances"] for r in self.store.desired()
                   if r["tenant"] in self.platform.tenants}
        now = time.monotonic()
        for key in set(desired) | set(self.apps):
            st = self.apps.setdefault(key, _AppState())
            want = desired.get(key, 0)
            for inst in [i for i in st.instances if i.proc.poll() is not None]:
                st.instances.remove(inst)
                code = inst.proc.returncode
                st.restarts += 1
                delay = min(30.0, 0.5 * 2 ** min(st.restarts, 6))
                st.next_start = now + delay
                self.store.add_decision(key[0], key[1], "restart",
                                        f"instance {inst.id} exited with code {code}; "
                                        f"restarting in {delay:.1f} s",
                                        len(st.instances) + 1, len(st.instances))
                self.log.warning("instance_died", tenant=key[0], app=key[1], instance=inst.id,
                                 code=code)
            while len(st.instances) > want:
                inst = st.instances.pop()
                inst.proc.send_signal(signal.SIGTERM)
                inst.started = now
                st.stopping.append(inst)
            while len(st.instances) < want and now >= st.next_start:
                st.instances.append(self._spawn(*key))
            for inst in list(st.stopping):
                if inst.proc.poll() is not None:
                    st.stopping.remove(inst)
                elif now - inst.started > self.grace_secs:
                    inst.proc.kill()

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
        self.apps.clear()
