"""Tenant tables: columns, quality rules and quarantine tables."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from simbdp.profiles.base import Identifier, Model
from simbdp.profiles.types import arrow_type, normalize_type

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["QUARANTINE_COLUMNS", "QUARANTINE_SUFFIX", "Column", "QualityRule", "TableSpec",
           "parse_age"]

_KEY = re.compile(r"[a-z][a-z0-9_]*")


class Column(Model):
    name: Identifier
    """Column name: an identifier (lower-case letter, then letters, digits, ``_``; at most 63)."""
    type: str
    """Column type: string, int64, int32, int16, float64, float32, bool, date, timestamp,
    timestamptz, json or decimal(p,s) (aliases: text, int, bigint, double, ...)."""
    nullable: bool = True
    """Whether the column may be empty; a row with no value in a non-nullable column is rejected."""

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        return normalize_type(v)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: the column types each check applies to (None: any type)
_CHECK_TYPES: dict[str, tuple[str, ...] | None] = {
    "not_null": None, "unique": None, "in": None, "regex": None, "min": None,
    "max": None,
    "max_age": ("date", "timestamp", "timestamptz"),
    "min_length": ("string", "json"), "max_length": ("string", "json"),
}


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` in seconds; ValueError otherwise."""
    m = _AGE.match(text)
    if m is None:
        raise ValueError(f"age {text!r}: use a number and a unit s, m, h, d or w, e.g. '7d'")
    return float(m.group(1)) * _AGE_SECS[m.group(2)]


class QualityRule(Model):
    """A vectorised row check: rows failing it are quarantined with the rule's name.

    ``check`` is one of not_null, min, max, regex, in, unique, max_age, min_length,
    max_length; ``value`` its argument.
    """

    name: Identifier
    """Rule name, given as the reason of the rows it rejects."""
    column: Identifier
    """The column the rule checks."""
    check: Literal["not_null", "min", "max", "regex", "in", "unique", "max_age", "min_length",
                   "max_length"]
    """not_null; min, max (numbers, dates, timestamps); regex; in; unique (a value seen on an
    earlier row of the same file or micro-batch fails; nulls are not compared); max_age (a date
    or timestamp older than ``value`` fails); min_length, max_length (text, in characters)."""
    value: float | str | list[str] | None = None
    """The check's argument: a bound for min/max, a pattern for regex, a list for in, an age
    such as ``7d`` (units s, m, h, d, w) for max_age, a number of characters for
    min_length/max_length; none for not_null and unique."""

    @model_validator(mode="after")
    def _check_value(self) -> QualityRule:
        c, v = self.check, self.value
        what = f"quality rule {self.name!r} ({c})"
        if c in ("not_null", "unique") and v is not None:
            raise ValueError(f"{what} takes no value")
        if c in ("min", "max", "regex", "in", "max_age", "min_length", "max_length") \
                and v is None:
            raise ValueError(f"{what} needs a value")
        if c in ("min_length", "max_length") and (
                not isinstance(v, float | int) or v < 0 or v != int(v)):
            raise ValueError(f"{what}: value must be a whole number of characters, not {v!r}")
        if c == "max_age":
            if not isinstance(v, str):
                raise ValueError(f"{what}: value must be an age such as '7d', not {v!r}")
            parse_age(v)
        if c == "regex":
            try:
                re.compile(str(v))
            except re.error as e:
                raise ValueError(f"{what}: bad pattern {v!r}: {e}") from None
        return self

    @property
    def age_secs(self) -> float:
        """max_age: the value in seconds."""
        return parse_age(str(self.value))

    def problem(self, table: TableSpec) -> str | None:
        """Why this rule cannot check ``table`` (an unknown column, a check that does not fit
        the column's type), or None."""
        cols = {c.name: c.type for c in table.columns}
        if self.column not in cols:
            return (f"table {table.name!r}: quality rule {self.name!r} names unknown column "
                    f"{self.column!r} (columns: {', '.join(cols)})")
        kinds = _CHECK_TYPES[self.check]
        kind = cols[self.column].split("(")[0]
        if kinds is not None and kind not in kinds:
            return (f"table {table.name!r}: quality rule {self.name!r}: {self.check} does not "
                    f"apply to column {self.column!r} of type {cols[self.column]}")
        return None


QUARANTINE_SUFFIX = "_quarantine"
#: the columns a quarantine table adds to the failing row's values
QUARANTINE_COLUMNS = {"quality_reason": "string", "quality_source": "string",
                      "quality_ingestion": "string", "quality_row": "int64"}


class TableSpec(Model):
    """A table the tenant owns in its namespace of coredms."""

    name: Identifier
    """Table name in the tenant's namespace; a file whose name starts with it goes to it."""
    columns: list[Column] = Field(min_length=1)
    """The table's columns, in order (CSV headers are matched by name)."""
    primary_key: list[Identifier] = []
    """Key columns: a file's rows then upsert (last row wins) instead of appending."""
    key: str | None = None
    """Seed 002's Cassandra-style key, e.g. ``((subreddit, id), ups)``; sets primary_key."""
    sinks: list[str] = ["default"]
    """Names of platform sinks this table is written to (several sinks per table)."""
    quality: list[QualityRule] = []
    """Row checks; rows failing one are rejected with the rule's name."""
    min_pass_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of rows (0 to 1) of a file or stream micro-batch that must pass the checks (types,
    required columns, quality rules); below it the whole file is rejected (kept in
    ``rejected/``) or the whole micro-batch dead-lettered, nothing loaded, the rate in the
    reason. 0: never."""
    partition_by: list[Identifier] = []
    """Columns a lake (delta) sink partitions the table by; other sinks ignore it."""
    quarantine: bool = False
    """Also keep the rows that fail (a type, a required column, a quality rule) in a table
    ``<name>_quarantine`` in the same sinks, committed with the file: the row's values as
    text, ``quality_reason``, ``quality_source`` (the file, or a stream row's message id),
    ``quality_ingestion`` (the record id, or the stream report's) and ``quality_row`` (its
    number in the file, or in the micro-batch). Without it a stream's failing messages go
    to its dead-letter queue; with it they are acknowledged, their good rows loaded."""

    @model_validator(mode="before")
    @classmethod
    def _key_to_primary_key(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("key") and not data.get("primary_key"):
            data = {**data, "primary_key": _KEY.findall(str(data["key"]))}
        return data

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate column names {sorted(dupes)}")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise ValueError(f"primary_key columns {missing} are not columns of the table")
        problems = [p for r in self.quality if (p := r.problem(self)) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        rules = [r.name for r in self.quality]
        if len(set(rules)) != len(rules):
            raise ValueError(f"table {self.name!r}: quality rule names must be unique")
        if self.quarantine:
            if len(self.name) + len(QUARANTINE_SUFFIX) > 63:
                raise ValueError(f"table {self.name!r}: a name over "
                                 f"{63 - len(QUARANTINE_SUFFIX)} characters leaves no room "
                                 f"for its quarantine table ({self.name}{QUARANTINE_SUFFIX})")
            clash = [c for c in QUARANTINE_COLUMNS if c in names]
            if clash:
                raise ValueError(f"table {self.name!r}: columns {clash} are the quarantine "
                                 "table's own")
        if not self.sinks:
            raise ValueError("sinks must name at least one sink")
        unknown = [c for c in self.partition_by if c not in names]
        if unknown:
            raise ValueError(f"partition_by columns {unknown} are not columns of the table")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def quarantine_table(self) -> TableSpec:
        """The table of this table's failing rows (see ``quarantine``)."""
        cols = [{"name": c.name, "type": "string"} for c in self.columns]
        cols += [{"name": n, "type": t} for n, t in QUARANTINE_COLUMNS.items()]
        return TableSpec.model_validate({"name": self.name + QUARANTINE_SUFFIX,
                                         "columns": cols, "sinks": self.sinks})

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa  # only where rows are handled: loading profiles does not need it

        keys = set(self.primary_key)
        return pa.schema(
            [pa.field(c.name, arrow_type(c.type), c.nullable and c.name not in keys)
             for c in self.columns]
        )
