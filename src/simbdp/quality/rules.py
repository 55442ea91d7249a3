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
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simbdp.profiles.tables import QualityRule
from simbdp.scratch import scratch

if TYPE_CHECKING:
    import duckdb

__all__ = ["SeenValues", "rule_fails"]


class _Seen:
    """One rule's values: each chunk's distinct values as they came (``chunks``, numbered
    one after the other from 0), and a hash set of them: an open-addressing table (linear
    probing) of 64-bit hashes and value numbers, in NumPy arrays, probed for a whole chunk at
    once, one round per probe step, so no Python runs per value."""

    def __init__(self) -> None:
        self.chunks: list[pa.Array] = []
        self.starts: list[int] = []
        self.total = 0
        self.keys = np.zeros(1024, dtype=np.uint64)  # 0: an empty slot
        self.numbers = np.zeros(1024, dtype=np.int64)
        self.count = 0

    def find(self, hashes: np.ndarray) -> np.ndarray:
        """The number of the value with each hash, or -1."""
        mask = np.uint64(len(self.keys) - 1)
        slot = (hashes & mask).astype(np.int64)
        found = np.full(len(hashes), -1, dtype=np.int64)
        pending = np.arange(len(hashes))
        while len(pending):
            at = slot[pending]
            keys = self.keys[at]
            match = keys == hashes[pending]
            found[pending[match]] = self.numbers[at[match]]
            pending = pending[~match & (keys != 0)]
            slot[pending] = (slot[pending] + 1) & int(mask)
        return found

    def insert(self, hashes: np.ndarray, numbers: np.ndarray) -> None:
        if 2 * (self.count + len(hashes)) > len(self.keys):  # keep the table half empty
            size = 1 << int(4 * (self.count + len(hashes))).bit_length()
            used = self.keys != 0
            old_keys, old_numbers = self.keys[used], self.numbers[used]
            self.keys = np.zeros(size, dtype=np.uint64)
            self.numbers = np.zeros(size, dtype=np.int64)
            self.count = 0
            self._place(old_keys, old_numbers)
        self._place(hashes, numbers)

    def _place(self, hashes: np.ndarray, numbers: np.ndarray) -> None:
        mask = len(self.keys) - 1
        slot = (hashes & np.uint64(mask)).astype(np.int64)
        pending = np.arange(len(hashes))
        while len(pending):
            at = slot[pending]
            free = self.keys[at] == 0
            mine, where = pending[free], at[free]
            # several may race for one free slot: the last write wins it, the others probe on
            self.keys[where], self.numbers[where] = hashes[mine], numbers[mine]
            won = np.zeros(len(pending), dtype=bool)
            won[np.flatnonzero(free)[self.numbers[where] == numbers[mine]]] = True
            pending = pending[~won]
            slot[pending] = (slot[pending] + 1) & mask
        self.count += len(hashes)

    def same(self, numbers: np.ndarray, candidates: pa.Array) -> np.ndarray:
        """Whether the values numbered ``numbers`` equal ``candidates``, one by one."""
        which = np.searchsorted(np.asarray(self.starts), numbers, side="right") - 1
        out = np.zeros(len(numbers), dtype=bool)
        for c in np.unique(which):  # one take per chunk holding a hit
            at = np.flatnonzero(which == c)
            eq = pc.equal(self.chunks[c].take(pa.array(numbers[at] - self.starts[c])),
                          candidates.take(pa.array(at)))
            out[at] = np.asarray(pc.fill_null(eq, False))
        return out

    def add(self, values: pa.Array, hashes: np.ndarray, positions: np.ndarray) -> None:
        """Remember ``values`` (a chunk's distinct ones); those at ``positions`` (with
        ``hashes``) go into the hash set."""
        self.chunks.append(values)
        self.starts.append(self.total)
        self.insert(hashes, positions + self.total)
        self.total += len(values)


class SeenValues:
    """Distinct values of each ``unique`` rule met so far in one file (or micro-batch).

    A chunk's distinct values are hashed (DuckDB's 64-bit ``hash``) and looked up in a hash
    set of the values seen before (:class:`_Seen`); a hash found is confirmed by comparing
    the values themselves. Linear in the rows of the file; memory: the distinct values, plus
    32 bytes each for the table. Two different values with one hash (about one in 10^7 for a
    file of 10^6 distinct values) can let a later repeat of the second one pass.
    """

    def __init__(self) -> None:
        self._rules: dict[str, _Seen] = {}
        self._con: duckdb.DuckDBPyConnection | None = None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _hash(self, values: pa.Array) -> np.ndarray:
        if self._con is None:
            self._con = scratch()
        src = pa.table({"v": values})  # noqa: F841  (read by DuckDB's replacement scan)
        hashes = self._con.sql("SELECT hash(v) AS h FROM src").fetchnumpy()["h"] \
            .astype(np.uint64, copy=False)
        hashes[hashes == 0] = 1  # 0 marks an empty slot
        return hashes

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
        seen = self._rules.setdefault(rule, _Seen())
        found = seen.find(hashes)
        hit = np.flatnonzero(found >= 0)
        known = np.zeros(len(distinct), dtype=bool)
        if len(hit):
            known[hit[seen.same(found[hit], distinct.take(pa.array(hit)))]] = True
            seen_before = pa.array(known).take(encoded.indices)
            repeated = pc.or_(repeated, pc.fill_null(seen_before, False))
        fresh = np.flatnonzero(~known)
        seen.add(distinct, hashes[fresh], fresh)
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
