"""Quality metadata of one ingestion (a file or a stream micro-batch, or a window of them):
rows checked, passed, failed per rule, the pass rate; and the ``min_pass_rate`` gate.

Stored as JSON in the ``quality`` column of the ingestion record (batch) and of the stream
report (the micro-batches of its window summed)::

    {"rows_checked": 1000, "rows_passed": 990, "rows_failed_schema": 2,
     "failed": {"positive_amount": 8}, "pass_rate": 0.99,
     "tables": {"orders": {...the same fields...}}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from simbdp.profiles.tables import TableSpec

__all__ = ["QualityStats", "pass_rate_breach", "percent", "quality_json", "summarize"]


def percent(rate: float, digits: int = 2) -> str:
    """``rate`` as a percentage cut (not rounded) to ``digits`` decimals, so that a rate
    under 1 never reads 100% nor one under a threshold reads as the threshold."""
    scale = 10 ** (digits + 2)
    return f"{math.floor(rate * scale + 1e-9) / scale:.{digits}%}"


@dataclass
class QualityStats:
    """Counts of one table's checks. ``rows_failed_schema``: rows refused for their types,
    a missing required value or a NUL byte; ``failed``: rows failing each quality rule (a row
    failing two rules counts in both); ``rows_passed``: rows that failed nothing."""

    rows_checked: int = 0
    rows_passed: int = 0
    rows_failed_schema: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float | None:
        """Rows passed / rows checked; None when no row was checked."""
        return self.rows_passed / self.rows_checked if self.rows_checked else None

    def add(self, other: QualityStats) -> None:
        self.rows_checked += other.rows_checked
        self.rows_passed += other.rows_passed
        self.rows_failed_schema += other.rows_failed_schema
        for rule, n in other.failed.items():
            self.failed[rule] = self.failed.get(rule, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"rows_checked": self.rows_checked, "rows_passed": self.rows_passed,
                "rows_failed_schema": self.rows_failed_schema, "failed": dict(self.failed),
                "pass_rate": self.pass_rate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityStats:
        return cls(rows_checked=int(data.get("rows_checked") or 0),
                   rows_passed=int(data.get("rows_passed") or 0),
                   rows_failed_schema=int(data.get("rows_failed_schema") or 0),
                   failed={str(k): int(v) for k, v in (data.get("failed") or {}).items()})

    def describe(self) -> str:
        """One line: ``990 of 1,000 rows passed (99.0%); failed: positive_amount 8``."""
        if not self.rows_checked:
            return "no rows checked"
        text = (f"{self.rows_passed:,} of {self.rows_checked:,} rows passed "
                f"({percent(self.pass_rate or 0.0, 1)})")
        most = sorted(self.failed.items(), key=lambda x: (-x[1], x[0]))
        fails = [f"{r} {n:,}" for r, n in most]
        if self.rows_failed_schema:
            fails.append(f"types/required {self.rows_failed_schema:,}")
        return text + (f"; failed: {', '.join(fails)}" if fails else "")


def summarize(by_table: dict[str, QualityStats]) -> QualityStats:
    """The tables' counts added up (a rule name of two tables adds up too)."""
    total = QualityStats()
    for s in by_table.values():
        total.add(s)
    return total


def quality_json(by_table: dict[str, QualityStats]) -> str | None:
    """The ``quality`` column of a record: totals and each table's counts; None if no row
    was checked (nothing to say)."""
    if not any(s.rows_checked for s in by_table.values()):
        return None
    data = summarize(by_table).as_dict()
    data["tables"] = {t: s.as_dict() for t, s in sorted(by_table.items())}
    return json.dumps(data, separators=(",", ":"))


def pass_rate_breach(table: TableSpec, stats: QualityStats, what: str) -> str | None:
    """The reason ``what`` (a file, a micro-batch) is refused whole when its pass rate for
    ``table`` is below the table's ``min_pass_rate``; None when it is not."""
    rate = stats.pass_rate
    if not table.min_pass_rate or rate is None or rate >= table.min_pass_rate:
        return None
    return (f"{what}: quality pass rate {percent(rate)} for table {table.name!r} is below its "
            f"min_pass_rate {table.min_pass_rate:.2%} ({stats.describe()}); nothing loaded")
