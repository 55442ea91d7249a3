"""Quality rules as Arrow kernels: each returns a mask of the rows that fail it, no per-row
Python.

``unique`` looks back over the whole file: the values met in earlier chunks are kept in a
:class:`SeenValues` (one Arrow array of distinct values per rule), so a value repeated across
chunks of one file fails as it would within one chunk. A stream micro-batch is one chunk.
Memory grows with the distinct values of the file's unique columns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simbdp.profiles.models import QualityRule

__all__ = ["SeenValues", "rule_fails"]


class SeenValues:
    """Distinct values of each ``unique`` rule met so far in one file (or micro-batch)."""

    def __init__(self) -> None:
        self._values: dict[str, pa.Array] = {}

    def repeats(self, rule: str, values: pa.ChunkedArray) -> pa.Array:
        """Mask of the rows whose value appeared on an earlier row (of this chunk or of an
        earlier one); nulls never fail. Remembers this chunk's values."""
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        n = len(arr)
        idx = pa.array(np.arange(n, dtype=np.int64))
        first = pa.table({"v": arr, "i": idx}).group_by("v", use_threads=False) \
            .aggregate([("i", "min")])
        repeated = pc.invert(pc.is_in(idx, value_set=first.column("i_min").combine_chunks()))
        distinct = first.column("v").combine_chunks()
        seen = self._values.get(rule)
        if seen is not None and len(seen):
            repeated = pc.or_(repeated, pc.is_in(arr, value_set=seen))
            distinct = pc.filter(distinct, pc.invert(pc.is_in(distinct, value_set=seen)))
        distinct = pc.drop_null(distinct)
        self._values[rule] = distinct if seen is None else pa.concat_arrays([seen, distinct])
        return pc.and_(repeated, pc.is_valid(arr))


def _cutoff(values: pa.ChunkedArray, age_secs: float, now: float) -> pa.Scalar:
    at = datetime.fromtimestamp(now - age_secs, UTC)
    t = values.type
    if pa.types.is_date(t):
        return pa.scalar(at.date(), t)
    if getattr(t, "tz", None) is None:
        return pa.scalar(at.replace(tzinfo=None), t)  # naive timestamps are read as UTC
    return pa.scalar(at, t)


def rule_fails(rule: QualityRule, values: pa.ChunkedArray, seen: SeenValues,
               now: float | None = None) -> pa.ChunkedArray | pa.Array:
    """Mask of the rows of ``values`` (the rule's column, cast) that fail ``rule``; a null
    fails only not_null. ``now`` (epoch seconds) is the reference of max_age."""
    v = rule.value
    check = rule.check
    if check == "not_null":
        return pc.is_null(values)
    if check == "unique":
        return seen.repeats(rule.name, values)
    if check == "min":
        res = pc.less(values, pa.scalar(v).cast(values.type))
    elif check == "max":
        res = pc.greater(values, pa.scalar(v).cast(values.type))
    elif check == "regex":
        res = pc.invert(pc.match_substring_regex(pc.cast(values, pa.string()), str(v)))
    elif check == "in":
        allowed = pa.array(v if isinstance(v, list) else [v]).cast(values.type)
        res = pc.invert(pc.is_in(values, value_set=allowed))
    elif check == "max_age":
        at = time.time() if now is None else now
        res = pc.less(values, _cutoff(values, rule.age_secs, at))
    elif check == "min_length":
        res = pc.less(pc.utf8_length(values), int(v))  # type: ignore[arg-type]
    else:  # max_length
        res = pc.greater(pc.utf8_length(values), int(v))  # type: ignore[arg-type]
    return pc.fill_null(res, False)
