"""Read tenant files as Arrow record batches in bounded chunks.

CSV and JSON lines use pyarrow's streaming readers (C++, multi-threaded), JSON arrays DuckDB's
streaming JSON reader, Parquet its row groups; gzip and zstd are decompressed as a stream.
Memory stays about ``block_bytes`` per batch whatever the file size.

pyarrow infers the type of a CSV column not pinned in ``column_types`` from the first block; a
later value that does not fit raises a FormatError naming the column, the row and the value.
On any error the reader looks back through the file (the error path only) to name the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path, PurePath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from simbdp.errors import FormatError
from simbdp.formats.base import Compression, ReadOptions
from simbdp.profiles.models import FileType

__all__ = ["detect_format", "read_batches"]

_TYPES: dict[str, FileType] = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "jsonl",
                               ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS: dict[str, Compression] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd",
                                         ".zstd": "zstd"}
_PARQUET_ROWS = 128 * 1024


def detect_format(filename: str) -> tuple[FileType, Compression] | None:
    """File type and compression from the name's suffixes, or None if not a known type."""
    p = PurePath(filename.lower())
    compression: Compression = "none"
    suffix = p.suffix
    if suffix in _COMPRESSIONS:
        compression = _COMPRESSIONS[suffix]
        suffix = PurePath(p.stem).suffix
    ftype = _TYPES.get(suffix)
    if ftype is None or (ftype == "parquet" and compression != "none"):
        return None
    return ftype, compression


def _open(path: Path, compression: Compression) -> pa.NativeFile:
    return pa.input_stream(str(path), compression=None if compression == "none" else compression)


def read_batches(path: Path, options: ReadOptions) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows as record batches; raise FormatError on malformed input."""
    if path.stat().st_size == 0:
        raise FormatError(f"{path.name}: file is empty")
    readers = {"csv": _csv, "jsonl": _jsonl, "json": _json_array, "parquet": _parquet}
    yield from readers[options.file_type](path, options)


def _fail(path: Path, options: ReadOptions, err: Exception, rows_before: int) -> FormatError:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    low = msg.lower()
    if options.compression != "none" and any(
            w in low for w in ("zlib", "inflate", "gzip", "truncated", "zstd", "decompress",
                               "unknown frame", "corrupt")):
        return FormatError(f"{path.name}: truncated or corrupt {options.compression} stream "
                           f"({msg})")
    if "empty" in low and rows_before == 0:
        return FormatError(f"{path.name}: file is empty")
    where = _locate(path, options) if options.file_type in ("csv", "jsonl") else None
    if where:
        return FormatError(f"{path.name}: {where}")
    m = re.search(r"Row #(\d+)", msg)
    row = f"row {rows_before + int(m.group(1))}: " if m else ""
    return FormatError(f"{path.name}: {row}{msg}")


def _guarded(path: Path, options: ReadOptions, make: object) -> Iterator[pa.RecordBatch]:
    rows = 0
    try:
        reader = make()  # type: ignore[operator]
        for batch in reader:
            rows += batch.num_rows
            yield batch
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        raise _fail(path, options, e, rows) from e


def _csv(path: Path, options: ReadOptions) -> Iterator[pa.RecordBatch]:
    o = options.csv
    read = pacsv.ReadOptions(block_size=options.block_bytes,
                             autogenerate_column_names=not o.header)
    parse = pacsv.ParseOptions(delimiter=o.delimiter, quote_char=o.quote_char,
                               newlines_in_values=False)
    convert = pacsv.ConvertOptions(column_types=options.column_types, null_values=o.null_values,
                                   strings_can_be_null=True, quoted_strings_can_be_null=False)
    for batch in _guarded(path, options, lambda: pacsv.open_csv(
            _open(path, options.compression), read_options=read, parse_options=parse,
            convert_options=convert)):
        if any(pa.types.is_binary(f.type) for f in batch.schema):
            # pyarrow infers "binary" for a column with invalid UTF-8 instead of failing
            raise FormatError(f"{path.name}: {_locate(path, options) or 'invalid UTF-8'}")
        yield batch


def _jsonl(path: Path, options: ReadOptions) -> Iterator[pa.RecordBatch]:
    schema = pa.schema(list(options.column_types.items())) if options.column_types else None
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    read = pajson.ReadOptions(block_size=options.block_bytes)
    yield from _guarded(path, options, lambda: pajson.open_json(
        _open(path, options.compression), read_options=read, parse_options=parse))


def _json_array(path: Path, options: ReadOptions) -> Iterator[pa.RecordBatch]:
    import duckdb

    comp = {"none": "none", "gzip": "gzip", "zstd": "zstd"}[options.compression]
    con = duckdb.connect()
    con.execute("SET memory_limit='256MB'; SET threads=2")
    rows = max(1024, options.block_bytes // 256)
    try:
        reader = con.sql("SELECT * FROM read_json($p, format='array', compression=$c)",
                         params={"p": str(path), "c": comp}).to_arrow_reader(rows)
        n = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            n += batch.num_rows
            yield batch
    except duckdb.Error as e:
        msg = str(e).splitlines()[0]
        raise FormatError(f"{path.name}: not a JSON array of objects: {msg}") from e
    finally:
        con.close()


def _parquet(path: Path, options: ReadOptions) -> Iterator[pa.RecordBatch]:
    def make() -> Iterator[pa.RecordBatch]:
        try:
            f = pq.ParquetFile(str(path))
        except (pa.ArrowInvalid, OSError) as e:
            raise FormatError(f"{path.name}: not a Parquet file ({e})") from e
        return f.iter_batches(batch_size=_PARQUET_ROWS)

    yield from _guarded(path, options, make)


# the error path: find the first bad line by reading the file again -------------------------
def _locate(path: Path, options: ReadOptions) -> str | None:
    """Describe the first bad line (UTF-8, field count, JSON) or None if none is found."""
    try:
        with _open(path, options.compression) as raw:
            stream = io.BufferedReader(raw)  # type: ignore[arg-type]
            if options.file_type == "csv":
                return _locate_csv(stream, options)
            return _locate_jsonl(stream)
    except (pa.ArrowException, OSError, ValueError, EOFError):
        return None


def _lines(stream: io.BufferedReader) -> Iterator[tuple[int, str | None]]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for n, line in enumerate(stream, start=1):
        try:
            yield n, decoder.decode(line)
        except UnicodeDecodeError:
            yield n, None
            return


def _locate_csv(stream: io.BufferedReader, options: ReadOptions) -> str | None:
    o = options.csv
    expected: int | None = None
    for n, text in _lines(stream):
        if text is None:
            return f"line {n}: invalid UTF-8"
        if not text.strip():
            continue
        fields = next(csv.reader([text], delimiter=o.delimiter, quotechar=o.quote_char))
        if expected is None:
            expected = len(fields)
        elif len(fields) != expected:
            return f"line {n}: expected {expected} fields, saw {len(fields)}"
    return None


def _locate_jsonl(stream: io.BufferedReader) -> str | None:
    import json

    for n, text in _lines(stream):
        if text is None:
            return f"line {n}: invalid UTF-8"
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            return f"line {n}: invalid JSON ({e.msg})"
        if not isinstance(value, dict):
            return f"line {n}: expected a JSON object, saw {type(value).__name__}"
    return None
