"""Stream instances and the monitor recover by themselves: a broker that restarts (RabbitMQ
``stop_app``/``start_app``, a NATS server killed and started again), a stuck instance, a
manager that dies, a crash long after the last one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from simbdp.errors import BrokerUnavailable
from simbdp.state import StateStore, today
from simbdp.stream.client import make_messages, publish
from simbdp.stream.heartbeat import heartbeat_path
from simbdp.stream.manager import StreamManager
from simbdp.stream.monitor import StreamMonitor
from simbdp.testing import stream_tenant, wait_for

TENANTS = ("acme", "beta")


def rows(n: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}{i}", "n": i, "note": "after"} for i in range(n)]


@contextmanager
def serving(env) -> Iterator[StreamManager]:  # type: ignore[no-untyped-def]
    """The stream manager and the monitor in threads, as ``simbdp serve`` runs them."""
    stop = threading.Event()
    stores = [StateStore.open(env.config) for _ in range(2)]
    manager = StreamManager(env.platform, stores[0])
    monitor = StreamMonitor(env.platform, stores[1])
    threads = [threading.Thread(target=part.run, args=(stop,), daemon=True)
               for part in (manager, monitor)]
    for t in threads:
        t.start()
    try:
        yield manager
    finally:
        stop.set()
        began = time.monotonic()
        for t in threads:
            t.join(timeout=30)
        took = time.monotonic() - began
        alive = [t.name for t in threads if t.is_alive()]
        for s in stores:
            s.close()
        assert not alive, f"still running 30 s after stop: {alive}"
        assert took < 15, f"the manager and the monitor took {took:.0f} s to stop"


def _instances(manager: StreamManager) -> list:  # type: ignore[type-arg]
    return [i for st in list(manager.apps.values()) for i in st.instances]


def _publish_retrying(env, tenant: str, msgs: list, secs: float = 60) -> None:  # type: ignore[no-untyped-def]
    """Publish as a careful client does after an outage: retry until confirmed."""
    deadline = time.monotonic() + secs
    while True:
        try:
            asyncio.run(publish(env.platform, tenant, msgs))
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _outage_then_publish(env, manager, outage, down_secs: float) -> None:  # type: ignore[no-untyped-def]
    """Idle instances, the broker away ``down_secs``, then 100 messages per tenant: all rows
    land within seconds, the monitor's figures are right, the outage is recorded."""
    for t in TENANTS:
        env.store.set_desired(t, "ev", 1)
    home = env.config.home
    assert wait_for(lambda: len(_instances(manager)) == 2 and all(
        heartbeat_path(home, i.id).exists() for i in _instances(manager)))
    assert wait_for(lambda: all(env.store.stream_reports(t, "ev", limit=1) for t in TENANTS))
    victim = _instances(manager)[0]
    with outage():
        time.sleep(1)
        # SIGTERM ends an instance within a bounded time, even with its broker away
        began = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        victim.proc.wait(timeout=15)
        assert time.monotonic() - began < 12
        time.sleep(max(0.0, down_secs - (time.monotonic() - began) - 1))
    back = time.monotonic()
    for t in TENANTS:
        _publish_retrying(env, t, make_messages(rows(100, t), id_field="id"))
    assert wait_for(lambda: all(env.count(t) == 100 for t in TENANTS), secs=30), \
        {t: env.count(t) for t in TENANTS}
    assert time.monotonic() - back < 30
    # the monitor consumes reports again: today's messages and a backlog of 0
    assert wait_for(lambda: all(env.store.usage(t, today())["messages"] == 100
                                for t in TENANTS), secs=20), \
        {t: env.store.usage(t, today()) for t in TENANTS}
    assert wait_for(lambda: all(env.store.stream_reports(t, "ev", limit=1)[0]["backlog"] == 0
                                for t in TENANTS), secs=20)
    survivor_tenant = next(t for t in TENANTS if not victim.id.startswith(t))
    outages = [d for d in env.store.decisions(survivor_tenant)
               if d["action"] == "broker_reconnected"]
    assert outages, "the surviving instance reported no outage"
    secs = float(outages[0]["reason"].split("broker away ")[1].split(" s")[0])
    assert down_secs - 3 < secs < down_secs + 30
    from typer.testing import CliRunner

    from simbdp.cli.main import app
    status = CliRunner().invoke(app, ["stream", "status", "--home", str(home)],
                                env={"COLUMNS": "300"})
    assert status.exit_code == 0, status.output
    # the first table (stream apps; the decisions table follows)
    line = next(ln for ln in status.output.splitlines() if ln.startswith(f"│ {survivor_tenant} "))
    assert f"broker away {secs:.1f} s" in line, status.output


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_idle_instances_and_monitor_survive_a_rabbitmq_restart(make_stream_env, rabbitmq_url):
    env = make_stream_env([stream_tenant(t) for t in TENANTS],
                          broker={"kind": "rabbitmq", "url": rabbitmq_url})

    @contextmanager
    def outage() -> Iterator[None]:
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
        try:
            yield
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)

    with serving(env) as manager:
        _outage_then_publish(env, manager, outage, down_secs=10)


@pytest.mark.nats
@pytest.mark.slow
def test_idle_instances_and_monitor_survive_a_nats_restart(make_stream_env, own_nats,
                                                           unique_prefix):
    env = make_stream_env([stream_tenant(t) for t in TENANTS],
                          broker={"kind": "nats", "url": own_nats.url})

    @contextmanager
    def outage() -> Iterator[None]:
        own_nats.kill()
        try:
            yield
        finally:
            own_nats.start()

    with serving(env) as manager:
        _outage_then_publish(env, manager, outage, down_secs=8)


def test_a_stuck_instance_is_killed_and_restarted(make_stream_env):
    env = make_stream_env()
    manager = StreamManager(env.platform, env.store, stuck_secs=3)
    env.store.set_desired("acme", "ev", 1)
    try:
        manager.reconcile()
        [inst] = manager.apps[("acme", "ev")].instances
        assert wait_for(lambda: heartbeat_path(env.config.home, inst.id).exists())
        os.kill(inst.proc.pid, signal.SIGSTOP)  # alive, but its loop no longer turns
        assert wait_for(lambda: (manager.reconcile(), inst.proc.poll() is not None)[1], secs=15)
        assert wait_for(lambda: (manager.reconcile(),
                                 len(manager.apps[("acme", "ev")].instances) == 1)[1])
        env.publish("acme", rows(50, "s"), id_field="id")
        assert wait_for(lambda: (manager.reconcile(), env.count() == 50)[1])
    finally:
        manager.shutdown()
    [restart] = [d for d in env.store.decisions("acme") if d["action"] == "restart"]
    assert "stuck (no heartbeat)" in restart["reason"]
    assert not heartbeat_path(env.config.home, inst.id).exists()


def test_crash_back_off_resets_after_a_healthy_run(make_stream_env):
    env = make_stream_env()
    manager = StreamManager(env.platform, env.store, healthy_secs=2)
    env.store.set_desired("acme", "ev", 1)
    key = ("acme", "ev")
    try:
        manager.reconcile()
        manager.apps[key].restarts = 6  # many crashes long ago: the back-off is at its cap
        [inst] = manager.apps[key].instances
        time.sleep(2.5)
        inst.proc.kill()
        inst.proc.wait()
        manager.reconcile()
        [restart] = [d for d in env.store.decisions("acme") if d["action"] == "restart"]
        assert "restarting in 1.0 s" in restart["reason"]
        # a crash right after a start still backs off further
        assert wait_for(lambda: (manager.reconcile(), len(manager.apps[key].instances) == 1)[1])
        [inst] = manager.apps[key].instances
        inst.proc.kill()
        inst.proc.wait()
        manager.reconcile()
        latest = next(d for d in env.store.decisions("acme") if d["action"] == "restart")
        assert "restarting in 2.0 s" in latest["reason"]
    finally:
        manager.shutdown()


MANAGER = '''
import sys, time
from pathlib import Path
from simbdp.profiles import load_platform
from simbdp.state import StateStore
from simbdp.stream.manager import StreamManager

platform = load_platform(Path(sys.argv[1]))
m = StreamManager(platform, StateStore.open(platform.config))
m.reconcile()
print("PID", m.apps[("acme", "ev")].instances[0].proc.pid, flush=True)
time.sleep(3600)
'''


def test_instances_die_with_their_manager(make_stream_env):
    env = make_stream_env()
    env.store.set_desired("acme", "ev", 1)
    mgr = subprocess.Popen([sys.executable, "-c", MANAGER, str(env.config.home)],
                           stdout=subprocess.PIPE, text=True)
    pid = 0
    try:
        assert mgr.stdout is not None
        line = ""
        while not line.startswith("PID "):  # after the manager's log lines
            line = mgr.stdout.readline()
        pid = int(line.split()[1])
        assert wait_for(lambda: any(heartbeat_path(env.config.home, "").parent.glob("*.alive")))
        mgr.kill()  # serve dies alone, without stopping its instances
        mgr.wait()

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a zombie (reaped by init shortly) is gone too
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")
        assert wait_for(gone, secs=15), "the instance outlived its manager"
        assert not any(heartbeat_path(env.config.home, "").parent.glob("*.alive"))
    finally:
        mgr.kill()
        if pid:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.nats
def test_cli_publish_says_how_many_were_confirmed_before_the_broker_failed(
        make_stream_env, own_nats, tmp_path):
    from typer.testing import CliRunner

    from simbdp.cli.main import app

    env = make_stream_env(broker={"kind": "nats", "url": own_nats.url})
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(f'{{"id": "c{i}", "n": {i}, "note": "x"}}\n'
                             for i in range(10_000)))
    threading.Timer(1.5, own_nats.kill).start()  # mid-way through, at 2,000 messages/s
    result = CliRunner().invoke(app, ["publish", str(lines), "--tenant", "acme",
                                      "--rate", "2000", "--home", str(env.config.home)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    confirmed = int(text.split(" of 10000 message(s) were confirmed")[0].split()[-1])
    assert 0 < confirmed < 10_000 and confirmed % 1000 == 0, text
    assert "publishing the same file again is safe" in text
    own_nats.start()

    async def waiting() -> int:
        from simbdp.stream.brokers import open_broker
        b = open_broker(env.config.broker)
        try:
            return await b.backlog("acme")
        finally:
            await b.close()
    assert asyncio.run(waiting()) >= confirmed  # every confirmed one is there
