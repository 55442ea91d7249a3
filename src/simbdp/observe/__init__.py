"""Observability: structured logs, reports, metrics."""
