"""Hostile files and stuck workers never block a tenant: bounded answers, deadlines, stops."""

from __future__ import annotations

import json
import threading
import time

from simbdp.batch.job import JobResult
from simbdp.state import MAX_REASON_CHARS
from simbdp.testing import drop, tenant_profile

HANG_APP = "import time\n\ndef hang(data, ctx):\n    time.sleep(3600)\n    return data\n"


def _wide_csv(columns: int) -> bytes:
    names = [f"column_{i}" for i in range(columns)]
    return (",".join(names) + "\n" + ",".join("1" for _ in names) + "\n").encode()


def test_20000_column_csv_gets_a_clear_reason_and_the_next_file_runs(make_env, comments):
    env = make_env(stable_secs=0.0)
    drop(env.staging("acme") / "comments.csv", _wide_csv(20_000))
    drop(env.staging("acme") / "comments-next.csv", comments(100))
    t0 = time.monotonic()
    wide, nxt = env.ingest("acme", "comments.csv", "comments-next.csv")
    assert time.monotonic() - t0 < 60
    assert wide["outcome"] in ("failed", "rejected"), wide
    assert "acme" in wide["reason"] and "comments.csv" in wide["reason"]
    assert len(wide["reason"]) <= MAX_REASON_CHARS
    assert nxt["outcome"] == "processed", nxt
    assert env.count("acme") == 100
    folder = "failed" if wide["outcome"] == "failed" else "rejected"
    full = json.loads((env.config.outcome_dir("acme", folder) / "comments.csv.reason.json")
                      .read_text())["reason"]
    assert len(full) >= len(wide["reason"])


def _hanging_env(make_env, **kw):  # type: ignore[no-untyped-def]
    apps = [{"name": "hang", "entrypoint": "hang:hang", "tables": ["comments"],
             "timeout_secs": 3600}]
    return make_env([tenant_profile("acme", apps=apps, batch={"max_file_secs": 3})],
                    apps={"acme": {"hang.py": HANG_APP}}, stable_secs=0.0, **kw)


def test_worker_past_its_deadline_is_killed_and_its_file_failed(make_env, comments):
    env = _hanging_env(make_env)
    drop(env.staging("acme") / "comments.csv", comments(50))
    t0 = time.monotonic()
    [rec] = env.ingest("acme", "comments.csv")
    assert time.monotonic() - t0 < 30
    assert rec["outcome"] == "failed", rec
    assert "deadline of 3 s" in rec["reason"] and "max_file_secs" in rec["reason"]
    assert env.outcome_files("acme", "failed") == ["comments.csv", "comments.csv.reason.json"]
    assert env.count("acme") == 0


def test_stop_ends_within_the_grace_and_leaves_the_file_for_the_next_start(make_env,
                                                                            comments):
    env = _hanging_env(make_env, stop_grace_secs=1.0, rescan_secs=0.2)
    stop = threading.Event()
    t = threading.Thread(target=env.manager.serve, args=(stop,))
    t.start()
    try:
        drop(env.staging("acme") / "comments.csv", comments(50))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not env.manager.pool.running:
            time.sleep(0.1)
        assert env.manager.pool.running, "the file never started"
    finally:
        t0 = time.monotonic()
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 10
    [rec] = env.store.records("acme")
    assert rec["outcome"] == "interrupted" and "stop_grace_secs" in rec["reason"]
    assert env.store.usage("acme", rec["quota_day"])["files"] == 0
    inflight = env.config.tenant_dir("acme") / "inflight"
    assert [p.name for p in inflight.glob("*/*")] == ["comments.csv"]


def test_decompressed_bytes_count_in_the_daily_quota(make_env, comments):
    # the worker reports what it read after decompression; the manager counts the difference
    env = make_env(stable_secs=0.0)
    drop(env.staging("acme") / "comments.csv", comments(10))
    [sub] = env.manager.submit("acme", [env.staging("acme") / "comments.csv"])
    _, job = env.manager.queue.pop()  # type: ignore[misc]
    env.manager.queue.done("acme")
    result = JobResult(outcome="processed", rows_in=10, rows_loaded=10)
    result.decompressed_bytes = job.nbytes * 50  # type: ignore[attr-defined]
    env.manager._finalize(job, result)
    rec = env.store.record(sub.record_id)
    assert rec["outcome"] == "processed" and rec["decompressed_bytes"] == job.nbytes * 50
    assert env.store.usage("acme", job.quota_day)["bytes"] == job.nbytes * 50
