"""Quality rules as Arrow kernels: each returns a mask of the rows that fail it, no per-row
Python.

``unique`` looks back over the whole file: the values met in earlier chunks are kept in a
:class:`SeenValues`, so a value repeated across chunks of one file fails as it would within
one chunk. A stream micro-batch is one chunk. Memory grows with the distinct values of the
file's unique columns (their values and 8 bytes each).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simbdp.profiles.models import QualityRule

__all__ = ["SeenValues", "rule_fails"]


class SeenValues:
    """Distinct values of each ``unique`` rule met so far in one file (or micro-batch).

    Kept per rule as levels of an LSM: each level holds values sorted by a 64-bit hash
    (DuckDB's ``hash``) beside the hashes as a NumPy array; a chunk's distinct values are
    looked up in every level with a binary search (``searchsorted``), and a hash found is
    confirmed by comparing the values themselves. Levels of like size are merged, so a file
    of n rows costs about n log n, not n squared as a lookup over every value seen would.
    """

    def __init__(self) -> None:
        self._levels: dict[str, list[tuple[np.ndarray, pa.Array]]] = {}
        self._con: duckdb.DuckDBPyConnection | None = None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _hash(self, values: pa.Array) -> np.ndarray:
        if self._con is None:
            self._con = duckdb.connect(config={"threads": 1})
        src = pa.table({"v": values})  # noqa: F841  (read by DuckDB's replacement scan)
        return self._con.sql("SELECT hash(v) AS h FROM src").fetchnumpy()["h"] \
            .astype(np.uint64, copy=False)

    def repeats(self, rule: str, values: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Mask of the rows whose value appeared on an earlier row (of this chunk or of an
        earlier one); nulls never fail. Remembers this chunk's values."""
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if len(arr) == 0:
            return pa.array([], pa.bool_())
        # dictionary codes come in order of first appearance: a row is a repeat exactly when
        # its code does not raise the running maximum of the codes before it
        encoded = pc.dictionary_encode(arr)
        codes = pc.fill_null(encoded.indices.cast(pa.int64()), -1)
        rises = pc.fill_null(pc.pairwise_diff(pc.cumulative_max(codes)), 1)
        repeated = pc.equal(rises, 0)
        distinct = encoded.dictionary
        if len(distinct) == 0:
            return pc.and_(repeated, pc.is_valid(arr))
        hashes = self._hash(distinct)
        by_hash = np.argsort(hashes)  # sorted keys: searchsorted walks forward
        sorted_hashes = hashes[by_hash]
        levels = self._levels.setdefault(rule, [])
        known = np.zeros(len(distinct), dtype=bool)  # in hash order
        for level_hashes, level_values in levels:
            pos = np.minimum(np.searchsorted(level_hashes, sorted_hashes),
                             len(level_hashes) - 1)
            hit = np.flatnonzero(level_hashes[pos] == sorted_hashes)
            if len(hit):
                same = pc.equal(level_values.take(pa.array(pos[hit])),
                                distinct.take(pa.array(by_hash[hit])))
                known[hit[np.asarray(pc.fill_null(same, False))]] = True
        if known.any():
            in_codes = np.zeros(len(distinct), dtype=bool)
            in_codes[by_hash[known]] = True
            seen_before = pa.array(in_codes).take(encoded.indices)
            repeated = pc.or_(repeated, pc.fill_null(seen_before, False))
        fresh = ~known
        levels.append((sorted_hashes[fresh], distinct.take(pa.array(by_hash[fresh]))))
        while len(levels) > 1 and len(levels[-2][0]) <= len(levels[-1][0]):
            levels.append(_merge(levels.pop(-2), levels.pop()))
        return pc.and_(repeated, pc.is_valid(arr))


def _merge(a: tuple[np.ndarray, pa.Array], b: tuple[np.ndarray, pa.Array]
           ) -> tuple[np.ndarray, pa.Array]:
    """Two levels (hashes sorted, values in the same order) as one, in linear time."""
    (ha, va), (hb, vb) = a, b
    # where each of b's hashes lands in the merged level; a's fill the other places
    at_b = np.searchsorted(ha, hb, side="right") + np.arange(len(hb))
    order = np.empty(len(ha) + len(hb), dtype=np.int64)
    is_b = np.zeros(len(order), dtype=bool)
    is_b[at_b] = True
    order[at_b] = np.arange(len(ha), len(order))
    order[~is_b] = np.arange(len(ha))
    hashes = np.concatenate([ha, hb])[order]
    return hashes, pa.concat_arrays([va, vb]).take(pa.array(order))


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
