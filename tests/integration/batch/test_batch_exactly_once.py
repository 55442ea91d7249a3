"""Crashes and restarts neither lose nor duplicate rows; tenants share workers fairly."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from simbdp.batch import BatchIngestManager
from simbdp.datagen import write_reddit_csv
from simbdp.state import StateStore
from simbdp.testing import drop, tenant_profile

SLOW_APP = "import time\n\ndef slow(data, ctx):\n    time.sleep(0.1)\n    return data\n"


def slow_env(make_env, **kw):  # type: ignore[no-untyped-def]
    """An identity app that takes 0.1 s per 1 MB chunk: a 40 MB file takes about 4 s."""
    apps = [{"name": "slow", "entrypoint": "slow:slow", "tables": ["comments"]}]
    return make_env([tenant_profile("acme", apps=apps)], apps={"acme": {"slow.py": SLOW_APP}},
                    chunk_bytes=1024 * 1024, **kw)


def _restart(env):  # type: ignore[no-untyped-def]
    """A new manager process on the same home, as after a crash of the old one."""
    store = StateStore.open(env.config)
    manager = BatchIngestManager(env.platform, store)
    manager.recover()
    return store, manager


def _wait_until_scanned(manager, n, timeout=10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    got = 0
    while got < n and time.monotonic() < deadline:
        got += manager.scan()
        time.sleep(0.05)
    return got


@pytest.mark.slow
def test_sigkill_mid_large_file_then_restart_loads_exact_count(make_env):
    env = slow_env(make_env, stable_secs=0.0)
    rows = 300_000
    write_reddit_csv(env.staging("acme") / "big.csv", rows)
    env.manager.submit("acme", [env.staging("acme") / "big.csv"])
    env.manager.pump()
    [run] = env.manager.pool.running.values()
    # wait until the worker is well into the file, then kill it without warning
    time.sleep(1.5)
    assert run.process.is_alive() and not run.conn.poll(), \
        "file finished before the kill: make it bigger"
    os.kill(run.process.pid, signal.SIGKILL)
    run.process.join()
    assert env.count("acme") == 0  # its transaction never committed
    # the manager itself is gone too: a new one recovers and takes the file again
    store, manager = _restart(env)
    assert _wait_until_scanned(manager, 1) == 1
    manager.run_until_idle(timeout_secs=120)
    recs = store.records("acme")
    assert {r["outcome"] for r in recs} == {"interrupted", "processed"}
    assert env.count("acme") == rows
    assert "big.csv" in env.outcome_files("acme", "processed")


def test_crash_after_commit_before_move_is_finished_not_duplicated(make_env, comments):
    env = make_env(stable_secs=0.0)
    (env.config.home / ".faults").mkdir()
    (env.config.home / ".faults" / "batch_after_commit").touch()
    drop(env.staging("acme") / "c.csv", comments(1000))
    env.manager.submit("acme", [env.staging("acme") / "c.csv"])
    env.manager.pump()
    [run] = env.manager.pool.running.values()
    run.process.join(30)
    assert run.process.exitcode == 137
    assert env.count("acme") == 1000  # committed, but the manager never heard
    (env.config.home / ".faults" / "batch_after_commit").unlink()
    store, manager = _restart(env)
    assert _wait_until_scanned(manager, 1) == 1
    manager.run_until_idle(timeout_secs=60)
    latest = store.records("acme")[0]
    assert latest["outcome"] == "processed", latest
    assert "interruption" in latest["reason"]
    assert latest["rows_loaded"] == 1000  # from the ledger: reports count what was committed
    assert env.count("acme") == 1000
    assert "c.csv" in env.outcome_files("acme", "processed")


def test_worker_killed_is_retried_by_the_same_manager(make_env):
    env = slow_env(make_env)
    write_reddit_csv(env.staging("acme") / "big.csv", 300_000)
    env.manager.submit("acme", [env.staging("acme") / "big.csv"])
    env.manager.pump()
    [run] = env.manager.pool.running.values()
    time.sleep(1.0)
    # a warm worker outlives its file: still on it means no answer on its pipe yet
    assert run.process.is_alive() and not run.conn.poll(), "file done before the kill"
    os.kill(run.process.pid, signal.SIGKILL)
    env.manager.run_until_idle(timeout_secs=120)
    outcomes = [r["outcome"] for r in env.store.records("acme")]
    assert sorted(outcomes) == ["interrupted", "processed"]
    assert "killed by signal 9" in env.store.records("acme", outcome="interrupted")[0]["reason"]
    assert env.count("acme") == 300_000


@pytest.mark.parametrize("files_per_turn", [1, 4])
def test_small_tenant_is_not_starved(make_env, comments, files_per_turn):
    # 4: small files of one tenant share a transaction, up to 4 at a time: one turn
    env = make_env([tenant_profile("big"), tenant_profile("small")], workers=1,
                   group_max_files=files_per_turn)
    for i in range(12):
        drop(env.staging("big") / f"f{i:02}.csv", comments(200, seed=i, start_id=i * 200))
    drop(env.staging("small") / "one.csv", comments(10))
    env.manager.submit("big", sorted(env.staging("big").iterdir()))
    env.manager.submit("small", [env.staging("small") / "one.csv"])
    env.manager.run_until_idle(timeout_secs=120)
    order = sorted(env.store.records(), key=lambda r: r["ended_at"])
    position = [r["tenant"] for r in order].index("small")
    assert position <= 2 * files_per_turn, [r["source"] for r in order]


def test_serve_watches_and_stops_cleanly(make_env, comments):
    env = make_env(stable_secs=0.2, rescan_secs=0.3)
    stop = threading.Event()
    t = threading.Thread(target=env.manager.serve, args=(stop,))
    t.start()
    try:
        drop(env.staging("acme") / "w1.csv", comments(100))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and env.count("acme") < 100:
            time.sleep(0.2)
        assert env.count("acme") == 100
        # a file written slowly in place is taken only once complete
        with (env.staging("acme") / "slow.csv").open("wb") as f:
            data = comments(100, seed=1, start_id=1000)
            f.write(data[:100])
            f.flush()
            time.sleep(0.5)
            f.write(data[100:])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and env.count("acme") < 200:
            time.sleep(0.2)
        assert env.count("acme") == 200
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert all(r["outcome"] == "processed" for r in env.store.records("acme"))


@pytest.mark.postgres
def test_postgres_sink_end_to_end(make_env, comments, pg_dsn):
    table = {**tenant_profile("acme")["tables"][0], "sinks": ["pg"]}
    env = make_env([tenant_profile("acme", tables=[table])],
                   sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    drop(env.staging("acme") / "a.csv", comments(3000))
    drop(env.staging("acme") / "a2.csv", comments(3000))  # same content: duplicate
    recs = env.ingest("acme", "a.csv", "a2.csv")
    # PostgreSQL tenants run files in parallel: whichever commits first is the original
    assert sorted(r["outcome"] for r in recs) == ["duplicate", "processed"]
    assert env.count("acme", sink="pg") == 3000


@pytest.mark.postgres
def test_state_store_on_postgres(make_env, comments, pg_dsn):
    env = make_env(state_dsn=pg_dsn)
    drop(env.staging("acme") / "a.csv", comments(100))
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed"
    assert env.store.db.dialect == "postgres"
