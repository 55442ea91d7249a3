"""The quality rules one by one on conform, the pass-rate gate and profile errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from simbdp.profiles.models import TenantProfile
from simbdp.profiles.tables import TableSpec, parse_age
from simbdp.quality import SeenValues, conform, pass_rate_breach, quality_json

NOW = datetime(2026, 1, 10, tzinfo=UTC).timestamp()


def table(*rules: dict[str, Any], **extra: Any) -> TableSpec:
    return TableSpec.model_validate({
        "name": "t",
        "columns": [{"name": "id", "type": "text"}, {"name": "n", "type": "int"},
                    {"name": "ts", "type": "timestamp"}, {"name": "tz", "type": "timestamptz"},
                    {"name": "d", "type": "date"}],
        "quality": list(rules), **extra})


def failing_rows(t: TableSpec, data: pa.Table, seen: SeenValues | None = None) -> list[int]:
    c = conform(data, t, "f.csv", seen=seen, now=NOW)
    return c.rejected.column("_row").to_pylist()


def test_unique_fails_repeats_after_the_first_and_ignores_nulls():
    t = table({"name": "uid", "column": "id", "check": "unique"})
    data = pa.table({"id": ["a", "b", "a", None, None, "b", "a", "c"]})
    c = conform(data, t, "f.csv")
    assert c.rejected.column("_row").to_pylist() == [2, 5, 6]
    assert c.rule_failures == {"uid": 3}
    assert c.good.column("id").to_pylist() == ["a", "b", None, None, "c"]
    assert "rule 'uid' (id unique) failed" in c.rejected.column("_reason")[0].as_py()


def test_unique_spans_the_chunks_of_one_file():
    t = table({"name": "uid", "column": "n", "check": "unique"})
    seen = SeenValues()
    assert failing_rows(t, pa.table({"n": ["1", "2", "2"]}), seen) == [2]
    assert failing_rows(t, pa.table({"n": ["3", "1", "4", "3"]}), seen) == [1, 3]
    assert failing_rows(t, pa.table({"n": ["2", "5"]}), seen) == [0]
    # without a shared SeenValues each batch is its own scope
    assert failing_rows(t, pa.table({"n": ["1", "2"]})) == []


@pytest.mark.parametrize(("column", "values"), [
    ("ts", ["2026-01-09 12:00:00", "2026-01-01 00:00:00", "2026-01-02 23:59:59", None]),
    ("tz", ["2026-01-09T12:00:00+00:00", "2025-12-31T00:00:00+00:00",
            "2026-01-03T01:00:00+02:00", None]),
    ("d", ["2026-01-09", "2026-01-01", "2026-01-02", None]),
])
def test_max_age_on_timestamps_and_dates(column, values):
    t = table({"name": "fresh", "column": column, "check": "max_age", "value": "7d"})
    assert failing_rows(t, pa.table({column: values})) == [1, 2]


def test_min_and_max_length_count_characters():
    t = table({"name": "short", "column": "id", "check": "min_length", "value": 2},
              {"name": "long", "column": "id", "check": "max_length", "value": 3})
    c = conform(pa.table({"id": ["ab", "a", "abcd", "ééé", None]}), t, "f")
    assert c.rejected.column("_row").to_pylist() == [1, 2]
    assert c.rule_failures == {"short": 1, "long": 1}


def test_stats_count_checked_passed_and_failed_per_rule():
    t = table({"name": "pos", "column": "n", "check": "min", "value": 0},
              {"name": "uid", "column": "id", "check": "unique"})
    c = conform(pa.table({"id": ["a", "a", "b", "c"], "n": ["-1", "-2", "x", "3"]}), t, "f")
    s = c.stats
    assert (s.rows_checked, s.rows_passed, s.rows_failed_schema) == (4, 1, 1)
    assert s.failed == {"pos": 2, "uid": 1}
    assert s.pass_rate == 0.25
    stored = json.loads(quality_json({"t": s}) or "")
    assert stored["pass_rate"] == 0.25 and stored["tables"]["t"]["failed"] == s.failed


def test_pass_rate_breach_names_the_rate_and_the_table():
    t = table({"name": "pos", "column": "n", "check": "min", "value": 0}, min_pass_rate=0.9)
    c = conform(pa.table({"n": ["1", "-1", "2", "3"]}), t, "f")
    reason = pass_rate_breach(t, c.stats, "tenant 'acme': 'f.csv'")
    assert reason is not None
    assert "75.00%" in reason and "min_pass_rate 90.00%" in reason and "'t'" in reason
    assert "pos 1" in reason
    ok = conform(pa.table({"n": ["1", "2"]}), t, "f")
    assert pass_rate_breach(t, ok.stats, "f") is None
    assert pass_rate_breach(table(), c.stats, "f") is None  # 0: never


def test_unknown_column_names_tenant_table_rule_and_column():
    with pytest.raises(ValidationError) as e:
        TenantProfile.model_validate({
            "tenant_id": "acme",
            "tables": [{"name": "orders", "columns": [{"name": "amount", "type": "int"}],
                        "quality": [{"name": "pos", "column": "amout", "check": "min",
                                     "value": 0}]}]})
    msg = str(e.value)
    assert "tenant 'acme'" in msg and "table 'orders'" in msg
    assert "rule 'pos'" in msg and "unknown column 'amout'" in msg and "amount" in msg
    with pytest.raises(ValidationError, match="rule 'pos' names unknown column 'amout'"):
        TableSpec.model_validate({"name": "orders", "columns": [{"name": "amount", "type": "int"}],
                                  "quality": [{"name": "pos", "column": "amout",
                                               "check": "not_null"}]})


@pytest.mark.parametrize(("rule", "words"), [
    ({"check": "max_age", "column": "n", "value": "7d"}, "does not apply to column 'n'"),
    ({"check": "max_age", "column": "ts", "value": "7 days"}, "use a number and a unit"),
    ({"check": "min_length", "column": "n", "value": 2}, "does not apply"),
    ({"check": "min_length", "column": "id", "value": 2.5}, "whole number"),
    ({"check": "unique", "column": "id", "value": 1}, "takes no value"),
    ({"check": "max", "column": "n"}, "needs a value"),
    ({"check": "regex", "column": "id", "value": "("}, "bad pattern"),
])
def test_bad_rules_fail_at_load(rule, words):
    with pytest.raises(ValidationError, match=words):
        table({"name": "r", **rule})


def test_parse_age():
    assert parse_age("90s") == 90 and parse_age("1.5h") == 5400 and parse_age("2w") == 1209600


@pytest.mark.parametrize("kind", ["int", "text"])
def test_unique_over_many_chunks_matches_a_plain_set(kind):
    # many chunks of random values with repeats inside and across chunks: the sorted-hash
    # levels (merged as they grow) must find exactly the repeats a plain set finds
    rng = np.random.default_rng(7)
    t = TableSpec.model_validate({"name": "t", "columns": [{"name": "v", "type": kind}],
                                  "quality": [{"name": "u", "column": "v", "check": "unique"}]})
    seen, expected_seen = SeenValues(), set()
    for size in [5, 300, 1, 64, 1000, 7, 2000, 33, 0, 512, 4096, 3]:
        values = [None if x < 20 else str(x) for x in rng.integers(0, 30_000, size)]
        expected = []
        for i, v in enumerate(values):
            if v is not None and v in expected_seen:
                expected.append(i)
            if v is not None:
                expected_seen.add(v)
        got = failing_rows(t, pa.table({"v": pa.array(values, pa.string())}), seen)
        assert got == expected


def test_unique_when_every_hash_lands_in_the_same_slot(monkeypatch):
    # hashes whose low bits are all zero start probing at one slot: races for free slots
    # and long probe runs must still place and find every value
    real = SeenValues._hash
    monkeypatch.setattr(SeenValues, "_hash",
                        lambda self, values: real(self, values) << np.uint64(24))
    t = TableSpec.model_validate({"name": "t", "columns": [{"name": "v", "type": "int"}],
                                  "quality": [{"name": "u", "column": "v", "check": "unique"}]})
    seen = SeenValues()
    assert failing_rows(t, pa.table({"v": [str(i) for i in range(600)]}), seen) == []
    again = [str(i) for i in range(590, 1200)]  # 590..599 seen in the chunk before
    assert failing_rows(t, pa.table({"v": again}), seen) == list(range(10))


def test_a_rate_under_one_never_reads_100_percent():
    from simbdp.quality.stats import percent

    assert percent(61_998 / 62_000) == "99.99%" and percent(1.0) == "100.00%"
    assert percent(0.975, 1) == "97.5%" and percent(0.95) == "95.00%"
    assert percent(0.89999) == "89.99%"  # just under a 90% threshold does not read 90.00%
