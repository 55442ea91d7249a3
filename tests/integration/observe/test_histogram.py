"""The file-time histogram: its SQL bucket matches the bounds, and percentiles estimated from it
fall in the bucket of the exact percentile (exact where that bucket holds one value)."""

from __future__ import annotations

import math
import random
import sqlite3

import pytest

from simbdp.observe.histogram import BATCH_SECS_BUCKETS, bucket_sql, quantile


def _bucket(x: float) -> int:
    return next((i for i, b in enumerate(BATCH_SECS_BUCKETS) if x <= b),
                len(BATCH_SECS_BUCKETS))


def test_the_sql_bucket_is_the_first_bound_not_exceeded():
    db = sqlite3.connect(":memory:")
    values = [0.0, *BATCH_SECS_BUCKETS, *(b * 1.0001 for b in BATCH_SECS_BUCKETS), 1e9, -1.0]
    for x in values:
        assert db.execute(f"SELECT {bucket_sql(':x')}", {"x": x}).fetchone()[0] == _bucket(x), x


def _histogram(values: list[float]) -> tuple[list[int], list[float], list[float]]:
    size = len(BATCH_SECS_BUCKETS) + 1
    counts, lows, highs = [0] * size, [math.inf] * size, [-math.inf] * size
    for x in values:
        i = _bucket(x)
        counts[i] += 1
        lows[i], highs[i] = min(lows[i], x), max(highs[i], x)
    return counts, lows, highs


@pytest.mark.parametrize("seed", range(20))
def test_an_estimated_percentile_is_in_the_bucket_of_the_exact_one(seed):
    rnd = random.Random(seed)
    values = [rnd.lognormvariate(0.5, 1.5) for _ in range(rnd.randrange(1, 3000))]
    counts, lows, highs = _histogram(values)
    ordered = sorted(values)
    for pct in (50, 90, 99):
        exact = ordered[math.ceil(len(values) * pct / 100) - 1]  # nearest rank
        got = quantile(counts, lows, highs, pct)
        i = _bucket(exact)
        assert got is not None and lows[i] <= got <= highs[i], (pct, exact, got)


def test_a_percentile_is_exact_where_its_bucket_holds_one_value():
    counts, lows, highs = _histogram([0.2] * 10 + [5.0] * 89 + [40.0])
    assert quantile(counts, lows, highs, 50) == 5.0
    assert quantile(counts, lows, highs, 99) == 5.0
    assert quantile(counts, lows, highs, 100) == 40.0
    assert quantile(counts, lows, highs, 10) == 0.2
    assert quantile([0] * len(counts), lows, highs, 50) is None
