import multiprocessing as mp
import os
import signal
import time

import pyarrow as pa
import pytest

from simbdp.coredms.base import LedgerEntry, open_sink
from simbdp.errors import DuplicateIngestion, DuplicateMessages
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings

PROFILE = TenantProfile.model_validate({
    "tenant_id": "acme",
    "tables": [{"name": "kv", "primary_key": ["k"], "columns": [
        {"name": "k", "type": "text"}, {"name": "v", "type": "int"}]},
        {"name": "log", "columns": [{"name": "k", "type": "text"}, {"name": "v", "type": "int"}]}],
})


def rows(ks, vs):  # type: ignore[no-untyped-def]
    return pa.table({"k": pa.array(ks, pa.string()), "v": pa.array(vs, pa.int64())})


def entry(key):  # type: ignore[no-untyped-def]
    return LedgerEntry(tenant="acme", key=key, source=f"{key}.csv", ingestion_id=key, rows=1)


@pytest.fixture
def settings(tmp_path):
    return SinkSettings(kind="duckdb", path=tmp_path / "coredms")


@pytest.fixture
def sink(settings):
    s = open_sink(settings)
    s.ensure_tables(PROFILE)
    s.ensure_tables(PROFILE)  # idempotent
    return s


def test_append_upsert_and_ledger(sink):
    kv, log = PROFILE.table("kv"), PROFILE.table("log")
    tx = sink.begin(PROFILE)
    tx.write(kv, rows(["a", "b"], [1, 2]))
    tx.write(log, rows(["a", "a"], [1, 1]))
    tx.commit(entry("one"))
    tx = sink.begin(PROFILE)
    tx.write(kv, rows(["a"], [10]))
    tx.write(log, rows(["a"], [1]))
    tx.commit(entry("two"))
    assert sink.count_rows(PROFILE, "kv") == 2 and sink.count_rows(PROFILE, "log") == 3
    assert sink.read_rows(PROFILE, "kv", where={"k": "a"}).column("v").to_pylist() == [10]
    assert sink.ledger_lookup(PROFILE, "one").source == "one.csv"
    assert sink.ledger_lookup(PROFILE, "nope") is None


def test_duplicate_key_commits_nothing(sink):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), rows(["a"], [1]))
    tx.commit(entry("same"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), rows(["b"], [2]))
    with pytest.raises(DuplicateIngestion, match="same content"):
        tx.commit(entry("same"))
    assert sink.count_rows(PROFILE, "log") == 1


def test_rollback_leaves_nothing(sink):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), rows(["a"], [1]))
    tx.rollback()
    assert sink.count_rows(PROFILE, "log") == 0


def test_message_ids(sink):
    tx = sink.begin(PROFILE)
    tx.add_message_ids(pa.array(["m1", "m2"]))
    tx.commit(entry("b1"))
    assert sorted(sink.seen_message_ids(PROFILE, pa.array(["m1", "m3"])).to_pylist()) == ["m1"]
    tx = sink.begin(PROFILE)
    with pytest.raises(DuplicateMessages):
        tx.add_message_ids(pa.array(["m2", "m4"]))
    assert sink.seen_message_ids(PROFILE, pa.array(["m4"])).to_pylist() == []


def _writer(settings, key, hold):  # type: ignore[no-untyped-def]
    s = open_sink(settings)
    tx = s.begin(PROFILE)
    tx.write(PROFILE.table("log"), rows([key], [1]))
    time.sleep(hold)
    tx.commit(entry(key))


def test_processes_take_turns_and_a_killed_writer_leaves_nothing(sink, settings):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(settings, f"p{i}", 0.3)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sink.count_rows(PROFILE, "log") == 2
    victim = ctx.Process(target=_writer, args=(settings, "victim", 30))
    victim.start()
    time.sleep(3)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    _writer(settings, "after", 0)
    assert sink.count_rows(PROFILE, "log") == 3
    assert sink.ledger_lookup(PROFILE, "victim") is None


def _read_count(settings, out):  # type: ignore[no-untyped-def]
    s = open_sink(settings)
    out.put(s.count_rows(PROFILE, "log"))


def test_a_held_session_serves_many_transactions_and_readers_wait_for_its_release(sink,
                                                                                  settings):
    sink.hold(PROFILE)
    assert sink.held_since("acme") is not None
    for i in range(3):
        tx = sink.begin(PROFILE)
        tx.write(PROFILE.table("log"), rows([f"h{i}"], [i]))
        tx.commit(entry(f"h{i}"))
    assert sink.ledger_lookup(PROFILE, "h2") is not None
    with pytest.raises(DuplicateIngestion):  # a failed commit keeps the session usable
        tx = sink.begin(PROFILE)
        tx.write(PROFILE.table("log"), rows(["again"], [9]))
        tx.commit(entry("h0"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), rows(["gone"], [9]))
    tx.rollback()
    # another process waits for the writer lock while the session is held
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    reader = ctx.Process(target=_read_count, args=(settings, out))
    reader.start()
    time.sleep(2.0)
    assert reader.is_alive() and out.empty()
    sink.release()
    assert sink.held_since("acme") is None
    assert out.get(timeout=60) == 3
    reader.join(30)
    assert sink.count_rows(PROFILE, "log") == 3
