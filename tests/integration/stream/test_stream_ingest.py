"""Near-realtime ingestion on the embedded broker: exactly once, poison to the dead-letter
queue with its reason, nothing lost when the sink or an instance fails."""

from __future__ import annotations

import threading
import time

import pytest

from simbdp.coredms.lock import FileLock
from simbdp.stream.heartbeat import heartbeat_path
from simbdp.stream.manager import StreamManager
from simbdp.testing import crash_at_fault, stream_tenant, wait_for

APP = '''
import pyarrow.compute as pc

def upper(data, ctx):
    if pc.any(pc.equal(data["n"], 13)).as_py():
        raise ValueError("unlucky number")
    return data.set_column(data.schema.get_field_index("note"), "note",
                           pc.utf8_upper(data["note"]))
'''


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"e{i}", "n": i, "note": "hello"} for i in range(start, start + n)]


def test_valid_messages_land_once_and_poison_is_dead_lettered(make_stream_env):
    env = make_stream_env()
    env.publish("acme", rows(300), id_field="id")
    env.publish("acme", rows(10), id_field="id")  # duplicates of e0..e9
    env.publish("acme", [b"{not json", b"[1, 2]", b'{"id": "big", "n": 1, "note": "' +
                         b"x" * 3000 + b'"}', {"id": "bad", "n": "lots", "note": "x"}],
                id_prefix="poison")
    env.publish("acme", [{"x": 1}], id_prefix="foreign", table="secrets")
    reports = env.drain()
    assert env.count() == 300
    reasons = {d.id: d.headers["x-reason"] for d in env.dead_letters()}
    assert "not valid JSON" in reasons["poison:0"]
    assert "not a JSON object" in reasons["poison:1"]
    assert "over the limit" in reasons["poison:2"]
    assert "value 'lots' is not int64" in reasons["poison:3"]
    assert "does not own" in reasons["foreign:0"]
    assert len(reasons) == 5
    assert sum(r["rows_loaded"] for r in reports) == 300
    assert any(r["latency_p99_ms"] for r in reports)


def test_app_failure_dead_letters_only_the_poison_message(make_stream_env):
    env = make_stream_env([stream_tenant(entrypoint="w:upper")],
                          apps={"acme": {"w.py": APP}})
    env.publish("acme", rows(40), id_field="id")
    env.drain()
    assert env.count() == 39
    [dead] = env.dead_letters()
    assert dead.id == "e13" and "unlucky number" in dead.headers["x-reason"]


def test_sink_down_for_a_while_loses_nothing(make_stream_env):
    env = make_stream_env()
    env.count()  # creates the tables
    lock = FileLock(env.config.sinks["default"].path / "coredms-acme.lock", "test")
    threading.Timer(1.5, lock.release).start()
    import simbdp.coredms.lock as ds
    old, ds.LOCK_TIMEOUT_SECS = ds.LOCK_TIMEOUT_SECS, 0.3
    try:
        env.publish("acme", rows(100), id_field="id")
        env.drain(secs=30)
    finally:
        ds.LOCK_TIMEOUT_SECS = old
    assert env.count() == 100


@pytest.mark.slow
def test_sigkill_between_commit_and_ack_redelivers_without_duplicates(make_stream_env):
    env = make_stream_env()
    env.publish("acme", rows(500), id_field="id")
    # dies right after its first commit, before the ack
    manager, fault = crash_at_fault(env.platform, env.store, "stream_after_commit")
    committed = env.count()
    assert committed > 0
    fault.unlink()
    try:
        assert wait_for(lambda: (manager.reconcile(), env.count() == 500)[1], secs=60)
    finally:
        manager.shutdown()
    assert env.count() == 500
    restarts = [d for d in env.store.decisions("acme") if d["action"] == "restart"]
    assert restarts and "code 137" in restarts[0]["reason"]


def test_manager_starts_scales_and_stops_instances(make_stream_env):
    env = make_stream_env()
    manager = StreamManager(env.platform, env.store, grace_secs=10)
    env.store.set_desired("acme", "ev", 2)
    manager.reconcile()
    assert manager.status()[("acme", "ev")] == 2
    env.publish("acme", rows(200), id_field="id")
    assert wait_for(lambda: env.count() == 200)
    instances = manager.apps[("acme", "ev")].instances
    # both run their loop (a SIGTERM while an instance still imports ends it by the signal)
    assert wait_for(lambda: all(heartbeat_path(env.config.home, i.id).exists() for i in instances))
    procs = [i.proc for i in instances]
    env.store.set_desired("acme", "ev", 0)
    manager.reconcile()
    assert wait_for(lambda: all(p.poll() is not None for p in procs))
    assert all(p.returncode == 0 for p in procs)  # drained and exited cleanly on SIGTERM
    manager.shutdown()


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_rabbitmq_and_postgres_exactly_once_after_sigkill(make_stream_env, rabbitmq_url, pg_dsn):
    tenant = stream_tenant()
    tenant["tables"] = [{**t, "sinks": ["pg"]} for t in tenant["tables"]]
    env = make_stream_env([tenant], broker={"kind": "rabbitmq", "url": rabbitmq_url},
                          sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    env.publish("acme", rows(400), id_field="id")
    env.publish("acme", [b"{oops"], id_prefix="bad")
    manager, fault = crash_at_fault(env.platform, env.store, "stream_after_commit")
    fault.unlink()
    count = lambda: env.count(sink="pg")  # noqa: E731
    try:
        assert wait_for(lambda: (manager.reconcile(), count() == 400)[1], secs=60)
        assert wait_for(lambda: bool(env.dead_letters()), secs=30)
    finally:
        manager.shutdown()
    assert count() == 400
    assert [d.id for d in env.dead_letters()] == ["bad:0"]


@pytest.mark.postgres
def test_sigkill_between_two_sinks_commits_then_each_sink_gets_each_message_once(
        make_stream_env, pg_dsn):
    """A table in DuckDB and PostgreSQL: killed after DuckDB's commit, before PostgreSQL's.
    The redelivered messages are committed in DuckDB already: they go to PostgreSQL only."""
    tenant = stream_tenant()
    tenant["tables"] = [{**t, "sinks": ["default", "pg"]} for t in tenant["tables"]]
    env = make_stream_env([tenant], sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    env.publish("acme", rows(500), id_field="id")
    # DuckDB committed, PostgreSQL not
    manager, fault = crash_at_fault(env.platform, env.store, "stream_between_sinks")
    assert env.count() > 0 and env.count(sink="pg") == 0
    fault.unlink()
    try:
        assert wait_for(lambda: (manager.reconcile(),
                                 env.count() == env.count(sink="pg") == 500)[1], secs=60)
        time.sleep(1)  # nothing more arrives
    finally:
        manager.shutdown()
    assert env.count() == env.count(sink="pg") == 500


HANGING_APP = '''
import time
import pyarrow.compute as pc

def stuck(data, ctx):
    if pc.any(pc.equal(data["n"], 7)).as_py():
        time.sleep(3600)
    return data
'''


@pytest.mark.slow
def test_app_that_hangs_dead_letters_only_its_message(make_stream_env):
    env = make_stream_env([stream_tenant(entrypoint="h:stuck", timeout_secs=1)],
                          apps={"acme": {"h.py": HANGING_APP}})
    env.publish("acme", rows(16), id_field="id")
    env.drain(secs=60)
    assert env.count() == 15
    [dead] = env.dead_letters()
    assert dead.id == "e7" and "timed out" in dead.headers["x-reason"]


SLOW_APP = '''
import time

def slow(data, ctx):
    time.sleep(0.05)
    return data
'''


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_rabbitmq_restart_mid_consumption_loses_and_duplicates_nothing(make_stream_env,
                                                                       rabbitmq_url):
    import subprocess

    env = make_stream_env([stream_tenant(entrypoint="s:slow", batch_max_rows=50)],
                          broker={"kind": "rabbitmq", "url": rabbitmq_url},
                          apps={"acme": {"s.py": SLOW_APP}})
    env.publish("acme", rows(3000), id_field="id")
    manager = StreamManager(env.platform, env.store, grace_secs=5)
    env.store.set_desired("acme", "ev", 1)
    try:
        manager.reconcile()
        assert wait_for(lambda: env.count() > 0)
        try:
            subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
            time.sleep(1)
            assert env.count() < 3000, "consumed before the restart: make it slower"
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
        assert wait_for(lambda: (manager.reconcile(), env.count() >= 3000)[1], secs=120)
        time.sleep(1)  # anything redelivered after the restart has been looked at
    finally:
        manager.shutdown()
    assert env.count() == 3000
    assert env.dead_letters() == []


def test_poison_is_logged_once_per_micro_batch(make_stream_env):
    from structlog.testing import capture_logs

    env = make_stream_env([stream_tenant(batch_max_rows=500, batch_max_wait_ms=500)])
    env.publish("acme", [b"{broken"] * 120 + [b"[1]"] * 80, id_prefix="bad")
    env.publish("acme", rows(10), id_field="id")
    with capture_logs() as logs:
        env.drain()
    assert env.count() == 10
    assert len(env.dead_letters()) == 200  # every reason is in the dead-letter queue
    lines = [e for e in logs if e["event"] == "dead_lettered"]
    assert 1 <= len(lines) <= 2, len(lines)  # one per micro-batch, not 200
    assert sum(e["count"] for e in lines) == 200
    assert len(lines[0]["first"]) == 3 and "not valid JSON" in lines[0]["first"][0]


@pytest.mark.postgres
def test_nul_byte_is_a_poison_message_for_postgres(make_stream_env, pg_dsn):
    tenant = stream_tenant()
    tenant["tables"] = [{**t, "sinks": ["pg"]} for t in tenant["tables"]]
    env = make_stream_env([tenant], sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    env.publish("acme", [*rows(5), {"id": "nul", "n": 9, "note": "a\x00b"}], id_field="id")
    env.drain()
    assert env.count(sink="pg") == 5
    [dead] = env.dead_letters()
    assert dead.id == "nul" and "NUL" in dead.headers["x-reason"], dead.headers
