"""Column types of tenant tables and their Arrow, DuckDB and PostgreSQL names."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["arrow_type", "duckdb_type", "normalize_type", "postgres_type"]

_ALIASES = {
    "string": "string", "text": "string", "str": "string", "varchar": "string",
    "int": "int64", "integer": "int64", "bigint": "int64", "int64": "int64",
    "int32": "int32", "smallint": "int16", "int16": "int16",
    "float": "float64", "double": "float64", "float64": "float64", "real": "float32",
    "float32": "float32",
    "bool": "bool", "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp", "datetime": "timestamp",
    "timestamptz": "timestamptz",
    "json": "json",
}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")

#: the Arrow type of each name (pyarrow's constructor and its arguments: pyarrow is imported
#: when a type is first asked for, so loading profiles does not import it)
_ARROW: dict[str, tuple[str, tuple[str, ...]]] = {
    "string": ("string", ()), "int64": ("int64", ()), "int32": ("int32", ()),
    "int16": ("int16", ()), "float64": ("float64", ()), "float32": ("float32", ()),
    "bool": ("bool_", ()), "date": ("date32", ()), "timestamp": ("timestamp", ("us",)),
    "timestamptz": ("timestamp", ("us", "UTC")), "json": ("string", ()),
}
_DUCKDB = {
    "string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER", "int16": "SMALLINT",
    "float64": "DOUBLE", "float32": "REAL", "bool": "BOOLEAN", "date": "DATE",
    "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ", "json": "JSON",
}
_POSTGRES = {
    "string": "text", "int64": "bigint", "int32": "integer", "int16": "smallint",
    "float64": "double precision", "float32": "real", "bool": "boolean", "date": "date",
    "timestamp": "timestamp", "timestamptz": "timestamptz", "json": "jsonb",
}


def normalize_type(name: str) -> str:
    """Return the canonical type name, or raise ValueError naming the accepted ones."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    m = _DECIMAL.match(key)
    if m and 0 < int(m.group(1)) <= 38 and int(m.group(2)) <= int(m.group(1)):
        return f"decimal({m.group(1)},{m.group(2)})"
    raise ValueError(
        f"unknown column type {name!r}; use one of {sorted(set(_ALIASES))} or decimal(p,s)"
    )


def arrow_type(name: str) -> pa.DataType:
    import pyarrow as pa

    m = _DECIMAL.match(name)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    make, args = _ARROW[name]
    return getattr(pa, make)(*args)


def duckdb_type(name: str) -> str:
    return name.upper() if _DECIMAL.match(name) else _DUCKDB[name]


def postgres_type(name: str) -> str:
    return f"numeric{name[7:]}" if _DECIMAL.match(name) else _POSTGRES[name]
