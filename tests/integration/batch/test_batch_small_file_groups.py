"""Small files of one tenant share a transaction; each keeps its own record, outcome, ledger
row and reason, and a crash of the group loses and duplicates nothing."""

from __future__ import annotations

import os
import signal

import pytest

from simbdp.batch import BatchIngestManager
from simbdp.coredms.base import open_sink
from simbdp.state import StateStore
from simbdp.testing import REDDIT_TABLE, drop, tenant_profile

HEADER = "created_utc,ups,subreddit,id,author,score,body\n"


def _group(env, names):  # type: ignore[no-untyped-def]
    """Submit ``names`` together, start the first worker run: the files it took."""
    subs = env.manager.submit("acme", [env.staging("acme") / n for n in names])
    env.manager.pump()
    [run] = env.manager.pool.running.values()
    return subs, [j.path.name for j in run.jobs]


def _ledger(env, keys: list[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """source -> ingestion id of the tenant's ledger rows of these content keys."""
    sink = open_sink(env.config.sinks["default"])
    try:
        hits = sink.ledger_lookup_many(env.platform.tenant("acme"), keys)
    finally:
        sink.close()
    return {e.source: e.ingestion_id for e in hits.values()}


def test_each_file_of_a_group_has_its_own_outcome_record_and_ledger_row(make_env, comments):
    env = make_env(stable_secs=0.0)
    drop(env.staging("acme") / "before.csv", comments(10, seed=99, start_id=9000))
    [first] = env.ingest("acme", "before.csv")
    assert first["outcome"] == "processed"

    names = [f"ok{i:02}.csv" for i in range(20)]
    for i, n in enumerate(names):
        drop(env.staging("acme") / n, comments(50, seed=i, start_id=i * 50))
    drop(env.staging("acme") / "again.csv", comments(10, seed=99, start_id=9000))  # = before
    twin = comments(30, seed=50, start_id=5000)
    drop(env.staging("acme") / "twin-a.csv", twin)
    drop(env.staging("acme") / "twin-b.csv", twin)
    drop(env.staging("acme") / "one-bad-row.csv",
         (HEADER + "1,2,r,x1,a,1,b\n" + "1,notanumber,r,x2,a,1,b\n").encode())
    drop(env.staging("acme") / "not-csv.csv", b"\x00\x01\x02" * 50_000)
    every = [*names, "again.csv", "twin-a.csv", "twin-b.csv", "one-bad-row.csv", "not-csv.csv"]
    subs, grouped = _group(env, every)
    assert sorted(grouped) == sorted(every)  # one transaction for all of them
    env.manager.run_until_idle(timeout_secs=120)

    rec = {s.path.name: env.store.record(s.record_id) for s in subs}
    outcome = {n: r["outcome"] for n, r in rec.items()}
    assert all(outcome[n] == "processed" for n in names), outcome
    assert outcome["again.csv"] == "duplicate" and "before.csv" in rec["again.csv"]["reason"]
    assert (outcome["twin-a.csv"], outcome["twin-b.csv"]) == ("processed", "duplicate")
    assert "twin-a.csv" in rec["twin-b.csv"]["reason"]
    assert outcome["one-bad-row.csv"] == "processed"
    assert (rec["one-bad-row.csv"]["rows_loaded"], rec["one-bad-row.csv"]["rows_rejected"]) \
        == (1, 1)
    assert outcome["not-csv.csv"] in ("rejected", "failed"), rec["not-csv.csv"]
    assert "not-csv.csv" in rec["not-csv.csv"]["reason"]
    for n in names:
        assert rec[n]["rows_loaded"] == 50 and rec[n]["work_started_at"] is not None
    assert env.count("acme") == 10 + 20 * 50 + 30 + 1  # nothing of a failed file, no twin
    ledger = _ledger(env, [r["content_key"] for r in rec.values() if r["content_key"]])
    processed = [n for n, o in outcome.items() if o == "processed"]
    assert {n: ledger[n] for n in processed} == {n: rec[n]["id"] for n in processed}
    assert "again.csv" not in ledger and "twin-b.csv" not in ledger
    assert set(env.outcome_files("acme", "processed")) >= {*processed,
                                                            *(f"{n}.reason.json" for n in names)}


def test_worker_killed_after_the_group_commit_finishes_each_file_once(make_env, comments):
    env = make_env(stable_secs=0.0)
    names = [f"f{i:02}.csv" for i in range(10)]
    for i, n in enumerate(names):
        drop(env.staging("acme") / n, comments(20, seed=i, start_id=i * 20))
    faults = env.config.home / ".faults"
    faults.mkdir()
    (faults / "batch_after_commit").touch()
    _, grouped = _group(env, names)
    assert len(grouped) == 10
    [run] = env.manager.pool.running.values()
    run.process.join(60)
    assert run.process.exitcode == 137  # died after its commit, before answering
    (faults / "batch_after_commit").unlink()
    env.manager.run_until_idle(timeout_secs=120)  # each file again, alone: its own commit
    latest = {r["source"]: r for r in reversed(env.store.records("acme"))}
    assert {r["outcome"] for r in latest.values()} == {"processed"}, latest
    assert all("before an interruption" in r["reason"] for r in latest.values())
    assert env.count("acme") == 200


def test_worker_killed_before_the_group_commit_loses_nothing(make_env, comments):
    env = make_env(stable_secs=0.0)
    names = [f"f{i:02}.csv" for i in range(10)]
    for i, n in enumerate(names):
        drop(env.staging("acme") / n, comments(20, seed=i, start_id=i * 20))
    _, grouped = _group(env, names)
    assert len(grouped) == 10
    [run] = env.manager.pool.running.values()
    os.kill(run.process.pid, signal.SIGKILL)  # a crash at any point before its answer
    run.process.join(30)
    env.manager.run_until_idle(timeout_secs=120)
    store = StateStore.open(env.config)
    latest = {r["source"]: r for r in reversed(store.records("acme"))}
    assert {r["outcome"] for r in latest.values()} == {"processed"}, latest
    assert env.count("acme") == 200


def test_keyed_table_group_last_file_wins_and_counts_its_updates(make_env):
    table = {**REDDIT_TABLE, "primary_key": ["subreddit", "id"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0)
    drop(env.staging("acme") / "a.csv", (HEADER + "1,10,r,k1,x,1,b\n1,11,r,k2,x,1,b\n").encode())
    drop(env.staging("acme") / "b.csv", (HEADER + "2,20,r,k2,x,1,b\n2,21,r,k3,x,1,b\n").encode())
    drop(env.staging("acme") / "c.csv", (HEADER + "3,30,r,k3,x,1,b\n").encode())
    subs, grouped = _group(env, ["a.csv", "b.csv", "c.csv"])
    assert grouped == ["a.csv", "b.csv", "c.csv"]
    env.manager.run_until_idle(timeout_secs=120)
    rec = {s.path.name: env.store.record(s.record_id) for s in subs}
    assert [(rec[n]["outcome"], rec[n]["rows_loaded"], rec[n]["rows_updated"])
            for n in ("a.csv", "b.csv", "c.csv")] == [("processed", 2, 0), ("processed", 2, 1),
                                                      ("processed", 1, 1)]
    assert env.count("acme") == 3


def test_postgres_group_with_a_duplicate(make_env, comments, pg_dsn):
    table = {**REDDIT_TABLE, "sinks": ["pg"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0,
                   sinks={"pg": {"kind": "postgres", "dsn": pg_dsn}})
    drop(env.staging("acme") / "first.csv", comments(10, seed=7, start_id=700))
    [rec] = env.ingest("acme", "first.csv")
    assert rec["outcome"] == "processed"
    names = [f"p{i}.csv" for i in range(5)]
    for i, n in enumerate(names):
        drop(env.staging("acme") / n, comments(10, seed=i, start_id=i * 10))
    drop(env.staging("acme") / "copy.csv", comments(10, seed=7, start_id=700))
    subs, grouped = _group(env, [*names, "copy.csv"])
    assert len(grouped) == 6
    env.manager.run_until_idle(timeout_secs=120)
    outcome = {s.path.name: env.store.record(s.record_id)["outcome"] for s in subs}
    assert outcome == {**dict.fromkeys(names, "processed"), "copy.csv": "duplicate"}
    assert env.count("acme", sink="pg") == 60


@pytest.mark.parametrize("kw", [{"small_file_bytes": 0}, {"small_file_bytes": 100}])
def test_files_over_small_file_bytes_run_alone(make_env, comments, kw):
    env = make_env(stable_secs=0.0, **kw)
    for i in range(3):
        drop(env.staging("acme") / f"f{i}.csv", comments(20, seed=i, start_id=i * 20))
    _, grouped = _group(env, ["f0.csv", "f1.csv", "f2.csv"])
    assert grouped == ["f0.csv"]
    env.manager.run_until_idle(timeout_secs=120)
    assert env.count("acme") == 60


def test_a_restarted_manager_finds_the_group_in_flight(make_env, comments):
    env = make_env(stable_secs=0.0)
    for i in range(4):
        drop(env.staging("acme") / f"f{i}.csv", comments(20, seed=i, start_id=i * 20))
    env.manager.submit("acme", [env.staging("acme") / f"f{i}.csv" for i in range(4)])
    env.manager.close()  # stopped before any worker took them: they wait in inflight/
    store = StateStore.open(env.config)
    manager = BatchIngestManager(env.platform, store)
    manager.recover()
    try:
        assert manager.scan() == 4
        manager.run_until_idle(timeout_secs=120)
    finally:
        manager.close()
    assert env.count("acme") == 80
