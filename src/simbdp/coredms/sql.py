"""SQL shared by the DuckDB and PostgreSQL sinks: identifiers, DDL, ledger tables."""

from __future__ import annotations

import re
from collections.abc import Callable

from simbdp.profiles.tables import TableSpec

__all__ = ["LEDGER", "MESSAGES", "create_table_sql", "ledger_sql", "qi", "qualified", "where_sql"]

LEDGER = "_simbdp_ledger"
MESSAGES = "_simbdp_messages"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def qi(name: str) -> str:
    """Quote an identifier that was validated as a plain name."""
    if not _IDENT.match(name):
        raise ValueError(f"not a valid identifier: {name!r}")
    return f'"{name}"'


def qualified(schema: str, table: str) -> str:
    return f"{qi(schema)}.{qi(table)}"


def create_table_sql(schema: str, table: TableSpec, type_of: Callable[[str], str]) -> str:
    keys = set(table.primary_key)
    cols = [f"{qi(c.name)} {type_of(c.type)}"
            + (" NOT NULL" if not c.nullable or c.name in keys else "") for c in table.columns]
    if table.primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(qi(k) for k in table.primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {qualified(schema, table.name)} ({', '.join(cols)})"


def ledger_sql(schema: str, text: str, ts: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, LEDGER)} (key {text} PRIMARY KEY, "
        f"source {text} NOT NULL, ingestion_id {text} NOT NULL, rows BIGINT NOT NULL, "
        f"committed_at {ts} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {qualified(schema, MESSAGES)} (id {text} PRIMARY KEY, "
        f"committed_at {ts} NOT NULL DEFAULT current_timestamp)",
    ]


def where_sql(table: TableSpec, where: dict[str, str] | None, mark: str) -> tuple[str, list]:
    """``WHERE col = ? AND ...`` on declared columns only, values bound as parameters."""
    if not where:
        return "", []
    unknown = [c for c in where if c not in table.column_names]
    if unknown:
        raise ValueError(f"unknown columns {unknown} of table {table.name!r}")
    return " WHERE " + " AND ".join(f"CAST({qi(c)} AS TEXT) = {mark}" for c in where), \
        list(where.values())
