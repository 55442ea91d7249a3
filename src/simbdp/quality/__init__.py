"""Fitting rows to tenant tables: casts, required columns, quality rules, rejected rows."""

from simbdp.quality.conform import (
    Conformed,
    conform,
    dedupe_last,
    quarantine_rows,
    write_rejected,
)
from simbdp.quality.rules import SeenValues, rule_fails
from simbdp.quality.stats import QualityStats, pass_rate_breach, quality_json, summarize

__all__ = ["Conformed", "QualityStats", "SeenValues", "conform", "dedupe_last",
           "pass_rate_breach", "quality_json", "quarantine_rows", "rule_fails", "summarize",
           "write_rejected"]
