"""The file-time histogram shared by ``/metrics`` and the dashboard, and quantiles from it."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BATCH_SECS_BUCKETS", "bucket_sql", "quantile"]

#: upper bounds (seconds) of the per-file batch ingestion time histogram
BATCH_SECS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def bucket_sql(expr: str) -> str:
    """A SQL expression giving the bucket index of ``expr`` (seconds): ``i`` for the first
    bound ``expr`` does not exceed, ``len(BATCH_SECS_BUCKETS)`` above them all (``+Inf``).
    Nested ``CASE`` halving the bounds: four comparisons a value instead of up to twelve."""
    def search(lo: int, hi: int) -> str:
        if lo == hi:
            return str(lo)
        mid = (lo + hi) // 2
        return (f"CASE WHEN {expr} <= {BATCH_SECS_BUCKETS[mid]!r} THEN {search(lo, mid)} "
                f"ELSE {search(mid + 1, hi)} END")
    return search(0, len(BATCH_SECS_BUCKETS))


def quantile(counts: Sequence[int], lows: Sequence[float], highs: Sequence[float],
             pct: int) -> float | None:
    """The ``pct``-th percentile (nearest rank) estimated from a histogram: ``counts[i]``
    values in bucket ``i``, the smallest ``lows[i]`` and the largest ``highs[i]``.

    The rank is found exactly; within its bucket the values are taken as spread evenly from
    the bucket's smallest to its largest, so the estimate is exact when a bucket holds one
    distinct value and otherwise off by less than the spread of that bucket. None when empty.
    """
    n = sum(counts)
    if n == 0:
        return None
    rank = -(-n * pct // 100)  # ceil(n * pct / 100)
    seen, estimate = 0, None
    for c, lo, hi in zip(counts, lows, highs, strict=True):
        if c and seen < rank <= seen + c:
            estimate = lo if c == 1 else lo + (hi - lo) * (rank - seen - 1) / (c - 1)
        seen += c
    return estimate
