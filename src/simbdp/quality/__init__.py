"""Fitting rows to tenant tables: casts, required columns, quality rules, rejected rows."""

from simbdp.quality.conform import Conformed, conform, dedupe_last, write_rejected

__all__ = ["Conformed", "conform", "dedupe_last", "write_rejected"]
