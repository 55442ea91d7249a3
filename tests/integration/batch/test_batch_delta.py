"""Files into Delta Lake tables through the real batch manager: exact rows, exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from deltalake import DeltaTable

from simbdp.batch import BatchIngestManager
from simbdp.coredms.delta import file_app_id
from simbdp.state import StateStore
from simbdp.testing import REDDIT_TABLE, drop, tenant_profile


def lake_env(make_env, tmp_path: Path, sinks: list[str]):  # type: ignore[no-untyped-def]
    table = {**REDDIT_TABLE, "sinks": sinks}
    return make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0,
                    sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake")}})


def test_file_into_a_delta_table_then_the_same_content_is_a_duplicate(make_env, comments,
                                                                       tmp_path):
    env = lake_env(make_env, tmp_path, ["lake"])
    drop(env.staging("acme") / "a.csv", comments(3000))
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed", rec
    assert rec["rows_loaded"] == 3000
    assert env.count("acme", sink="lake") == 3000
    table = DeltaTable(str(tmp_path / "lake" / "acme" / "comments"))
    assert table.transaction_version(file_app_id(rec["content_key"])) == 1
    drop(env.staging("acme") / "a2.csv", comments(3000))  # same content
    drop(env.staging("acme") / "b.csv", comments(500, seed=1, start_id=10_000))
    recs = env.ingest("acme", "a2.csv", "b.csv")
    assert [r["outcome"] for r in recs] == ["duplicate", "processed"], recs
    assert env.count("acme", sink="lake") == 3500
    assert "a2.csv" in env.outcome_files("acme", "rejected")


def test_a_table_with_two_sinks_gets_the_rows_in_both(make_env, comments, tmp_path):
    env = lake_env(make_env, tmp_path, ["default", "lake"])
    drop(env.staging("acme") / "a.csv", comments(2000))
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed", rec
    assert env.count("acme") == 2000 and env.count("acme", sink="lake") == 2000
    drop(env.staging("acme") / "again.csv", comments(2000))
    [rec] = env.ingest("acme", "again.csv")
    assert rec["outcome"] == "duplicate"
    assert env.count("acme") == 2000 and env.count("acme", sink="lake") == 2000


def test_crash_between_data_and_ledger_commits_then_retry_loads_once(make_env, comments,
                                                                      tmp_path):
    env = lake_env(make_env, tmp_path, ["lake"])
    faults = tmp_path / "lake" / ".faults"
    faults.mkdir(parents=True)
    (faults / "delta_before_ledger").touch()
    drop(env.staging("acme") / "c.csv", comments(1000))
    env.manager.submit("acme", [env.staging("acme") / "c.csv"])
    env.manager.pump()
    [run] = env.manager.pool.running.values()
    run.process.join(60)
    assert run.process.exitcode == 137
    # the data commit is in the table's log, the ledger's is not: the file is not done
    assert env.count("acme", sink="lake") == 1000
    (faults / "delta_before_ledger").unlink()
    store = StateStore.open(env.config)  # a new manager, as after a crash of the old one
    manager = BatchIngestManager(env.platform, store)
    manager.recover()
    try:
        deadline = time.monotonic() + 10
        while not manager.scan() and time.monotonic() < deadline:
            time.sleep(0.05)
        manager.run_until_idle(timeout_secs=60)
        latest = store.records("acme")[0]
        assert latest["outcome"] == "processed", latest
        assert env.count("acme", sink="lake") == 1000  # the retry skipped the data commit
    finally:
        manager.close()


def test_keyed_delta_table_merges_and_counts_the_rows_it_updated(make_env, tmp_path):
    table = {**REDDIT_TABLE, "sinks": ["lake"], "primary_key": ["subreddit", "id"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0,
                   sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake")}})
    header = "created_utc,ups,subreddit,id,author,score,body\n"
    drop(env.staging("acme") / "a.csv", (header + "1,10,r,a,x,1,b\n1,20,r,b,x,1,b\n").encode())
    [a] = env.ingest("acme", "a.csv")
    drop(env.staging("acme") / "b.csv", (header + "2,21,r,b,x,1,b\n2,30,r,c,x,1,b\n").encode())
    [b] = env.ingest("acme", "b.csv")
    assert (a["outcome"], a["rows_loaded"], a["rows_updated"]) == ("processed", 2, 0)
    assert (b["outcome"], b["rows_loaded"], b["rows_updated"]) == ("processed", 2, 1), b
    assert env.count("acme", sink="lake") == 3


def _lake_with_files(make_env, comments, tmp_path, n, **sink):  # type: ignore[no-untyped-def]
    table = {**REDDIT_TABLE, "sinks": ["lake"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0,
                   sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake"), **sink}})
    names = [f"f{i:02}.csv" for i in range(n)]
    for i, name in enumerate(names):
        drop(env.staging("acme") / name, comments(100, seed=i, start_id=i * 100))
    recs = env.ingest("acme", *names)
    assert {r["outcome"] for r in recs} == {"processed"}
    return env, recs


def test_compaction_keeps_exactly_once_and_the_rows(make_env, comments, tmp_path):
    from typer.testing import CliRunner

    from simbdp.cli.main import app

    env, recs = _lake_with_files(make_env, comments, tmp_path, 12)
    path = tmp_path / "lake" / "acme" / "comments"
    assert len(DeltaTable(str(path)).file_uris()) == 12  # a commit per file
    out = CliRunner().invoke(app, ["lake", "compact", "--home", str(env.config.home)])
    assert out.exit_code == 0, out.output
    assert "acme" in out.output and "12" in out.output
    table = DeltaTable(str(path))
    assert len(table.file_uris()) == 1 and env.count("acme", sink="lake") == 1200
    # the files' app transactions survive: the same content again is a duplicate
    assert table.transaction_version(file_app_id(recs[3]["content_key"])) == 1
    drop(env.staging("acme") / "again.csv", comments(100, seed=3, start_id=300))
    [again] = env.ingest("acme", "again.csv")
    assert again["outcome"] == "duplicate"
    assert env.count("acme", sink="lake") == 1200


def test_serve_policy_compacts_tables_over_compact_min_files(make_env, comments, tmp_path):
    from simbdp.coredms.compaction import LakeCompactor

    env, _ = _lake_with_files(make_env, comments, tmp_path, 6, compact_min_files=5)
    compactor = LakeCompactor(env.platform)
    done = compactor.check(env.store)
    # the data table and the tenant's ledger table (a row, so a file, per committed file)
    assert sorted((c.tenant, c.table, c.files_before, c.files_after) for c in done) == [
        ("acme", "_simbdp_ledger", 6, 1), ("acme", "comments", 6, 1)]
    ds = [d for d in env.store.decisions("acme") if d["action"] == "lake_compacted"]
    assert len(ds) == 2 and all("6 data files over compact_min_files 5" in d["reason"]
                                for d in ds)
    assert compactor.check(env.store) == []  # 1 file now: nothing to do
    assert env.count("acme", sink="lake") == 600


def test_a_sink_down_at_commit_waits_and_the_other_is_not_written_twice(make_env, comments,
                                                                        tmp_path):
    import json
    import shutil

    table = {**REDDIT_TABLE, "sinks": ["default", "lake"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0, workers=1,
                   sink_retry_max_secs=0.5,
                   sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake")}})
    drop(env.staging("acme") / "a.csv", comments(100))
    [first] = env.ingest("acme", "a.csv")
    assert json.loads(first["sinks"]) == {"default": "committed", "lake": "committed"}
    # the lake's table breaks after the worker checked it: DuckDB commits, the lake cannot
    log = tmp_path / "lake" / "acme" / "comments" / "_delta_log"
    shutil.move(log, tmp_path / "log-aside")
    log.write_text("not a folder")
    drop(env.staging("acme") / "b.csv", comments(50, seed=1, start_id=1000))
    [sub] = env.manager.submit("acme", [env.staging("acme") / "b.csv"])
    deadline = time.monotonic() + 60
    while env.store.record(sub.record_id)["outcome"] != "waiting":
        assert time.monotonic() < deadline
        env.manager.pump()
        env.manager.wait(0.1)
    waiting = env.store.record(sub.record_id)
    states = json.loads(waiting["sinks"])
    assert states["default"] == "committed" and states["lake"].startswith("waiting: ")
    assert env.count("acme") == 150
    log.unlink()
    shutil.move(tmp_path / "log-aside", log)
    env.manager.run_until_idle(timeout_secs=60)
    done = env.store.record(sub.record_id)
    assert done["outcome"] == "processed", done
    assert json.loads(done["sinks"]) == {
        "default": f"already committed by ingestion {sub.record_id}", "lake": "committed"}
    assert env.count("acme") == 150 and env.count("acme", sink="lake") == 150


def test_a_lake_folder_that_cannot_be_written_makes_files_wait_not_fail(make_env, comments,
                                                                        tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the lake's folder should be")  # even root cannot mkdir
    table = {**REDDIT_TABLE, "sinks": ["lake"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0,
                   sink_retry_max_secs=0.5,
                   sinks={"lake": {"kind": "delta", "path": str(blocker / "lake")}})
    drop(env.staging("acme") / "a.csv", comments(100))
    [sub] = env.manager.submit("acme", [env.staging("acme") / "a.csv"])
    deadline = time.monotonic() + 60
    while env.store.record(sub.record_id)["outcome"] != "waiting":
        assert time.monotonic() < deadline
        env.manager.pump()
        env.manager.wait(0.1)
    rec = env.store.record(sub.record_id)
    assert "delta sink" in rec["reason"] and "cannot create" in rec["reason"], rec["reason"]
    blocker.unlink()  # the folder can be made now: the file goes in on its next try
    env.manager.run_until_idle(timeout_secs=60)
    assert env.store.record(sub.record_id)["outcome"] == "processed"
    assert env.count("acme", sink="lake") == 100


def test_two_workers_commit_into_one_keyed_delta_table_without_conflict(make_env, tmp_path):
    table = {**REDDIT_TABLE, "sinks": ["lake"], "primary_key": ["subreddit", "id"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0, workers=2,
                   small_file_bytes=0,
                   sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake")}})
    header = "created_utc,ups,subreddit,id,author,score,body\n"
    names = []
    for f in range(8):  # keys k0..k19 over and over: every file meets keys of the others
        rows = "".join(f"{f},{f},r,k{(f * 5 + i) % 20},x,1,b\n" for i in range(10))
        names.append(f"f{f}.csv")
        drop(env.staging("acme") / names[-1], (header + rows).encode())
    env.manager.submit("acme", [env.staging("acme") / n for n in names])
    env.manager.pump()
    assert len(env.manager.pool.running) == 2  # two files at once, into one table
    env.manager.run_until_idle(timeout_secs=120)
    recs = [r for r in env.store.records("acme") if r["outcome"] != "interrupted"]
    assert [r["outcome"] for r in recs] == ["processed"] * 8, recs
    assert env.count("acme", sink="lake") == 20
