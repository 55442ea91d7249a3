import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from typer.testing import CliRunner

from simbdp.cli.main import app
from simbdp.errors import ConfigError
from simbdp.profiles import load_profile
from simbdp.profiles.infer import identifier, infer_profile


def columns(inferred):  # type: ignore[no-untyped-def]
    return {c["name"]: (c["type"], c.get("nullable", True))
            for c in inferred.profile["tables"][0]["columns"]}


def test_csv_types_nullability_key_and_na_tokens(tmp_path):
    p = tmp_path / "orders.csv"
    p.write_text("order_id,amount,day,at,note,ok\n"
                 "1,2.5,2024-01-02,2024-01-02 10:00:00,x,true\n"
                 "2,NA,2024-01-03,2024-01-03 11:00:00,,false\n"
                 "3,4,2024-01-04,2024-01-04 12:00:00,NA,true\n")
    got = infer_profile("acme", p)
    assert columns(got) == {"order_id": ("int64", False), "amount": ("float64", True),
                            "day": ("date", False), "at": ("timestamp", False),
                            "note": ("string", True), "ok": ("bool", False)}
    assert got.profile["tables"][0]["primary_key"] == ["order_id"]
    assert got.profile["csv"] == {"null_values": ["", "NA"]}
    assert got.profile["tables"][0]["name"] == "orders"


def test_names_made_into_identifiers_with_collisions_resolved(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("Dep Time,dep_time,2nd,,Ünïcode!\n1,1,1,1,1\n1,2,3,4,5\n")
    got = infer_profile("acme", p)
    assert list(columns(got)) == ["dep_time", "dep_time_2", "c_2nd", "column_4", "n_code"]
    assert got.renamed == {"Dep Time": "dep_time", "dep_time": "dep_time_2", "2nd": "c_2nd",
                           "": "column_4", "Ünïcode!": "n_code"}
    assert identifier("x" * 80, {"x" * 63}, 0) == "x" * 61 + "_2"
    [rename] = got.profile["apps"]
    assert rename["input_columns"] == dict.fromkeys(got.renamed, "string")
    assert "'Dep Time': 'dep_time'" in (got.app_source or "")


def test_identifier_names_need_no_app(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    got = infer_profile("acme", p)
    assert got.renamed == {} and got.app_source is None and "apps" not in got.profile


@pytest.mark.parametrize(("name", "data", "why"), [
    ("dup.csv", b"a,b,a\n1,2,3\n", "duplicate column names ['a']"),
    ("empty.csv", b"", "the sample is empty"),
    ("header.csv", b"a,b\n", "the sample is empty"),
    ("blank.jsonl", b"\n\n", "the sample is empty"),
    ("bin.csv", b"PK\x03\x04\x00\x00binary", "binary data (NUL bytes)"),
    ("latin.csv", b"a,b\n\xe9t\xe9,1\n", "not UTF-8 text at byte 4"),
    ("fake.csv.gz", b"not gzip at all", "cannot read it as gzip data"),
    ("fake.parquet", b"PAR1 nope", "not a Parquet file"),
    ("a.xlsx", b"x", "unknown file type"),
])
def test_bad_samples_get_one_clear_error_naming_the_file(tmp_path, name, data, why):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        infer_profile("acme", p)
    assert str(e.value).startswith(f"{p}: ")
    assert why in str(e.value)


def test_gzipped_jsonl_json_array_and_parquet(tmp_path):
    rows = [{"id": f"k{i}", "n": i, "tags": ["a"], "score": None if i % 2 else 1.5}
            for i in range(10)]
    (tmp_path / "ev.jsonl.gz").write_bytes(gzip.compress(
        "\n".join(json.dumps(r) for r in rows).encode()))
    (tmp_path / "ev.json").write_text(json.dumps(rows))
    pq.write_table(pa.table({"id": pa.array(range(10), pa.int32()),
                             "v": pa.array([1.5] * 10, pa.float32()),
                             "d": pa.array([None] * 10, pa.decimal128(10, 2))}),
                   tmp_path / "pq.parquet")
    (tmp_path / "ev.jsonl.zst").write_bytes(zstandard.compress(
        "\n".join(json.dumps(r) for r in rows).encode()))
    for name in ("ev.jsonl.gz", "ev.jsonl.zst", "ev.json"):
        got = infer_profile("acme", tmp_path / name)
        assert columns(got) == {"id": ("string", False), "n": ("int64", False),
                                "tags": ("json", False), "score": ("float64", True)}, name
        assert got.profile["batch"]["file_types"] == [name.split(".")[1]]
    got = infer_profile("acme", tmp_path / "pq.parquet")
    assert columns(got) == {"id": ("int32", False), "v": ("float32", False),
                            "d": ("decimal(10,2)", True)}
    assert got.profile["tables"][0]["primary_key"] == ["id"]


def test_semicolon_csv_and_tsv(tmp_path):
    (tmp_path / "a.csv").write_text("x;y\n1;a\n2;b\n")
    (tmp_path / "b.tsv").write_text("x\ty\n1\ta\n2\tb\n")
    assert infer_profile("acme", tmp_path / "a.csv").profile["csv"] == {"delimiter": ";"}
    assert infer_profile("acme", tmp_path / "b.tsv").profile["csv"] == {"delimiter": "\t"}


def test_cli_writes_a_profile_that_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.csv").write_text("id,v\n1,a\n2,b\n")
    run = CliRunner().invoke(app, ["tenants", "init", "acme", "--from", "s.csv"])
    assert run.exit_code == 0, run.output
    assert "wrote acme.yaml" in run.output
    profile = load_profile(tmp_path / "acme.yaml")
    assert profile.table("s").primary_key == ["id"]
    assert "yaml-language-server" in (tmp_path / "acme.yaml").read_text()
    again = CliRunner().invoke(app, ["tenants", "init", "acme", "--from", "s.csv"])
    assert again.exit_code == 2 and "already exists" in again.output
    wrong = CliRunner().invoke(app, ["tenants", "init", "acme", "--from", "s.csv", "-o",
                                     "other.yaml"])
    assert wrong.exit_code == 2 and "must be named acme.yaml" in wrong.output
    bad = CliRunner().invoke(app, ["tenants", "init", "Acme", "--from", "s.csv"])
    assert bad.exit_code == 2 and "not an identifier" in bad.output
    assert yaml.safe_load((tmp_path / "acme.yaml").read_text())["tenant_id"] == "acme"


def test_sample_is_bounded(tmp_path, monkeypatch):
    from simbdp.profiles import infer

    monkeypatch.setattr(infer, "SAMPLE_BYTES", 64)
    p = tmp_path / "big.csv"
    p.write_text("id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(100)))
    got = infer_profile("acme", p)
    assert not got.whole_file and 0 < got.sample_rows < 20
    (tmp_path / "long.csv").write_text("a" * 100)
    with pytest.raises(ConfigError, match="no line break in the first"):
        infer_profile("acme", tmp_path / "long.csv")
