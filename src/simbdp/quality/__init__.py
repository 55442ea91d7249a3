"""Fitting rows to tenant tables: casts, required columns, quality rules, rejected rows."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simbdp.quality.fit import (
        Conformed,
        conform,
        dedupe_last,
        quarantine_rows,
        write_rejected,
    )
    from simbdp.quality.rules import SeenValues, rule_fails
    from simbdp.quality.stats import QualityStats, pass_rate_breach, quality_json, summarize

_WHERE = {
    "Conformed": "fit", "conform": "fit", "dedupe_last": "fit",
    "quarantine_rows": "fit", "write_rejected": "fit",
    "SeenValues": "rules", "rule_fails": "rules",
    "QualityStats": "stats", "pass_rate_breach": "stats", "quality_json": "stats",
    "summarize": "stats",
}
__all__ = ["Conformed", "QualityStats", "SeenValues", "conform", "dedupe_last",
           "pass_rate_breach", "quality_json", "quarantine_rows", "rule_fails", "summarize",
           "write_rejected"]


def __getattr__(name: str) -> Any:
    # lazily: the CLI and the manager need the quality figures (stats), not pyarrow's casts
    if name in _WHERE:
        return getattr(import_module(f"simbdp.quality.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
