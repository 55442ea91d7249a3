"""The Delta Lake sink on real Delta tables in tmp_path: exactly once through app transactions."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from simbdp.coredms.base import LedgerEntry, open_sink
from simbdp.coredms.delta import LEDGER_TABLE, DeltaSink, file_app_id
from simbdp.errors import ConfigError, DuplicateIngestion
from simbdp.profiles.models import SinkSettings, TenantProfile

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


def test_stream_message_ids_are_refused(sink):
    with pytest.raises(ConfigError, match="batch files only"):
        sink.seen_message_ids(PROFILE, pa.array(["m1"]))
    with pytest.raises(ConfigError, match="batch files only"):
        sink.begin(PROFILE).add_message_ids(pa.array(["m1"]))


def test_partition_by_must_name_a_column():
    with pytest.raises(ValueError, match="partition_by"):
        TenantProfile.model_validate({"tenant_id": "x", "tables": [
            {"name": "t", "partition_by": ["nope"], "columns": [{"name": "a", "type": "int"}]}]})


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
