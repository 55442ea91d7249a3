"""Infer a tenant profile from a sample file (``simbdp tenants init``).

A bounded sample (the first ``SAMPLE_BYTES`` decompressed bytes of a CSV or JSON file, the
first ``SAMPLE_ROWS`` rows of a Parquet file) is read in one block, so pyarrow's (or, for JSON
arrays, DuckDB's) type inference sees all of it. Column names are made into identifiers,
types into the profile's type names, a column with no null in the sample is ``nullable:
false``, and the first integer or text column unique and not null in the sample becomes the
primary key. Everything inferred holds for the sample only: the printout says how much that
was.
"""

from __future__ import annotations

import csv as pycsv
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from simbdp.errors import ConfigError
from simbdp.formats import detect_format
from simbdp.profiles.models import TenantProfile

__all__ = ["SAMPLE_BYTES", "SAMPLE_ROWS", "Inferred", "identifier", "infer_profile"]

SAMPLE_BYTES = 16 * 1024**2
SAMPLE_ROWS = 100_000
#: texts read as null when they fill a field (only those found in the sample are kept)
NULL_TOKENS = ["", "NA", "N/A", "NULL", "null", "None", "nan", "NaN"]
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DEFAULT_FILE_BYTES = 100 * 1024**2


@dataclass
class Inferred:
    """A profile inferred from a sample, and what the user should know about it."""

    profile: dict[str, Any]
    renamed: dict[str, str] = field(default_factory=dict)  # original name -> identifier
    null_values: list[str] = field(default_factory=list)
    sample_rows: int = 0
    whole_file: bool = True
    #: source of ``rename_columns.py``, the batch app that renames columns, when names changed
    app_source: str | None = None


RENAME_APP = '''"""Written by `simbdp tenants init`: gives the file's columns the table's names."""

NAMES = {names}


def wrangle(data, ctx):
    return data.rename_columns([NAMES.get(n, n) for n in data.column_names])
'''


def identifier(name: str, taken: set[str], position: int) -> str:
    """``name`` made into a profile identifier not in ``taken`` (then added to it)."""
    base = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if not base:
        base = f"column_{position + 1}"
    elif not base[0].isalpha():
        base = f"c_{base}"
    base = base[:63]
    out, n = base, 2
    while out in taken:
        suffix = f"_{n}"
        out, n = base[: 63 - len(suffix)] + suffix, n + 1
    taken.add(out)
    return out


def _fail(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path}: {why}", [(str(path), "", why)])


def _text_sample(path: Path, compression: str) -> tuple[bytes, bool]:
    """The first SAMPLE_BYTES (decompressed) cut at the last full line; whether that is all."""
    try:
        with pa.input_stream(path, compression=None if compression == "none" else compression
                             ) as f:
            data = f.read(SAMPLE_BYTES + 1)
    except (OSError, pa.ArrowException) as e:
        raise _fail(path, f"cannot read it as {compression} data: {e}") from e
    whole = len(data) <= SAMPLE_BYTES
    if not whole:
        end = data.rfind(b"\n", 0, SAMPLE_BYTES)
        if end < 0:
            raise _fail(path, f"no line break in the first {SAMPLE_BYTES // 1024**2} MiB: not "
                              "a CSV or JSON lines file")
        data = data[: end + 1]
    if b"\x00" in data[:65536]:
        raise _fail(path, "binary data (NUL bytes), not a CSV or JSON text file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(path, f"not UTF-8 text at byte {e.start}: a binary file, or re-encode it "
                          "as UTF-8") from e
    if not data.strip():
        raise _fail(path, "the sample is empty: no rows to infer a table from")
    return data, whole


def _delimiter(path: Path, first_line: str) -> str:
    if ".tsv" in PurePath(path.name.lower()).suffixes:
        return "\t"
    counts = {d: first_line.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=lambda d: (counts[d], d == ","))


def _check_header(path: Path, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(path, f"duplicate column names {dupes}: the platform matches columns by "
                          "name, rename them in the file")


def _read_csv(path: Path, data: bytes) -> tuple[pa.Table, dict[str, Any], list[str]]:
    first = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    delim = _delimiter(path, first)
    parse = pacsv.ParseOptions(delimiter=delim, newlines_in_values=True)
    block = pacsv.ReadOptions(block_size=max(len(data) + 1, 1024**2))
    try:
        names = next(pycsv.reader([first], delimiter=delim))
        _check_header(path, names)
        text = pacsv.read_csv(pa.py_buffer(data), block, parse, pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string())))
        found = [t for t in NULL_TOKENS if t == "" or any(
            pc.any(pc.equal(text.column(i), t)).as_py() for i in range(text.num_columns))]
        table = pacsv.read_csv(pa.py_buffer(data), block, parse, pacsv.ConvertOptions(
            null_values=found, strings_can_be_null=True, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        raise _fail(path, f"not a CSV file pyarrow can read: {e}") from e
    csv: dict[str, Any] = {}
    if delim != ",":
        csv["delimiter"] = delim
    if found != [""]:
        csv["null_values"] = found
    return table, csv, found


def _read_sample(path: Path) -> tuple[pa.Table, str, dict[str, Any], list[str], bool]:
    detected = detect_format(path.name)
    if detected is None:
        raise _fail(path, "unknown file type: name it .csv, .tsv, .jsonl, .ndjson, .json or "
                          ".parquet (the text types may end in .gz or .zst)")
    ftype, compression = detected
    if path.stat().st_size == 0:
        raise _fail(path, "the sample is empty: no rows to infer a table from")
    if ftype == "parquet":
        try:
            pf = pq.ParquetFile(path)
            batch = next(pf.iter_batches(batch_size=SAMPLE_ROWS), None)
        except (OSError, pa.ArrowException) as e:
            raise _fail(path, f"not a Parquet file pyarrow can read: {e}") from e
        _check_header(path, pf.schema_arrow.names)
        table = pa.Table.from_batches([batch]) if batch is not None else \
            pf.schema_arrow.empty_table()
        return table, ftype, {}, [], pf.metadata.num_rows <= SAMPLE_ROWS
    data, whole = _text_sample(path, compression)
    if ftype == "csv":
        table, csv, nulls = _read_csv(path, data)
        return table, ftype, csv, nulls, whole
    try:
        if ftype == "jsonl":
            table = pajson.read_json(pa.py_buffer(data), pajson.ReadOptions(
                block_size=max(len(data) + 1, 1024**2)))
        else:
            with duckdb.connect() as con:
                quoted = str(path).replace("'", "''")
                table = con.sql(f"SELECT * FROM read_json('{quoted}', format='array') "
                                f"LIMIT {SAMPLE_ROWS}").to_arrow_table()
    except (pa.ArrowInvalid, duckdb.Error) as e:
        raise _fail(path, f"not a {ftype.upper()} file that can be read: {e}") from e
    return table, ftype, {}, [], whole


def profile_type(t: pa.DataType) -> str:
    """The profile's type name for an Arrow type (text for what has no closer match)."""
    if pa.types.is_dictionary(t):
        return profile_type(t.value_type)
    checks = [(pa.types.is_boolean, "bool"), (pa.types.is_int8, "int16"),
              (pa.types.is_uint8, "int16"), (pa.types.is_int16, "int16"),
              (pa.types.is_uint16, "int32"), (pa.types.is_int32, "int32"),
              (pa.types.is_integer, "int64"), (pa.types.is_float16, "float32"),
              (pa.types.is_float32, "float32"), (pa.types.is_floating, "float64"),
              (pa.types.is_date, "date"), (pa.types.is_nested, "json")]
    for check, name in checks:
        if check(t):
            return name
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"decimal({t.precision},{t.scale})"
    return "string"


def _key(table: pa.Table, names: list[str], types: list[str]) -> str | None:
    if table.num_rows < 2:
        return None
    for i, (name, kind) in enumerate(zip(names, types, strict=True)):
        col = table.column(i)
        if kind in ("int64", "int32", "int16", "string") and col.null_count == 0 and \
                pc.count_distinct(col).as_py() == table.num_rows:
            return name
    return None


def _size(nbytes: float) -> str:
    mb = 100
    while mb * 1024**2 < nbytes:
        mb *= 2
    return f"{mb}MiB" if mb < 1024 else f"{mb // 1024}GiB"


def infer_profile(tenant: str, sample: Path) -> Inferred:
    """Infer a profile for ``tenant`` from ``sample``; validate it.

    Raises ConfigError naming the file when the sample is empty, binary, of an unknown type,
    unreadable or has duplicate column names, or when ``tenant`` is not an identifier.
    """
    if not _IDENT.match(tenant):
        raise ConfigError(f"tenant id {tenant!r} is not an identifier: use lower-case "
                          "letters, digits and _, starting with a letter (at most 63)")
    if not sample.is_file():
        raise _fail(sample, "no such file")
    table, ftype, csv, nulls, whole = _read_sample(sample)
    if table.num_columns == 0 or table.num_rows == 0:
        raise _fail(sample, "the sample is empty: no rows to infer a table from")
    taken: set[str] = set()
    names = [identifier(n, taken, i) for i, n in enumerate(table.schema.names)]
    types = [profile_type(f.type) for f in table.schema]
    key = _key(table, names, types)
    columns: list[dict[str, Any]] = []
    for i, (name, kind) in enumerate(zip(names, types, strict=True)):
        col: dict[str, Any] = {"name": name, "type": kind}
        if table.column(i).null_count == 0 and table.schema.field(i).type != pa.null():
            col["nullable"] = False
        columns.append(col)
    stem = sample.name.split(".")[0]
    spec: dict[str, Any] = {"name": identifier(stem, set(), 0), "columns": columns}
    if key:
        spec["primary_key"] = [key]
    size = sample.stat().st_size * (1 if ftype == "parquet" or sample.suffix in (
        ".csv", ".tsv", ".jsonl", ".ndjson", ".json") else 10)
    batch: dict[str, Any] = {"file_types": [ftype]}
    if 2 * size > _DEFAULT_FILE_BYTES:
        batch["max_file_bytes"] = _size(2 * size)
    profile: dict[str, Any] = {"tenant_id": tenant, "tables": [spec], "batch": batch}
    if csv:
        profile["csv"] = csv
    renamed = {o: n for o, n in zip(table.schema.names, names, strict=True) if o != n}
    app = None
    if renamed:
        # a file's columns are matched to the table's by name: an app renames them, reading
        # CSV columns as text so conform casts them as it does without an app
        app = RENAME_APP.format(names=repr(renamed))
        spec_app: dict[str, Any] = {"name": "rename_columns",
                                    "entrypoint": "rename_columns:wrangle",
                                    "tables": [spec["name"]]}
        if ftype == "csv":
            spec_app["input_columns"] = dict.fromkeys(table.schema.names, "string")
        profile["apps"] = [spec_app]
    TenantProfile.model_validate(profile)
    return Inferred(profile, renamed, nulls, table.num_rows, whole, app)
