"""Streams into Delta Lake tables through real instances: each message once, buffered into few
files, through crashes, compaction and two writers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from simbdp.coredms.compaction import compact_lake
from simbdp.coredms.delta import LEDGER_TABLE, stream_app_id
from simbdp.stream.brokers import open_broker
from simbdp.stream.manager import StreamManager
from simbdp.testing import EVENTS_TABLE, OTHER_TABLE, crash_at_fault, stream_tenant, wait_for


def lake_tenant(lake: dict | None = None, tenant_id: str = "acme",  # type: ignore[no-untyped-def]
                **app) -> dict:
    """``events`` without a key (a duplicate would show in the count) in the delta sink."""
    tenant = stream_tenant(tenant_id, **app)
    tenant["tables"] = [{**EVENTS_TABLE, "primary_key": [], "sinks": ["lake"]}, OTHER_TABLE]
    if lake:
        tenant["lake"] = lake
    return tenant


def lake_env(make_stream_env, tmp_path: Path, tenant: dict | None = None,  # type: ignore[no-untyped-def]
             **kw):
    return make_stream_env([tenant or lake_tenant()],
                           sinks={"lake": {"kind": "delta", "path": str(tmp_path / "lake")}},
                           **kw)


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"e{i}", "n": i, "note": "hello"} for i in range(start, start + n)]


def table(tmp_path: Path, name: str = "events", tenant: str = "acme") -> DeltaTable:
    return DeltaTable(str(tmp_path / "lake" / tenant / name))


def stream_batches(tmp_path: Path) -> int:
    """Stream batches in the ledger (one per buffer committed)."""
    keys = table(tmp_path, LEDGER_TABLE).to_pyarrow_table(columns=["key"]).column("key")
    return sum(1 for k in keys.to_pylist() if k.startswith("batch:"))


def backlog(env) -> int:  # type: ignore[no-untyped-def]
    async def go() -> int:
        b = open_broker(env.config.broker)
        try:
            return await b.backlog("acme")
        finally:
            await b.close()
    return asyncio.run(go())


def reports(env) -> list[dict]:  # type: ignore[no-untyped-def]
    """The instances' reports to the monitor (taken off its channel)."""
    async def go() -> list[dict]:
        b = open_broker(env.config.broker)
        try:
            return await b.fetch_reports(10_000, 0.5)
        finally:
            await b.close()
    return asyncio.run(go())


def test_stream_into_delta_loads_each_message_once(make_stream_env, tmp_path):
    env = lake_env(make_stream_env, tmp_path)
    env.publish("acme", rows(1000), id_field="id")
    env.publish("acme", rows(100), id_field="id")  # a publisher's duplicates of e0..e99
    env.publish("acme", [b"{oops"], id_prefix="bad")
    reports = env.drain(secs=60)
    assert env.count(sink="lake") == 1000
    ids = table(tmp_path).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(f"e{i}" for i in range(1000))
    assert [d.id for d in env.dead_letters()] == ["bad:0"]
    assert sum(r["rows_loaded"] for r in reports) >= 1000
    env.publish("acme", rows(10, start=995), id_field="id")  # 5 committed before, 5 new
    env.drain()
    assert env.count(sink="lake") == 1005
    keys = [k for k in table(tmp_path, LEDGER_TABLE).to_pyarrow_table(columns=["key"])
            .column("key").to_pylist() if k.startswith("batch:")]
    assert keys and all(table(tmp_path).transaction_version(stream_app_id(k)) == 1
                        for k in keys)


def test_many_small_micro_batches_make_few_files(make_stream_env, tmp_path):
    tenant = lake_tenant({"max_messages": 500, "max_wait_secs": 30}, batch_max_rows=10,
                         batch_max_wait_ms=50)
    env = lake_env(make_stream_env, tmp_path, tenant,
                   broker={"kind": "embedded", "lease_secs": 120})
    env.publish("acme", rows(2000), id_field="id")
    reports = env.drain(secs=60)
    assert env.count(sink="lake") == 2000
    # 200 micro-batches of 10 messages: committed 500 messages at a time
    assert sum(r["rows_loaded"] for r in reports) == 2000
    assert stream_batches(tmp_path) == 4
    assert len(table(tmp_path).file_uris()) == 4


def test_the_age_bound_commits_a_quiet_buffer(make_stream_env, tmp_path):
    tenant = lake_tenant({"max_wait_secs": 3})
    env = lake_env(make_stream_env, tmp_path, tenant,
                   broker={"kind": "embedded", "lease_secs": 60})
    env.publish("acme", rows(30), id_field="id")
    manager = StreamManager(env.platform, env.store, grace_secs=5)
    env.store.set_desired("acme", "ev", 1)
    try:
        manager.reconcile()
        assert wait_for(lambda: backlog(env) == 0)  # fetched: buffered, not committed yet
        assert env.count(sink="lake") == 0
        # no stop, no size bound: the age bound alone commits the 30 messages
        assert wait_for(lambda: env.count(sink="lake") == 30, secs=30)
    finally:
        manager.shutdown()
    assert env.count(sink="lake") == 30


def test_a_stop_commits_the_buffer(make_stream_env, tmp_path):
    env = lake_env(make_stream_env, tmp_path, lake_tenant({"max_wait_secs": 600}),
                   broker={"kind": "embedded", "lease_secs": 600})
    env.publish("acme", rows(30), id_field="id")
    manager = StreamManager(env.platform, env.store, grace_secs=10)
    env.store.set_desired("acme", "ev", 1)
    try:
        manager.reconcile()
        assert wait_for(lambda: backlog(env) == 0)  # fetched and buffered for up to 300 s
        time.sleep(0.5)
        assert env.count(sink="lake") == 0
        [inst] = manager.apps[("acme", "ev")].instances
        env.store.set_desired("acme", "ev", 0)
        manager.reconcile()  # SIGTERM
        assert wait_for(lambda: inst.proc.poll() is not None)
        assert inst.proc.returncode == 0
    finally:
        manager.shutdown()
    assert env.count(sink="lake") == 30
    assert stream_batches(tmp_path) == 1
    queue = sqlite3.connect(env.config.broker.path / "simbdp-queue.sqlite")
    assert queue.execute("SELECT count(*) FROM messages").fetchone() == (0,)  # all acked
    queue.close()


@pytest.mark.rabbitmq
def test_stream_into_delta_on_rabbitmq_loads_each_message_once(make_stream_env, tmp_path,
                                                               rabbitmq_url):
    env = lake_env(make_stream_env, tmp_path, lake_tenant(batch_max_rows=100),
                   broker={"kind": "rabbitmq", "url": rabbitmq_url})
    env.publish("acme", rows(3000), id_field="id")
    env.publish("acme", rows(200, start=1000), id_field="id")  # duplicates
    for _ in range(5):  # messages prefetched by a stopped instance come to the next one
        env.drain(secs=60)
        if env.count(sink="lake") >= 3000:
            break
    assert env.count(sink="lake") == 3000
    ids = table(tmp_path).to_pyarrow_table(columns=["id"]).column("id")
    assert len(set(ids.to_pylist())) == 3000
    # prefetch 2000, two micro-batches of 100 in flight: at most 1800 messages a commit
    assert stream_batches(tmp_path) >= 2


@pytest.mark.nats
def test_stream_into_delta_on_nats_loads_each_message_once(make_stream_env, tmp_path,
                                                           nats_url, unique_prefix):
    tenant = unique_prefix  # its own JetStream stream on the shared server
    env = lake_env(make_stream_env, tmp_path, lake_tenant(tenant_id=tenant, batch_max_rows=100),
                   broker={"kind": "nats", "url": nats_url, "lease_secs": 10})
    try:
        env.publish(tenant, rows(2000), id_field="id")
        env.publish(tenant, rows(300, start=500), id_field="id")  # duplicates
        env.drain(tenant, secs=60)
        assert env.count(tenant, sink="lake") == 2000
        ids = table(tmp_path, tenant=tenant).to_pyarrow_table(columns=["id"]).column("id")
        assert len(set(ids.to_pylist())) == 2000
    finally:
        async def purge() -> None:
            b = open_broker(env.config.broker)
            await b.purge(tenant)
            await b.close()
        asyncio.run(purge())


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["stream_after_commit", "delta_stream_before_ledger"])
def test_sigkill_after_the_delta_commit_loses_and_duplicates_nothing(make_stream_env, tmp_path,
                                                                      fault):
    env = lake_env(make_stream_env, tmp_path, lake_tenant({"max_messages": 200}))
    faults = (env.config.home if fault == "stream_after_commit" else tmp_path / "lake") \
        / ".faults"
    env.publish("acme", rows(500), id_field="id")
    # dies right after its first table commit, before the ack
    manager, point = crash_at_fault(env.platform, env.store, fault, faults=faults)
    assert env.count(sink="lake") == 200
    point.unlink()
    try:
        assert wait_for(lambda: (manager.reconcile(), env.count(sink="lake") >= 500)[1], secs=60)
        time.sleep(3)  # the redelivered 200 (lease 2 s) have been looked at
    finally:
        manager.shutdown()
    assert env.count(sink="lake") == 500
    ids = table(tmp_path).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert len(set(ids)) == 500


@pytest.mark.slow
def test_compaction_while_a_stream_writes_keeps_every_row_once(make_stream_env, tmp_path):
    tenant = lake_tenant({"max_messages": 100}, batch_max_rows=20)
    env = lake_env(make_stream_env, tmp_path, tenant)
    env.publish("acme", rows(200), id_field="id")
    manager = StreamManager(env.platform, env.store, grace_secs=5)
    env.store.set_desired("acme", "ev", 1)
    stop = threading.Event()
    compactions: list[int] = []

    def compact() -> None:
        while not stop.is_set():
            compactions.extend(c.files_before for c in compact_lake(env.platform, "acme", "events"))
            time.sleep(0.05)

    compactor = threading.Thread(target=compact)
    try:
        manager.reconcile()
        assert wait_for(lambda: env.count(sink="lake") == 200)
        compactor.start()
        for start in range(200, 3000, 200):  # the stream keeps writing during compactions
            env.publish("acme", rows(200, start=start), id_field="id")
            time.sleep(0.1)
        assert wait_for(lambda: env.count(sink="lake") >= 3000, secs=90)
        stop.set()
        compactor.join()
        assert len(compactions) > 3 and max(compactions) > 1
        files = len(table(tmp_path).file_uris())
        [c] = compact_lake(env.platform, "acme", "events")
        assert c.files_before == files and c.files_after == 1
        # committed before the last compaction: still duplicates after it
        env.publish("acme", rows(500), id_field="id")
        env.publish("acme", rows(10, start=3000), id_field="id")
        assert wait_for(lambda: env.count(sink="lake") >= 3010, secs=30)
        time.sleep(3)
    finally:
        stop.set()
        if compactor.is_alive():
            compactor.join()
        manager.shutdown()
    assert env.count(sink="lake") == 3010
    ids = table(tmp_path).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 3010


@pytest.mark.slow
def test_two_instances_writing_one_table_lose_no_commit(make_stream_env, tmp_path):
    # small commits, so the second instance starts while the first is still at work
    tenant = lake_tenant({"max_messages": 40}, batch_max_rows=20)
    env = lake_env(make_stream_env, tmp_path, tenant)
    env.publish("acme", rows(4000), id_field="id")
    manager = StreamManager(env.platform, env.store, grace_secs=10)
    env.store.set_desired("acme", "ev", 2)
    try:
        manager.reconcile()
        assert manager.status()[("acme", "ev")] == 2
        assert wait_for(lambda: env.count(sink="lake") >= 4000, secs=120)
        procs = [i.proc for i in manager.apps[("acme", "ev")].instances]
        env.store.set_desired("acme", "ev", 0)
        manager.reconcile()
        assert wait_for(lambda: all(p.poll() is not None for p in procs))
        assert all(p.returncode == 0 for p in procs)
    finally:
        manager.shutdown()
    assert env.count(sink="lake") == 4000
    ids = table(tmp_path).to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    assert len(set(ids)) == 4000
    loaded: dict[str, int] = {}
    for r in reports(env):
        loaded[r["instance"]] = loaded.get(r["instance"], 0) + r["rows_loaded"]
    assert len(loaded) == 2 and all(loaded.values()), loaded  # both committed to the table
    assert sum(loaded.values()) == 4000


def test_lake_and_duckdb_each_get_each_message_once_through_a_kill_between_them(
        make_stream_env, tmp_path):
    """One table in DuckDB and the lake: both commit when the lake buffer does. Killed after
    DuckDB's commit, before the lake's: the messages come back and go to the lake only."""
    tenant = lake_tenant({"max_wait_secs": 1})
    tenant["tables"][0]["sinks"] = ["default", "lake"]
    env = lake_env(make_stream_env, tmp_path, tenant)
    env.publish("acme", rows(300), id_field="id")
    # DuckDB committed, the lake not
    manager, fault = crash_at_fault(env.platform, env.store, "stream_between_sinks")
    try:
        assert env.count() > 0 and env.count(sink="lake") == 0
        fault.unlink()
        assert wait_for(lambda: (manager.reconcile(),
                                 env.count() == env.count(sink="lake") == 300)[1], secs=60)
        env.publish("acme", rows(300), id_field="id")  # a publisher's duplicates: skipped
        env.publish("acme", rows(20, start=300), id_field="id")
        assert wait_for(lambda: env.count(sink="lake") == 320, secs=60)
        time.sleep(2)
    finally:
        manager.shutdown()
    assert env.count() == env.count(sink="lake") == 320
