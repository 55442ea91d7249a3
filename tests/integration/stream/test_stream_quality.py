"""Quality rules on the stream path (embedded broker, DuckDB): failing messages are
dead-lettered with the rule, a micro-batch under min_pass_rate is dead-lettered whole with the
rate (nothing lost), and the reports carry the quality counts to the state store."""

from __future__ import annotations

import json
from typing import Any

from simbdp.stream.monitor import StreamMonitor
from simbdp.testing import EVENTS_TABLE, stream_tenant

RULES: list[dict[str, Any]] = [
    {"name": "uid", "column": "n", "check": "unique"},
    {"name": "short", "column": "note", "check": "min_length", "value": 3},
    {"name": "long", "column": "note", "check": "max_length", "value": 8},
]


def tenant(**table: Any) -> dict[str, Any]:
    t = stream_tenant(batch_max_rows=100)
    t["tables"][0] = {**EVENTS_TABLE, "quality": RULES, **table}
    return t


def rows(n: int, bad: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out = [{"id": f"e{i}", "n": i, "note": "hello"} for i in range(n)]
    for i, change in (bad or {}).items():
        out[i].update(change)
    return out


def test_rules_dead_letter_failing_messages_and_reports_count_them(make_stream_env):
    env = make_stream_env([tenant()])
    env.publish("acme", rows(100, {3: {"note": "hi"}, 4: {"note": "far too long"},
                                   9: {"n": 2}}), id_field="id")
    reports = env.drain()
    assert env.count() == 97
    reasons = {d.id: d.headers["x-reason"] for d in env.dead_letters()}
    assert set(reasons) == {"e3", "e4", "e9"}
    assert "rule 'short'" in reasons["e3"] and "rule 'long'" in reasons["e4"]
    assert "rule 'uid' (n unique)" in reasons["e9"]
    quality = [json.loads(r["quality"]) for r in reports if r.get("quality")]
    assert sum(q["rows_checked"] for q in quality) == 100
    assert sum(q["rows_passed"] for q in quality) == 97
    failed: dict[str, int] = {}
    for q in quality:
        for rule, n in q["failed"].items():
            failed[rule] = failed.get(rule, 0) + n
    assert failed == {"short": 1, "long": 1, "uid": 1}
    # the monitor stores them; the store gives them back as dicts
    StreamMonitor(env.platform, env.store).ingest_reports(reports)
    stored = [r["quality"] for r in env.store.stream_reports("acme") if r["quality"]]
    assert sum(q["rows_passed"] for q in stored) == 97


def test_min_pass_rate_breached_dead_letters_the_micro_batch_whole(make_stream_env):
    env = make_stream_env([tenant(min_pass_rate=0.9)])
    # one micro-batch of 100 with 20 short notes (80%): all 100 dead-lettered, none loaded
    env.publish("acme", rows(100, {i: {"note": "x"} for i in range(0, 100, 5)}), id_field="id")
    env.drain()
    assert env.count() == 0
    dead = env.dead_letters()
    assert len(dead) == 100  # nothing lost: every message is in the dead-letter queue
    reason = dead[0].headers["x-reason"]
    assert "pass rate 80.00%" in reason and "min_pass_rate 90.00%" in reason
    assert "'events'" in reason and "tenant 'acme'" in reason and "short 20" in reason
