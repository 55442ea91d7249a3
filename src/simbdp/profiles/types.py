"""Column types of tenant tables and their Arrow, DuckDB and PostgreSQL names."""

from __future__ import annotations

import re

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

_ARROW = {
    "string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "int16": pa.int16(),
    "float64": pa.float64(), "float32": pa.float32(), "bool": pa.bool_(), "date": pa.date32(),
    "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
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
    m = _DECIMAL.match(name)
    return pa.decimal128(int(m.group(1)), int(m.group(2))) if m else _ARROW[name]


def duckdb_type(name: str) -> str:
    return name.upper() if _DECIMAL.match(name) else _DUCKDB[name]


def postgres_type(name: str) -> str:
    return f"numeric{name[7:]}" if _DECIMAL.match(name) else _POSTGRES[name]
