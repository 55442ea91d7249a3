"""Read tenant files as Arrow record batches in bounded chunks.

CSV and JSON lines use pyarrow's streaming readers (C++, multi-threaded); JSON arrays, and JSON
lines read straight into a table (columns pinned as text), DuckDB's streaming JSON reader;
Parquet its row groups. gzip and zstd are decompressed as a stream, and the decompressed bytes
are counted as they are read: a file stops as soon as it passes ``max_bytes``, ``max_rows`` or
``max_columns``. Memory stays about a few ``block_bytes`` whatever the file size.

Quoted newlines are read anywhere in a CSV file (``newlines_in_values``: measured at no cost on
a 1M-row file). A row longer than a block makes the reader start again with bigger blocks, up
to ``csv.max_field_bytes``, skipping the rows it already gave. pyarrow infers the type of a
column not pinned in ``column_types`` from the first block; a later value that does not fit
raises a FormatError naming the column, the row and the value. On any error the reader looks
back through the file (the error path only) to name the line.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from simbdp.errors import FormatError, Rejected
from simbdp.formats.base import ReadOptions, ReadStats, detect_format
from simbdp.formats.locate import locate
from simbdp.scratch import scratch

__all__ = ["detect_format", "read_batches"]

_PARQUET_ROWS = 128 * 1024
_Make = Callable[[int, pa.Schema | None], Iterable[pa.RecordBatch]]


def read_batches(path: Path, options: ReadOptions, stats: ReadStats | None = None
                 ) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows as record batches.

    Raises FormatError on malformed input, Rejected (``file_too_big``, ``too_many_rows``,
    ``too_many_columns``) as soon as the file passes a limit. ``stats`` counts the
    decompressed bytes and the rows read so far.
    """
    stats = stats if stats is not None else ReadStats()
    size = path.stat().st_size
    if size == 0:
        raise FormatError(f"{_label(path, options)}: file is empty")
    if not _counted(options):
        stats.bytes_read = size
        _check_bytes(path, options, stats)
    readers = {"csv": _csv, "jsonl": _jsonl, "json": _json_array, "parquet": _parquet}
    yield from readers[options.file_type](path, options, stats)


def _label(path: Path, options: ReadOptions) -> str:
    return f"tenant {options.tenant!r}: {path.name}" if options.tenant else path.name


def _counted(options: ReadOptions) -> bool:
    """Whether the bytes read are counted as they come (decompressed or decrypted)."""
    return options.compression != "none" or options.decrypt is not None


# limits ------------------------------------------------------------------------------------
class _Counting(io.RawIOBase):
    """A decompressing stream that counts the bytes it hands out and stops past ``limit``."""

    def __init__(self, raw: pa.NativeFile | BinaryIO, stats: ReadStats, limit: int | None):
        super().__init__()
        self._raw, self._stats, self._limit = raw, stats, limit

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(None if size is None or size < 0 else size)
        self._stats.bytes_read += len(data)
        if self._limit is not None and self._stats.bytes_read > self._limit:
            raise OSError(f"decompressed size limit of {self._limit} bytes passed")
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open(path: Path, options: ReadOptions, stats: ReadStats) -> pa.NativeFile:
    if not _counted(options):
        return pa.input_stream(str(path))
    raw: pa.NativeFile | BinaryIO
    if options.decrypt is None:
        raw = pa.input_stream(str(path), compression=options.compression)
    else:  # decrypted, then decompressed, as it is read: no plain text on disk
        raw = options.decrypt.open(path, _label(path, options))
        if options.compression != "none":
            raw = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), options.compression)
    return pa.PythonFile(_Counting(raw, stats, options.max_bytes), mode="r")


def _check_bytes(path: Path, options: ReadOptions, stats: ReadStats) -> None:
    if options.max_bytes is not None and stats.bytes_read > options.max_bytes:
        how = ("decompressed, " if options.compression != "none" else
               "decrypted, " if options.decrypt is not None else "")
        raise Rejected(f"{_label(path, options)}: over {options.max_bytes} bytes ({how}"
                       f"the limit of batch.max_file_bytes); stopped after {stats.rows} rows",
                       "file_too_big")


def _check_rows(path: Path, options: ReadOptions, stats: ReadStats) -> None:
    if options.max_rows is not None and stats.rows > options.max_rows:
        raise Rejected(f"{_label(path, options)}: more than {options.max_rows} rows (the limit "
                       "of batch.max_rows_per_file)", "too_many_rows")


def _check_schema(path: Path, options: ReadOptions, schema: pa.Schema | None) -> None:
    if schema is None:
        return
    if options.max_columns is not None and len(schema) > options.max_columns:
        raise Rejected(f"{_label(path, options)}: {len(schema)} columns, over the limit of "
                       f"{options.max_columns} (batch.max_columns)", "too_many_columns")
    twice = [n for n, k in Counter(schema.names).items() if k > 1]
    if twice:
        raise FormatError(f"{_label(path, options)}: the header names column {twice[0]!r} "
                          f"more than once" + (f" (and {len(twice) - 1} more)"
                                               if len(twice) > 1 else ""))


# reading, with one restart per block size ---------------------------------------------------
def _guarded(path: Path, options: ReadOptions, stats: ReadStats, make: _Make
             ) -> Iterator[pa.RecordBatch]:
    """Read the batches of ``make(block_bytes, schema)``; when a row is longer than a block,
    start again with bigger blocks (up to the field limit), skipping the rows already given,
    with the schema they had."""
    block, schema = options.block_bytes, None
    cap = max(block, int(options.csv.max_field_bytes) + 1024**2)
    while True:
        skip = stats.rows
        try:
            reader = make(block, schema)
            _check_schema(path, options, getattr(reader, "schema", None))
            for batch in reader:
                if skip:
                    if batch.num_rows <= skip:
                        skip -= batch.num_rows
                        continue
                    batch, skip = batch.slice(skip), 0
                if schema is None:
                    _check_schema(path, options, batch.schema)
                    schema = batch.schema
                stats.rows += batch.num_rows
                _check_rows(path, options, stats)
                yield batch
            return
        except (pa.ArrowException, OSError, ValueError, EOFError) as e:
            _check_bytes(path, options, stats)
            if "straddl" in str(e) and block < cap:
                block = min(cap, block * 8)
                if _counted(options):
                    stats.bytes_read = 0  # counted again from the start
                continue
            raise _fail(path, options, e, stats, "straddl" in str(e)) from e


def _fail(path: Path, options: ReadOptions, err: Exception, stats: ReadStats, too_long: bool
          ) -> FormatError:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    low, label = msg.lower(), _label(path, options)
    if options.compression != "none" and any(
            w in low for w in ("zlib", "inflate", "gzip", "truncated", "zstd", "decompress",
                               "unknown frame", "corrupt")):
        return FormatError(f"{label}: truncated or corrupt {options.compression} stream ({msg})")
    if "empty" in low and stats.rows == 0:
        return FormatError(f"{label}: file is empty")
    where = None
    if options.file_type in ("csv", "jsonl"):
        with _open(path, options, ReadStats()) as stream:
            where = locate(stream, options)
    if where:
        return FormatError(f"{label}: {where}")
    if too_long:
        return FormatError(f"{label}: row {stats.rows + 1} is longer than the limit of "
                           f"{int(options.csv.max_field_bytes)} bytes (csv.max_field_bytes)")
    m = re.search(r"Row #(\d+)", msg)
    row = f"row {stats.rows + int(m.group(1))}: " if m else ""
    return FormatError(f"{label}: {row}{msg}")


def _csv(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[pa.RecordBatch]:
    o = options.csv
    parse = pacsv.ParseOptions(delimiter=o.delimiter, quote_char=o.quote_char,
                               newlines_in_values=True)

    def make(block: int, schema: pa.Schema | None) -> pacsv.CSVStreamingReader:
        types = dict(options.column_types)
        if schema is not None:
            types.update({f.name: f.type for f in schema})
        read = pacsv.ReadOptions(block_size=block, autogenerate_column_names=not o.header)
        convert = pacsv.ConvertOptions(column_types=types, null_values=o.null_values,
                                       strings_can_be_null=True,
                                       quoted_strings_can_be_null=False)
        return pacsv.open_csv(_open(path, options, stats), read_options=read,
                              parse_options=parse, convert_options=convert)

    for batch in _guarded(path, options, stats, make):
        if any(pa.types.is_binary(f.type) for f in batch.schema):
            # pyarrow infers "binary" for a column with invalid UTF-8 instead of failing
            with _open(path, options, ReadStats()) as stream:
                where = locate(stream, options)
            raise FormatError(f"{_label(path, options)}: {where or 'invalid UTF-8'}")
        _check_fields(path, options, stats, batch)
        yield batch


def _check_fields(path: Path, options: ReadOptions, stats: ReadStats, batch: pa.RecordBatch
                  ) -> None:
    """A text value longer than ``csv.max_field_bytes`` fails the file (blocks grow to it, so
    a little over it could still be read)."""
    limit = int(options.csv.max_field_bytes)
    if batch.nbytes <= limit:
        return
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if not pa.types.is_string(col.type):
            continue
        longer = pc.greater(pc.binary_length(col), limit)
        if pc.any(longer).as_py():
            row = stats.rows - batch.num_rows + pc.index(longer, True).as_py() + 1
            raise FormatError(f"{_label(path, options)}: row {row}: column {name!r} holds a "
                              f"value longer than the limit of {limit} bytes "
                              "(csv.max_field_bytes)")


def _jsonl(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[pa.RecordBatch]:
    pinned = options.column_types
    text = bool(pinned) and all(pa.types.is_string(t) for t in pinned.values())
    if text and options.decrypt is None:
        # read as text for a table: a value of another JSON type becomes its text and is
        # cast (or rejected, row by row) by conform
        yield from _duckdb_json(path, options, stats, "newline_delimited", list(pinned))
        return
    if text:  # DuckDB reads files by name only: Arrow infers, the values go on as text
        pinned = {}

    def make(block: int, schema: pa.Schema | None) -> pajson.JSONStreamingReader:
        explicit = schema or (pa.schema(list(pinned.items())) if pinned else None)
        parse = pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer")
        return pajson.open_json(_open(path, options, stats),
                                read_options=pajson.ReadOptions(block_size=block),
                                parse_options=parse)

    for batch in _guarded(path, options, stats, make):
        _check_fields(path, options, stats, batch)
        yield _as_text(batch) if text else batch


def _as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    cols = []
    for col in batch.columns:
        try:
            cols.append(col if pa.types.is_string(col.type) else col.cast(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols.append(col)  # a nested value: conform names it
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def _json_array(path: Path, options: ReadOptions, stats: ReadStats
                ) -> Iterator[pa.RecordBatch]:
    if options.decrypt is not None:
        raise Rejected(f"{_label(path, options)}: an encrypted JSON array cannot be read as a "
                       "stream; send JSON lines (.jsonl.enc) or CSV", "file_type")
    yield from _duckdb_json(path, options, stats, "array", None)


_JSON_SAMPLE_ROWS = 2048  # rows whose fields come through when a table names the columns


def _duckdb_json(path: Path, options: ReadOptions, stats: ReadStats, fmt: str,
                 text_columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """DuckDB's streaming JSON reader. It decompresses by itself, so for a compressed file
    the decompressed size is estimated from the Arrow bytes read (a lower bound)."""
    import duckdb

    comp = {"none": "none", "gzip": "gzip", "zstd": "zstd"}[options.compression]
    source = (f"read_json($p, format='{fmt}', records='true', compression=$c, "
              f"maximum_object_size={int(options.csv.max_field_bytes)}")
    params = {"p": str(path), "c": comp}
    # DuckDB's JSON buffers are twice the largest object, one per thread (of two)
    con = scratch(memory_mb=256 + 4 * int(options.csv.max_field_bytes) // 1024**2)
    rows = max(1024, options.block_bytes // 256)
    try:
        cols = ""
        if text_columns is not None:
            # fields of the first rows that are not columns come through too (as text), so
            # conform names them as unexpected, as it does for CSV
            # (the keys of those rows, not DESCRIBE: inferring 100 columns' types of 2,048
            # rows costs ten times the read of a small file)
            seen = [r[0] for r in con.sql(
                "SELECT DISTINCT unnest(json_keys(json)) AS k FROM (SELECT json FROM "
                f"read_json_objects($p, format='{fmt}', compression=$c, maximum_object_size="
                f"{int(options.csv.max_field_bytes)}) LIMIT {_JSON_SAMPLE_ROWS}) ORDER BY k",
                params=params).fetchall()]
            names = text_columns + [c for c in seen if c not in text_columns]
            struct = ", ".join("'" + c.replace("'", "''") + "': 'VARCHAR'" for c in names)
            cols = f", columns={{{struct}}}"
        reader = con.sql(f"SELECT * FROM {source}{cols})", params=params).to_arrow_reader(rows)
        _check_schema(path, options, reader.schema)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            stats.rows += batch.num_rows
            if options.compression != "none":
                stats.bytes_read += batch.nbytes
                _check_bytes(path, options, stats)
            _check_rows(path, options, stats)
            yield batch
    except duckdb.Error as e:
        where = None
        if fmt == "newline_delimited":
            with _open(path, options, ReadStats()) as stream:
                where = locate(stream, options)
        # DuckDB names the file by its full path: the tenant sees only its name
        msg = str(e).splitlines()[0].replace(str(path), path.name)
        what = "not a JSON array of objects" if fmt == "array" else "invalid JSON lines"
        raise FormatError(f"{_label(path, options)}: {where or f'{what}: {msg}'}") from e
    finally:
        con.close()


def _parquet(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq  # here: a worker reading CSV never needs it

    try:
        f = pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as e:
        raise FormatError(f"{_label(path, options)}: not a Parquet file ({e})") from e
    meta = f.metadata
    # the limits are checked on the file's own metadata before reading anything
    stats.bytes_read = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    _check_bytes(path, options, stats)
    _check_schema(path, options, f.schema_arrow)
    if options.max_rows is not None and meta.num_rows > options.max_rows:
        stats.rows = meta.num_rows
        _check_rows(path, options, stats)
    yield from _guarded(path, options, stats,
                        lambda _block, _schema: f.iter_batches(batch_size=_PARQUET_ROWS))
