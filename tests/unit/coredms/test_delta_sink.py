"""The Delta Lake sink on real Delta tables in tmp_path: exactly once through app transactions."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from simbdp.coredms.base import LedgerEntry, open_sink
from simbdp.coredms.delta import LEDGER_TABLE, DeltaSink, file_app_id, stream_app_id
from simbdp.coredms.lake_ids import MessageIds
from simbdp.errors import DuplicateIngestion, DuplicateMessages
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings

PROFILE = TenantProfile.model_validate({
    "tenant_id": "acme",
    "namespace": "acme_ns",
    "tables": [{"name": "kv", "primary_key": ["k"], "columns": [
        {"name": "k", "type": "text"}, {"name": "v", "type": "int"}]},
        {"name": "log", "partition_by": ["day"], "columns": [
            {"name": "k", "type": "text"}, {"name": "v", "type": "int"},
            {"name": "day", "type": "date"}]}],
})


def kv(ks, vs):  # type: ignore[no-untyped-def]
    return pa.table({"k": ks, "v": vs}).cast(PROFILE.table("kv").arrow_schema())


def log(ks, vs, day="2026-01-01"):  # type: ignore[no-untyped-def]
    return pa.table({"k": ks, "v": vs, "day": [day] * len(ks)}).cast(
        PROFILE.table("log").arrow_schema())


def entry(key, rows=1):  # type: ignore[no-untyped-def]
    return LedgerEntry(tenant="acme", key=key, source=f"{key}.csv", ingestion_id=f"id-{key}",
                       rows=rows)


@pytest.fixture
def sink(tmp_path) -> DeltaSink:
    s = open_sink(SinkSettings(kind="delta", path=tmp_path / "lake"))
    assert isinstance(s, DeltaSink)
    s.ensure_tables(PROFILE)
    s.ensure_tables(PROFILE)  # idempotent
    return s


def test_layout_partitions_and_upsert(sink, tmp_path):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a", "b", "a"], [1, 2, 3]))  # last row of a key wins
    tx.write(PROFILE.table("log"), log(["a", "b"], [1, 2]))
    tx.commit(entry("one", 2))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [10]))
    tx.write(PROFILE.table("log"), log(["c"], [3], "2026-01-02"))
    tx.commit(entry("two"))
    assert sink.count_rows(PROFILE, "kv") == 2 and sink.count_rows(PROFILE, "log") == 3
    got = sink.read_rows(PROFILE, "kv", where={"k": "a"})
    assert got.column("v").to_pylist() == [10]
    assert sink.read_rows(PROFILE, "log", where={"v": "3"}).column("k").to_pylist() == ["c"]
    assert sink.read_rows(PROFILE, "log", limit=1).num_rows == 1
    table = DeltaTable(str(tmp_path / "lake" / "acme_ns" / "log"))
    assert table.metadata().partition_columns == ["day"]
    assert table.transaction_version(file_app_id("one")) == 1
    hit = sink.ledger_lookup(PROFILE, "one")
    assert hit == entry("one", 2)
    assert sink.ledger_lookup(PROFILE, "nope") is None


def test_same_key_twice_commits_nothing(sink):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), log(["a"], [1]))
    tx.commit(entry("k1"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), log(["b"], [2]))
    with pytest.raises(DuplicateIngestion, match=r"k1\.csv"):
        tx.commit(entry("k1"))
    assert sink.count_rows(PROFILE, "log") == 1


def test_crash_before_the_log_commit_leaves_unreferenced_files_only(sink, tmp_path):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), log(["a", "b"], [1, 2]))
    # the worker dies inside write_deltalake: Parquet files written, no log entry
    part = tmp_path / "lake" / "acme_ns" / "log" / "day=2026-01-01"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(log(["a", "b"], [1, 2]).drop_columns(["day"]), part / "orphan-0.parquet")
    tx.rollback()
    assert sink.count_rows(PROFILE, "log") == 0
    assert sink.ledger_lookup(PROFILE, "f") is None
    tx = sink.begin(PROFILE)  # the retry
    tx.write(PROFILE.table("log"), log(["a", "b"], [1, 2]))
    tx.commit(entry("f", 2))
    assert sink.count_rows(PROFILE, "log") == 2
    table = DeltaTable(str(tmp_path / "lake" / "acme_ns" / "log"))
    dry = table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True,
                       full=True)
    assert any("orphan-0.parquet" in f for f in dry)


def test_crash_between_table_commits_redoes_only_the_missing_ones(sink):
    key = "multi"
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [1]))
    tx.write(PROFILE.table("log"), log(["a", "b"], [1, 2]))
    assert tx.commit_table("kv", entry(key))  # the worker dies after the first table
    tx.rollback()
    assert sink.ledger_lookup(PROFILE, key) is None  # not a duplicate: the file is retried
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [1]))
    tx.write(PROFILE.table("log"), log(["a", "b"], [1, 2]))
    tx.commit(entry(key, 3))
    assert sink.count_rows(PROFILE, "kv") == 1 and sink.count_rows(PROFILE, "log") == 2
    assert sink.ledger_lookup(PROFILE, key) == entry(key, 3)
    history = DeltaTable(sink.table_uri(PROFILE, "kv")).history()
    assert sum(1 for h in history if h.get("simbdp.ingestion_id") == f"id-{key}") == 1


def test_a_file_with_no_rows_is_still_in_the_ledger(sink):
    sink.begin(PROFILE).commit(entry("empty", 0))
    assert sink.ledger_lookup(PROFILE, "empty") == entry("empty", 0)
    assert DeltaTable(sink.table_uri(PROFILE, LEDGER_TABLE)).transaction_version(
        file_app_id("empty")) == 1


def ids(*xs):  # type: ignore[no-untyped-def]
    return pa.array(list(xs), pa.string())


def stream_commit(sink, key, message_ids, log_rows, kv_rows=None):  # type: ignore[no-untyped-def]
    tx = sink.begin(PROFILE)
    tx.add_message_ids(message_ids)
    tx.write(PROFILE.table("log"), log(*log_rows))
    if kv_rows:
        tx.write(PROFILE.table("kv"), kv(*kv_rows))
    tx.commit(LedgerEntry(tenant="acme", key=key, source="stream:ev", ingestion_id=key,
                          rows=len(message_ids)))
    return tx


def test_a_stream_batch_commits_once_and_its_ids_are_seen(sink):
    stream_commit(sink, "batch:b1", ids("m1", "m2"), (["a", "b"], [1, 2]))
    assert sink.seen_message_ids(PROFILE, ids("m0", "m1", "m2")).to_pylist() == ["m1", "m2"]
    assert sink.begin(PROFILE).seen_message_ids(ids("m2", "m3")).to_pylist() == ["m2"]
    for table in ("log", LEDGER_TABLE):
        dt = DeltaTable(sink.table_uri(PROFILE, table))
        assert dt.transaction_version(stream_app_id("batch:b1")) == 1
    with pytest.raises(DuplicateMessages):  # m2 again: nothing of this batch is committed
        stream_commit(sink, "batch:b2", ids("m2", "m3"), (["c", "d"], [3, 4]))
    with pytest.raises(DuplicateMessages):  # an id twice in one batch
        stream_commit(sink, "batch:b3", ids("m4", "m4"), (["e", "f"], [5, 6]))
    assert sink.count_rows(PROFILE, "log") == 2
    assert sink.seen_message_ids(PROFILE, ids("m3", "m4")).to_pylist() == []
    stream_commit(sink, "batch:b4", ids("m3", "m4"), (["c", "d"], [3, 4]))
    assert sink.count_rows(PROFILE, "log") == 4


def claim_then_die(sink, key, message_ids, tables, commit):  # type: ignore[no-untyped-def]
    """What a writer leaves when it dies after claiming the ids and committing ``commit``."""
    with MessageIds(sink.tenant_dir(PROFILE)) as index:
        assert index.claim(key, message_ids, tables, "stream:ev")
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), log(["a", "b"], [1, 2]))
    tx.write(PROFILE.table("kv"), kv(["a"], [1]))
    if len(tables) > 1:
        tx._stage(key)
    for name in commit:
        tx.commit_table(name, LedgerEntry("acme", key, "stream:ev", key, 2), stream_app_id(key))


def test_a_batch_whose_writer_died_before_any_commit_frees_its_ids(sink):
    claim_then_die(sink, "batch:dead", ids("m1", "m2"), ["log"], [])
    assert sink.seen_message_ids(PROFILE, ids("m1", "m2")).to_pylist() == []
    stream_commit(sink, "batch:next", ids("m1", "m2"), (["a", "b"], [1, 2]))
    assert sink.count_rows(PROFILE, "log") == 2


def test_a_batch_committed_to_its_table_but_not_the_ledger_is_committed(sink):
    claim_then_die(sink, "batch:half", ids("m1", "m2"), ["log"], ["log"])
    # the next writer of the same messages finds them pending, resolves, and is a duplicate
    with pytest.raises(DuplicateMessages):
        stream_commit(sink, "batch:again", ids("m1", "m2"), (["a", "b"], [1, 2]))
    assert sink.count_rows(PROFILE, "log") == 2
    assert sink.seen_message_ids(PROFILE, ids("m1", "m2")).to_pylist() == ["m1", "m2"]
    ledger = DeltaTable(sink.table_uri(PROFILE, LEDGER_TABLE))
    assert ledger.transaction_version(stream_app_id("batch:half")) == 1


def test_a_batch_in_one_of_two_tables_rolls_forward_from_its_staged_copy(sink, tmp_path):
    claim_then_die(sink, "batch:split", ids("m1", "m2"), ["kv", "log"], ["kv"])
    assert sink.count_rows(PROFILE, "log") == 0
    assert sink.seen_message_ids(PROFILE, ids("m1", "m2")).to_pylist() == ["m1", "m2"]
    assert sink.count_rows(PROFILE, "log") == 2 and sink.count_rows(PROFILE, "kv") == 1
    assert not list((tmp_path / "lake" / "acme_ns" / "_simbdp_pending").iterdir())
    with pytest.raises(DuplicateMessages):
        stream_commit(sink, "batch:x", ids("m2"), (["z"], [9]))


def test_stream_batches_stay_duplicates_after_compaction(sink):
    for i in range(6):
        stream_commit(sink, f"batch:c{i}", ids(f"m{i}"), ([f"k{i}"], [i]))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), log(["f"], [1]))
    tx.commit(entry("file1"))
    c = sink.compact(PROFILE, "log")
    assert c.files_before == 7 and c.files_after == 1
    dt = DeltaTable(sink.table_uri(PROFILE, "log"))
    assert dt.transaction_version(stream_app_id("batch:c0")) == 1
    assert dt.transaction_version(file_app_id("file1")) == 1
    with pytest.raises(DuplicateMessages):
        stream_commit(sink, "batch:later", ids("m0"), (["k0"], [0]))
    with pytest.raises(DuplicateIngestion):
        tx = sink.begin(PROFILE)
        tx.write(PROFILE.table("log"), log(["f"], [1]))
        tx.commit(entry("file1"))
    assert sink.count_rows(PROFILE, "log") == 7


def test_partition_by_must_name_a_column():
    with pytest.raises(ValueError, match="partition_by"):
        TenantProfile.model_validate({"tenant_id": "x", "tables": [
            {"name": "t", "partition_by": ["nope"], "columns": [{"name": "a", "type": "int"}]}]})


def test_path_as_a_file_uri_and_object_stores_refused(tmp_path):
    lake = tmp_path / "my lake"
    s = open_sink(SinkSettings(kind="delta", path=lake.as_uri()))
    s.ensure_tables(PROFILE)
    tx = s.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [1]))
    tx.commit(entry("uri"))
    assert DeltaTable(str(lake / "acme_ns" / "kv")).to_pyarrow_table().num_rows == 1
    with pytest.raises(ValueError, match="s3:// is not supported yet"):
        SinkSettings(kind="delta", path="s3://bucket/lake")
    with pytest.raises(ValueError, match="absolute path"):
        SinkSettings(kind="delta", path="file://lake")


def test_a_nullable_column_added_to_the_profile_is_added_to_the_table(sink):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("log"), log(["a"], [1]))
    tx.commit(entry("before"))
    data = PROFILE.model_dump()
    data["tables"][1]["columns"].append({"name": "note", "type": "text"})
    grown = TenantProfile.model_validate(data)
    sink.ensure_tables(grown)
    tx = sink.begin(grown)
    tx.write(grown.table("log"), pa.table({"k": ["b"], "v": [2], "day": ["2026-01-01"],
                                           "note": ["hi"]}).cast(grown.table("log").arrow_schema()))
    tx.commit(entry("after"))
    got = sink.read_rows(grown, "log").sort_by("k")
    assert got.column("note").to_pylist() == [None, "hi"]


class RacedSink(DeltaSink):
    """A Delta sink whose table gets another writer's commit right after each of its next
    ``races`` opens of ``kv``: its merge runs on a stale snapshot and Delta refuses it."""

    races = 0

    def open_table(self, profile, table):  # type: ignore[no-untyped-def]
        dt = super().open_table(profile, table)
        if table == "kv" and self.races > 0:
            self.races -= 1
            write_deltalake(self.table_uri(profile, table), kv([f"other{self.races}"], [0]),
                            mode="append")
        return dt


def test_a_delta_commit_conflict_with_another_writer_is_retried(tmp_path):
    sink = RacedSink(SinkSettings(kind="delta", path=tmp_path / "lake"))
    sink.ensure_tables(PROFILE)
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [1]))
    tx.commit(entry("first"))
    sink.races = 2  # both opens of the next commit see a concurrent commit land after them
    tx = sink.begin(PROFILE)
    tx.add_message_ids(ids("m1"))
    tx.write(PROFILE.table("kv"), kv(["a", "b"], [10, 20]))
    tx.commit(LedgerEntry("acme", "batch:raced", "stream:ev", "batch:raced", 1))
    assert sink.races == 0
    got = dict(zip(*sink.read_rows(PROFILE, "kv").to_pydict().values(), strict=True))
    assert got == {"a": 10, "b": 20, "other0": 0, "other1": 0}
    history = DeltaTable(sink.table_uri(PROFILE, "kv")).history()
    assert sum(1 for h in history if h.get("simbdp.ingestion_id") == "batch:raced") == 1
    assert sink.seen_message_ids(PROFILE, ids("m1")).to_pylist() == ["m1"]
