import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from simbdp.datagen import reddit_comments, write_reddit_csv
from simbdp.errors import FormatError
from simbdp.formats import ReadOptions, detect_format, read_batches


def read(path, **kw):  # type: ignore[no-untyped-def]
    ftype, comp = detect_format(path.name)
    return pa.Table.from_batches(list(read_batches(path, ReadOptions(ftype, comp, **kw))))


@pytest.mark.parametrize(("name", "expected"), [
    ("a.csv", ("csv", "none")), ("a.CSV.GZ", ("csv", "gzip")), ("a.jsonl.zst", ("jsonl", "zstd")),
    ("a.ndjson", ("jsonl", "none")), ("a.json", ("json", "none")),
    ("a.parquet", ("parquet", "none")), ("a.parquet.gz", None), ("a.xml", None), ("a", None)])
def test_detect_format(name, expected):
    assert detect_format(name) == expected


def test_every_format_and_compression_round_trips(tmp_path):
    t = reddit_comments(500)
    rows = t.to_pylist()
    csv = tmp_path / "a.csv"
    write_reddit_csv(csv, 500)
    lines = "\n".join(json.dumps(r) for r in rows).encode()
    (tmp_path / "a.jsonl").write_bytes(lines)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "a.csv.zst").write_bytes(zstandard.compress(csv.read_bytes()))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(t, tmp_path / "a.parquet")
    for name in ("a.csv", "a.jsonl", "a.jsonl.gz", "a.csv.zst", "a.json", "a.parquet"):
        got = read(tmp_path / name)
        assert got.num_rows == 500, name
        assert got.column("id").to_pylist() == t.column("id").to_pylist(), name


def test_big_file_comes_in_bounded_chunks(tmp_path):
    path = write_reddit_csv(tmp_path / "big.csv", 200_000)
    opts = ReadOptions("csv", "none", block_bytes=1024 * 1024)
    peak, rows, batches = 0, 0, 0
    for b in read_batches(path, opts):
        rows += b.num_rows
        batches += 1
        peak = max(peak, pa.total_allocated_bytes())
    assert rows == 200_000 and batches > 10
    assert peak < 64 * 1024 * 1024  # far below the 25 MB file times any factor


@pytest.mark.parametrize(("name", "data", "words"), [
    ("e.csv", b"", "file is empty"),
    ("f.csv", b"a,b\n1,2\n3,4,5\n", "line 3: expected 2 fields, saw 3"),
    ("u.csv", b"a,b\n1,2\n3,\xff\xfe\n", "line 3: invalid UTF-8"),
    ("t.csv.gz", gzip.compress(b"a,b\n" + b"1,2\n" * 5000)[:-50], "gzip"),
    ("z.csv.zst", b"\x28\xb5\x2f\xfd garbage", "zstd"),
    ("j.jsonl", b'{"a": 1}\n{"a": \n', "line 2: invalid JSON"),
    ("arr.json", b'{"a": 1}', "JSON array"),
    ("p.parquet", b"not parquet at all", "not a Parquet file"),
])
def test_malformed_input_names_file_and_place(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(FormatError) as e:
        read(path)
    assert words in str(e.value) and name in str(e.value)


def test_pinned_type_error_names_column_and_value(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"a,b\n1,5\n2,lots\n")
    with pytest.raises(FormatError, match="lots"):
        read(path, column_types={"b": pa.int64()})


def test_header_only_csv_is_zero_rows(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b"a,b\n")
    assert sum(b.num_rows for b in read_batches(path, ReadOptions("csv"))) == 0
