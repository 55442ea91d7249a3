import pyarrow as pa
import pytest

from simbdp.coredms.base import LedgerEntry, open_sink
from simbdp.errors import DuplicateIngestion, DuplicateMessages
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import SinkSettings

pytestmark = pytest.mark.postgres

PROFILE = TenantProfile.model_validate({
    "tenant_id": "acme",
    "tables": [{"name": "kv", "primary_key": ["k"], "columns": [
        {"name": "k", "type": "text"}, {"name": "v", "type": "int"},
        {"name": "amount", "type": "decimal(10,2)"}, {"name": "ts", "type": "timestamp"}]},
        {"name": "log", "columns": [{"name": "k", "type": "text"}, {"name": "v", "type": "int"}]}],
})


def entry(key):  # type: ignore[no-untyped-def]
    return LedgerEntry(tenant="acme", key=key, source=f"{key}.csv", ingestion_id=key, rows=1)


@pytest.fixture
def sink(pg_dsn):
    s = open_sink(SinkSettings(kind="postgres", dsn=pg_dsn))
    s.ensure_tables(PROFILE)
    s.ensure_tables(PROFILE)
    yield s
    s.close()


def kv(ks, vs):  # type: ignore[no-untyped-def]
    schema = PROFILE.table("kv").arrow_schema()
    import decimal
    from datetime import datetime
    return pa.table({"k": ks, "v": vs, "amount": [decimal.Decimal("1.25")] * len(ks),
                     "ts": [datetime(2024, 1, 1)] * len(ks)}, schema=schema)


def test_copy_upsert_ledger_and_read(sink):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a", "b"], [1, 2]))
    tx.write(PROFILE.table("log"), pa.table({"k": ["a"], "v": [1]},
                                            schema=PROFILE.table("log").arrow_schema()))
    tx.commit(entry("one"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [10]))
    tx.commit(entry("two"))
    assert sink.count_rows(PROFILE, "kv") == 2
    got = sink.read_rows(PROFILE, "kv", where={"k": "a"})
    assert got.column("v").to_pylist() == [10]
    assert str(got.column("amount")[0].as_py()) == "1.25"
    assert sink.ledger_lookup(PROFILE, "two").ingestion_id == "two"


def test_duplicate_and_rollback(sink):
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a"], [1]))
    tx.commit(entry("same"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["z"], [1]))
    with pytest.raises(DuplicateIngestion):
        tx.commit(entry("same"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["y"], [1]))
    tx.rollback()
    assert sink.count_rows(PROFILE, "kv") == 1


def test_message_ids(sink):
    tx = sink.begin(PROFILE)
    tx.add_message_ids(pa.array(["m1", "m2"]))
    tx.commit(entry("b1"))
    assert sink.seen_message_ids(PROFILE, pa.array(["m2", "m9"])).to_pylist() == ["m2"]
    tx = sink.begin(PROFILE)
    with pytest.raises(DuplicateMessages):
        tx.add_message_ids(pa.array(["m1"]))


def test_upsert_counts_rows_updated(sink):
    # the keyed table: rows whose key is there already are updated, not loaded again
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["a", "b", "c"], [1, 2, 3]))
    assert tx.rows_updated == 0
    tx.commit(entry("first"))
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["b", "c", "d"], [20, 30, 4]))
    tx.write(PROFILE.table("log"), pa.table({"k": ["x", "y"], "v": [1, 2]},
                                            schema=PROFILE.table("log").arrow_schema()))
    assert tx.rows_updated == 2  # b and c; d and the unkeyed log rows are new
    tx.commit(entry("second"))
    assert sink.count_rows(PROFILE, "kv") == 4
    tx = sink.begin(PROFILE)
    tx.write(PROFILE.table("kv"), kv(["e"], [5]))
    tx.rollback()
    assert tx.rows_updated == 0
