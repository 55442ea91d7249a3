"""Legal but large or hostile files: limits on what is really read, long fields, quoted
newlines, duplicate headers, mixed JSON types."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from simbdp.errors import FormatError, Rejected
from simbdp.formats import ReadOptions, ReadStats, detect_format, read_batches
from simbdp.profiles.models import CsvOptions

HEADER = b"created_utc,ups,subreddit,id,author,score,body\n"
ROW = b"1420070400,17,python,c1,user1,3,data lake stream batch tenant quota arrow\n"


def write_gzip_bomb(path: Path, inflated_bytes: int) -> Path:
    """A CSV that deflates ~1000:1: one 16 MB gzip member of repeated rows, concatenated."""
    chunk = ROW * (16 * 1024**2 // len(ROW))
    member = gzip.compress(chunk, compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(HEADER))
        for _ in range(inflated_bytes // len(chunk)):
            f.write(member)
    return path


def opts(path: Path, **kw: object) -> ReadOptions:
    ftype, comp = detect_format(path.name)  # type: ignore[misc]
    return ReadOptions(ftype, comp, block_bytes=1024**2, **kw)  # type: ignore[arg-type]


def read_all(path: Path, **kw: object) -> pa.Table:
    return pa.Table.from_batches(list(read_batches(path, opts(path, **kw))))


def test_gzip_bomb_stops_at_the_limit_with_flat_memory(tmp_path):
    path = write_gzip_bomb(tmp_path / "bomb.csv.gz", 4 * 1024**3)
    assert path.stat().st_size < 20 * 1024**2  # 4 GB inflated from a few MB
    limit = 100 * 1024**2
    stats, peak, t0 = ReadStats(), 0, time.perf_counter()
    with pytest.raises(Rejected) as e:
        for _ in read_batches(path, opts(path, max_bytes=limit, tenant="acme"), stats):
            peak = max(peak, pa.total_allocated_bytes())
    assert e.value.code == "file_too_big"
    assert "acme" in str(e.value) and "bomb.csv.gz" in str(e.value)
    assert "decompressed" in str(e.value)
    assert limit < stats.bytes_read <= limit + 16 * 1024**2  # stopped right at the limit
    assert time.perf_counter() - t0 < 10
    assert peak < 64 * 1024**2


def test_decompressed_bytes_are_counted(tmp_path):
    data = HEADER + ROW * 100_000
    path = tmp_path / "ok.csv.gz"
    path.write_bytes(gzip.compress(data))
    stats = ReadStats()
    assert sum(b.num_rows for b in read_batches(path, opts(path), stats)) == 100_000
    assert stats.bytes_read == len(data) and stats.rows == 100_000


def test_row_and_column_limits(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(HEADER + ROW * 200_000)
    with pytest.raises(Rejected) as e:
        read_all(path, max_rows=50_000)
    assert e.value.code == "too_many_rows" and "50000" in str(e.value)
    wide = tmp_path / "wide.csv"
    names = [f"c{i}" for i in range(20_000)]
    wide.write_text(",".join(names) + "\n" + ",".join("1" * len(names)) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(Rejected) as e:
        read_all(wide, max_columns=2_000)
    assert e.value.code == "too_many_columns" and "20000 columns" in str(e.value)
    assert len(str(e.value)) < 300 and time.perf_counter() - t0 < 5


@pytest.mark.parametrize("where", ["first", "middle"])
def test_a_5mb_field_loads(tmp_path, where):
    big = "x" * (5 * 1024**2)
    before = ROW * (0 if where == "first" else 200_000)
    path = tmp_path / "big.csv"
    path.write_bytes(HEADER + before + f'1,2,python,big,u,3,"{big}"\n'.encode() + ROW * 1000)
    t = read_all(path, column_types={"body": pa.string()})
    assert t.num_rows == len(before) // len(ROW) + 1001
    assert big in t.column("body").to_pylist()


def test_a_field_over_the_limit_fails_with_the_reason(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_bytes(HEADER + ROW * 10 + b'1,2,python,big,u,3,"' + b"x" * 3 * 1024**2 + b'"\n')
    with pytest.raises(FormatError) as e:
        read_all(path, csv=CsvOptions(max_field_bytes=1024**2))
    assert "row 11" in str(e.value) and "max_field_bytes" in str(e.value)
    assert "'body'" in str(e.value)


def test_a_5mb_json_value_loads(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b'{"a": "s"}\n' * 100_000 + json.dumps({"a": "y" * 5 * 1024**2}).encode()
                     + b"\n" + b'{"a": "t"}\n')
    assert read_all(path).num_rows == 100_002


def test_quoted_newlines_anywhere(tmp_path):
    rows = [f'{i},1,python,c{i},u,3,"line one\nline two, with a comma"\n' for i in range(300_000)]
    path = tmp_path / "nl.csv"
    path.write_bytes(HEADER + "".join(rows).encode())
    assert read_all(path, column_types={"body": pa.string()}).num_rows == 300_000


def test_error_line_is_the_files_after_quoted_newlines(tmp_path):
    good = '1,1,python,c,u,3,"two\nlines"\n' * 100_000
    path = tmp_path / "bad.csv"
    path.write_bytes(HEADER + good.encode() + b"1,2,3\n")
    with pytest.raises(FormatError) as e:
        read_all(path)
    assert "line 200002: expected 7 fields, saw 3" in str(e.value)


def test_duplicate_header_names_the_column(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_bytes(b"a,b,a\n1,2,3\n")
    with pytest.raises(FormatError, match="column 'a' more than once"):
        read_all(path, column_types={"a": pa.string(), "b": pa.string()})


def test_jsonl_with_mixed_types_reads_as_text_for_a_table(tmp_path):
    path = tmp_path / "mixed.jsonl.gz"
    lines = [json.dumps({"a": 1, "b": "x"}), json.dumps({"a": "zz", "b": 2}),
             json.dumps({"a": 2.5, "b": True}), json.dumps({"a": None, "b": None})] * 10_000
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    t = read_all(path, column_types={"a": pa.string(), "b": pa.string()})
    assert t.num_rows == 40_000
    assert t.slice(0, 4).to_pydict() == {"a": ["1", "zz", "2.5", None],
                                         "b": ["x", "2", "true", None]}


@pytest.mark.parametrize(("data", "words"), [
    (b'{"a": 1}\n{"a": \n{"a": 2}\n', "line 2: invalid JSON"),
    (b'{"a": 1}\n[1]\n', "line 2: expected a JSON object"),
])
def test_jsonl_read_as_text_names_the_bad_line(tmp_path, data, words):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    with pytest.raises(FormatError) as e:
        read_all(path, column_types={"a": pa.string()})
    assert words in str(e.value) and str(tmp_path) not in str(e.value)


def test_jsonl_fields_that_are_not_columns_come_through(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_bytes(b'{"a": 1, "nope": 2}\n{"a": "x"}\n')
    t = read_all(path, column_types={"a": pa.string()})
    assert t.column_names == ["a", "nope"] and t.column("nope").to_pylist() == ["2", None]


def test_zstd_bomb_stops_at_the_limit(tmp_path):
    chunk = ROW * (16 * 1024**2 // len(ROW))
    frame = zstandard.ZstdCompressor(level=19).compress(chunk)
    path = tmp_path / "bomb.csv.zst"
    path.write_bytes(zstandard.compress(HEADER) + frame * 256)  # 4 GB inflated
    stats = ReadStats()
    with pytest.raises(Rejected, match="decompressed"):
        for _ in read_batches(path, opts(path, max_bytes=50 * 1024**2), stats):
            pass
    assert stats.bytes_read <= 66 * 1024**2


def test_parquet_limits_come_from_its_metadata(tmp_path):
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({f"c{i}": [1, 2, 3] for i in range(50)}), path)
    with pytest.raises(Rejected) as e:
        read_all(path, max_columns=10)
    assert e.value.code == "too_many_columns"
    with pytest.raises(Rejected) as e:
        read_all(path, max_rows=2)
    assert e.value.code == "too_many_rows"
    stats = ReadStats()
    list(read_batches(path, opts(path), stats))
    assert stats.rows == 3 and stats.bytes_read > 0
