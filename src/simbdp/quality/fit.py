"""Fit rows to a tenant table: cast, check required columns and quality rules, vectorised.

The fast path (every value casts) does one Arrow cast per column. Only a column whose cast
fails takes the slow path, DuckDB's TRY_CAST over the whole column, which finds exactly the
rows that do not fit; those rows are rejected with a reason, the others load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from simbdp.errors import SchemaError
from simbdp.profiles.tables import TableSpec
from simbdp.profiles.types import duckdb_type
from simbdp.quality.rules import SeenValues, rule_fails
from simbdp.quality.stats import QualityStats
from simbdp.scratch import scratch

__all__ = ["Conformed", "conform", "dedupe_last", "quarantine_rows", "write_rejected"]


@dataclass
class Conformed:
    """Rows that fit the table (``good``) and those that do not, with ``_reason``/``_row``."""

    good: pa.Table
    rejected: pa.Table
    rows_in: int
    rule_failures: dict[str, int] = field(default_factory=dict)
    #: rows refused for a type, a missing required value or a NUL byte (not a rule)
    schema_failures: int = 0

    @property
    def rows_good(self) -> int:
        return self.good.num_rows

    @property
    def stats(self) -> QualityStats:
        """This batch's quality counts."""
        return QualityStats(rows_checked=self.rows_in, rows_passed=self.rows_good,
                            rows_failed_schema=self.schema_failures,
                            failed=dict(self.rule_failures))

    @property
    def rows_rejected(self) -> int:
        return self.rejected.num_rows


def _try_cast(values: pa.ChunkedArray, type_name: str, target: pa.DataType) -> pa.ChunkedArray:
    """Cast with DuckDB's TRY_CAST: values that do not fit become null."""
    expr = f"TRY_CAST(v AS {duckdb_type(type_name)})"
    if pa.types.is_timestamp(target) or pa.types.is_date(target):
        # also accept epoch seconds written as text
        expr = f"COALESCE({expr}, CAST(to_timestamp(TRY_CAST(v AS DOUBLE)) AS TIMESTAMP))"
        if pa.types.is_date(target):
            expr = f"CAST({expr} AS DATE)"
    con = scratch()
    try:
        src = pa.table({"v": values})  # noqa: F841  (read by DuckDB's replacement scan)
        col = con.sql(f"SELECT {expr} AS v FROM src").to_arrow_table().column("v")
    finally:
        con.close()
    return col.cast(target, safe=False)


def _cast(values: pa.ChunkedArray, type_name: str, target: pa.DataType
          ) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """The cast column and a mask of rows whose value did not fit (None: all fit)."""
    if values.type == target:
        return values, None
    if pa.types.is_timestamp(target) and pa.types.is_integer(values.type):
        secs = pc.cast(values, pa.int64())
        return pc.cast(pc.multiply(secs, 1_000_000), pa.int64()).cast(target), None
    try:
        return pc.cast(values, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    cast = _try_cast(values, type_name, target)
    failed = pc.and_(pc.is_valid(values), pc.is_null(cast))
    return cast, failed


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([str(x) for x in col.to_pylist()], pa.string())])


def conform(batch: pa.RecordBatch | pa.Table, table: TableSpec, source: str, *,
            refuse_nul: bool = False, seen: SeenValues | None = None,
            now: float | None = None) -> Conformed:
    """Cast ``batch`` to ``table``'s schema; split off rows that do not fit, with reasons.

    ``refuse_nul`` rejects the rows whose text holds a NUL byte (for sinks such as PostgreSQL
    whose text cannot store one; DuckDB can). ``seen`` carries the values of ``unique``
    rules from earlier chunks of the same file (None: this batch alone is the scope).
    ``now`` (epoch seconds, default the clock) is the reference of ``max_age`` rules.
    Raises SchemaError when a required column is missing or unexpected columns are present.
    """
    data = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    wanted = table.column_names
    have = set(data.column_names)  # sets: a table may have hundreds of columns
    known = set(wanted)
    extra = [c for c in data.column_names if c not in known]
    if extra:
        raise SchemaError(f"{source}: unexpected columns {extra} for table {table.name!r} "
                          f"(its columns: {wanted})")
    keys = set(table.primary_key)
    missing = [c.name for c in table.columns if c.name not in have
               and (not c.nullable or c.name in keys)]
    if missing:
        raise SchemaError(f"{source}: missing required column(s) {missing} of table "
                          f"{table.name!r}")
    n = data.num_rows
    schema = table.arrow_schema()
    columns: list[pa.ChunkedArray] = []
    reasons: list[pa.ChunkedArray] = []
    failures: dict[str, int] = {}
    for col, fld in zip(table.columns, schema, strict=True):
        target = fld.type
        if col.name not in have:
            columns.append(pa.chunked_array([pa.nulls(n, target)]))
            continue
        src = data.column(col.name)
        cast, failed = _cast(src, col.type, target)
        if failed is not None:
            text = pc.binary_join_element_wise(
                f"column '{col.name}': value '", _as_text(src), f"' is not {col.type}", "")
            reasons.append(pc.if_else(failed, text, pa.scalar(None, pa.string())))
        if not fld.nullable:
            nulls = pc.is_null(cast)
            if failed is not None:
                nulls = pc.and_(nulls, pc.invert(failed))
            reasons.append(pc.if_else(nulls, f"column '{col.name}' is null but required",
                                      pa.scalar(None, pa.string())))
        if refuse_nul and pa.types.is_string(target):
            nul = pc.fill_null(pc.match_substring(cast, "\x00"), False)
            if pc.any(nul).as_py():
                reasons.append(pc.if_else(
                    nul, f"column '{col.name}': text holds a NUL byte (\\0), which the "
                    "PostgreSQL sink cannot store", pa.scalar(None, pa.string())))
        columns.append(cast)
    schema_failures = 0
    if reasons:
        schema_bad = pc.coalesce(*reasons) if len(reasons) > 1 else reasons[0]
        schema_failures = pc.sum(pc.is_valid(schema_bad)).as_py() or 0
    by_name = dict(zip(wanted, columns, strict=True))
    scope = seen if seen is not None else SeenValues()
    for rule in table.quality:
        fails = rule_fails(rule, by_name[rule.column], scope, now)
        count = pc.sum(fails).as_py() or 0
        if count:
            failures[rule.name] = count
            arg = "" if rule.value is None else f" {rule.value}"
            what = f"rule '{rule.name}' ({rule.column} {rule.check}{arg}) failed"
            reasons.append(pc.if_else(fails, what, pa.scalar(None, pa.string())))
    if not reasons:
        return Conformed(good=_with_schema(columns, schema), rejected=_empty_rejected(data),
                         rows_in=n, rule_failures=failures,
                         schema_failures=schema_failures)
    reason = pc.coalesce(*reasons) if len(reasons) > 1 else reasons[0]
    bad = pc.is_valid(reason)
    if not pc.any(bad).as_py():
        return Conformed(good=_with_schema(columns, schema), rejected=_empty_rejected(data),
                         rows_in=n, rule_failures=failures,
                         schema_failures=schema_failures)
    keep = pc.invert(bad)
    good = _with_schema([pc.filter(c, keep) for c in columns], schema)
    rejected = pa.table({c: _as_text(data.column(c)) for c in data.column_names})
    rejected = rejected.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))
    rejected = rejected.append_column("_reason", reason).filter(bad)
    return Conformed(good=good, rejected=rejected, rows_in=n, rule_failures=failures,
                         schema_failures=schema_failures)


def _with_schema(columns: list[pa.ChunkedArray], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema, strict=True)],
                                schema=schema)


def _empty_rejected(data: pa.Table) -> pa.Table:
    fields = [pa.field(c, pa.string()) for c in data.column_names]
    return pa.schema([*fields, pa.field("_row", pa.int64()),
                      pa.field("_reason", pa.string())]).empty_table()


def dedupe_last(table: pa.Table, keys: list[str]) -> pa.Table:
    """Keep the last row of each key, in input order (upsert semantics)."""
    idx = pa.array(range(table.num_rows), pa.int64())
    last = table.select(keys).append_column("__i", idx).group_by(keys, use_threads=False) \
        .aggregate([("__i", "max")]).column("__i_max")
    if len(last) == table.num_rows:
        return table
    return table.take(last.take(pc.sort_indices(last)))


def write_rejected(rejected: pa.Table, path: Path) -> None:
    """Append rejected rows (with ``_row`` and ``_reason``) to a CSV, header written once."""
    new = not path.exists()
    with path.open("ab") as f:
        pacsv.write_csv(rejected, f, pacsv.WriteOptions(include_header=new))


def quarantine_rows(rejected: pa.Table, table: TableSpec, source: str, ingestion: str,
                    first_row: int = 0) -> pa.Table:
    """Rejected rows (``conform``'s, with ``_row`` and ``_reason``) shaped for the table's
    quarantine table: its values as text, the reason, the source, the ingestion and the row
    number (``_row`` plus ``first_row``, the rows of the table checked before this chunk).
    A NUL byte in a value or a reason becomes the two characters ``\\0``."""
    n = rejected.num_rows
    spec = table.quarantine_table()

    def text(col: str) -> pa.ChunkedArray:  # PostgreSQL text cannot hold a NUL byte
        return pc.replace_substring(rejected.column(col), "\x00", "\\0")

    have = set(rejected.column_names)
    cols = {c.name: text(c.name) if c.name in have else pa.nulls(n, pa.string())
            for c in table.columns}
    cols["quality_reason"] = text("_reason")
    cols["quality_source"] = pa.nulls(n, pa.string()).fill_null(source)
    cols["quality_ingestion"] = pa.nulls(n, pa.string()).fill_null(ingestion)
    cols["quality_row"] = pc.add(rejected.column("_row"), first_row)
    return pa.table(cols, schema=spec.arrow_schema())
