"""Warm workers: files of a tenant run one after another in the same worker process, which
keeps its sinks and app warm; a dead worker is replaced; staging events are acted on at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from simbdp.coredms.base import open_sink
from simbdp.testing import drop, tenant_profile

COUNTING_APP = '''
import pyarrow as pa

calls = 0

def count(data, ctx):
    global calls
    calls += 1
    return data.set_column(data.schema.get_field_index("body"), "body",
                           pa.array([str(calls)] * data.num_rows))
'''


def test_worker_imports_the_batch_path_only():
    code = ("import sys, simbdp.batch.worker; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'typer', 'simbdp.api', "
            "'simbdp.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_files_of_a_tenant_share_a_warm_worker_and_its_app(make_env, comments):
    apps = [{"name": "c", "entrypoint": "counting:count", "tables": ["comments"]}]
    env = make_env([tenant_profile("acme", apps=apps)], apps={"acme": {"counting.py":
                                                                       COUNTING_APP}},
                   workers=1, stable_secs=0.0)
    names = [f"f{i}.csv" for i in range(4)]
    for i, name in enumerate(names):
        drop(env.staging("acme") / name, comments(50, seed=i, start_id=i * 50))
    pids = set()
    env.manager.submit("acme", [env.staging("acme") / n for n in names])
    while env.manager.busy:
        env.manager.pump()
        pids |= {r.process.pid for r in env.manager.pool.running.values()}
        env.manager.wait(0.05)
    recs = env.store.records("acme")
    assert [r["outcome"] for r in recs] == ["processed"] * 4
    assert len(pids) == 1  # one warm worker took them all
    # ... and one app process: its call counter went on across files
    sink = open_sink(env.config.sinks["default"])  # the worker let go of the database
    try:
        bodies = sink.read_rows(env.platform.tenant("acme"), "comments", limit=1000)
    finally:
        sink.close()
    assert sorted(set(bodies.column("body").to_pylist()), key=int) == ["1", "2", "3", "4"]
    assert env.count("acme") == 200


def test_a_worker_dead_between_files_is_replaced(make_env, comments):
    env = make_env(workers=1, stable_secs=0.0)
    drop(env.staging("acme") / "a.csv", comments(10))
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed"
    [idle] = env.manager.pool.idle
    os.kill(idle.pid, signal.SIGKILL)
    idle.join(10)
    drop(env.staging("acme") / "b.csv", comments(10, seed=1, start_id=10))
    [rec] = env.ingest("acme", "b.csv")
    assert rec["outcome"] == "processed" and rec["attempt"] == 1
    assert env.count("acme") == 20
    env.manager.close()
    assert env.manager.pool.idle == []


def test_files_are_taken_on_their_events_not_after_stable_secs(make_env, comments, tmp_path):
    # stability and the rescan would take a minute: only the inotify events can be quick
    env = make_env(stable_secs=60.0, rescan_secs=60.0)
    stop = threading.Event()
    t = threading.Thread(target=env.manager.serve, args=(stop,))
    t.start()
    try:
        time.sleep(0.5)
        outside = tmp_path / "outside.csv"
        outside.write_bytes(comments(20))
        os.rename(outside, env.staging("acme") / "moved.csv")  # moved-to
        with (env.staging("acme") / "written.csv").open("wb") as f:  # close-write
            f.write(comments(20, seed=1, start_id=20))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(env.store.records("acme",
                                                                      outcome="processed")) < 2:
            time.sleep(0.05)
        assert sorted(r["source"] for r in env.store.records("acme")) == ["moved.csv",
                                                                          "written.csv"]
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    assert env.count("acme") == 40
