import pyarrow as pa
import pytest

from simbdp.errors import SchemaError
from simbdp.profiles.tables import TableSpec
from simbdp.quality import conform, dedupe_last, write_rejected

TABLE = TableSpec.model_validate({
    "name": "t", "primary_key": ["id"],
    "columns": [{"name": "id", "type": "text"}, {"name": "ups", "type": "int"},
                {"name": "ts", "type": "timestamp"}, {"name": "temp", "type": "double"},
                {"name": "note", "type": "text"}],
    "quality": [{"name": "hot", "column": "temp", "check": "max", "value": 60},
                {"name": "code", "column": "id", "check": "regex", "value": "^[a-z]+$"}],
})


def test_fast_path_keeps_every_row():
    data = pa.table({"id": ["a", "b"], "ups": ["1", "2"], "ts": ["2024-01-02 03:04:05",
                     "2024-01-02T03:04:05"], "temp": [1.5, 2.0]})
    c = conform(data, TABLE, "f.csv")
    assert (c.rows_good, c.rows_rejected) == (2, 0)
    assert c.good.schema == TABLE.arrow_schema()
    assert c.good.column("note").null_count == 2  # missing nullable column filled


def test_bad_rows_are_rejected_with_reasons_and_row_numbers():
    data = pa.table({"id": ["a", "b", None, "d", "e", "F"],
                     "ups": ["1", "lots", "3", "4", "5", "6"],
                     "ts": ["2024-01-01", "2024-01-01", "1700000000", "x", "2024-01-01",
                            "2024-01-01"],
                     "temp": ["1", "2", "3", "4", "99", "5"]})
    c = conform(data, TABLE, "f.csv")
    assert c.good.column("id").to_pylist() == ["a"]
    reasons = dict(zip(c.rejected.column("_row").to_pylist(),
                       c.rejected.column("_reason").to_pylist(), strict=True))
    assert reasons[1] == "column 'ups': value 'lots' is not int64"
    assert reasons[2] == "column 'id' is null but required"
    assert "column 'ts': value 'x'" in reasons[3]
    assert "rule 'hot'" in reasons[4]
    assert "rule 'code'" in reasons[5]
    assert c.rule_failures == {"hot": 1, "code": 1}


def test_epoch_seconds_into_timestamp():
    t = TableSpec.model_validate({"name": "t", "columns": [{"name": "ts", "type": "timestamp"}]})
    c = conform(pa.table({"ts": [1_700_000_000]}), t, "f")
    assert str(c.good.column("ts")[0].as_py()) == "2023-11-14 22:13:20"


def test_missing_required_and_extra_columns_fail_the_batch():
    with pytest.raises(SchemaError, match="missing required column"):
        conform(pa.table({"ups": [1]}), TABLE, "f.csv")
    with pytest.raises(SchemaError, match=r"unexpected columns \['nope'\]"):
        conform(pa.table({"id": ["a"], "nope": [1]}), TABLE, "f.csv")


def test_dedupe_last_keeps_last_in_order():
    t = pa.table({"k": [1, 2, 1, 3, 2], "v": [1, 2, 3, 4, 5]})
    assert dedupe_last(t, ["k"]).to_pylist() == [{"k": 1, "v": 3}, {"k": 3, "v": 4},
                                                  {"k": 2, "v": 5}]


def test_write_rejected_appends_with_one_header(tmp_path):
    data = pa.table({"id": ["a", None], "ups": ["x", "1"]})
    c = conform(data, TABLE, "f")
    out = tmp_path / "r.csv"
    write_rejected(c.rejected, out)
    write_rejected(c.rejected, out)
    lines = out.read_text().splitlines()
    assert lines[0].startswith('"id"') and len(lines) == 5
