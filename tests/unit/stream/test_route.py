"""Splitting a decoded micro-batch by message type among a routed tenant's stream apps."""

from __future__ import annotations

import json
import time

import pyarrow as pa

from simbdp.profiles import TenantProfile
from simbdp.state import StateStore
from simbdp.stream.brokers import Delivery
from simbdp.stream.decode import MSG_COLUMN, decode_batch
from simbdp.stream.monitor import ScalingPolicy, StreamMonitor
from simbdp.stream.route import ROUTED, batch_limits, instance_app, split_by_type
from simbdp.testing import make_platform

PROFILE = TenantProfile.model_validate({
    "tenant_id": "acme",
    "tables": [{"name": "clicks", "columns": [{"name": "id", "type": "text"},
                                              {"name": "page", "type": "text"}]},
               {"name": "orders", "columns": [{"name": "id", "type": "text"},
                                              {"name": "type", "type": "text"},
                                              {"name": "amount", "type": "float64"}]}],
    "stream": {"route_by": "kind"},
    "apps": [{"name": "click", "kind": "stream", "tables": ["clicks"],
              "message_types": ["click"], "batch_max_rows": 50, "batch_max_wait_ms": 900},
             {"name": "order", "kind": "stream", "tables": ["orders"],
              "message_types": ["order"], "batch_max_rows": 70, "batch_max_wait_ms": 300},
             {"name": "files", "tables": ["clicks"]}],
})


def delivery(mid: str, body: dict | bytes, **headers: str) -> Delivery:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Delivery(mid, raw, 0.0, False, headers)


def split(*ds: Delivery):  # type: ignore[no-untyped-def]
    return split_by_type(decode_batch(list(ds), 10_000), PROFILE)


def test_each_app_gets_its_types_with_their_fields_only():
    s = split(delivery("c1", {"kind": "click", "id": "c1", "page": "/a"}),
              delivery("o1", {"id": "o1", "type": "x", "amount": 2.5}, kind="order"),
              delivery("c2", {"kind": "click", "id": "c2", "page": "/b"}),
              delivery("o2", {"kind": "click", "id": "o2", "amount": 1.0}, kind="order"))
    assert list(s.parts) == ["click", "order"] and s.dead == []
    click, order = s.parts["click"], s.parts["order"]
    assert [d.id for d in click.good] == ["c1", "c2"]
    # the type field and the order's fields are gone; the message index counts from 0 again
    assert click.rows.to_pydict() == {"id": ["c1", "c2"], "page": ["/a", "/b"],
                                      MSG_COLUMN: [0, 1]}
    # the header wins over the field; "type" stays: it is a column of the orders table
    assert [d.id for d in order.good] == ["o1", "o2"]
    assert order.rows.select(["id", "type", "amount", MSG_COLUMN]).to_pydict() == {
        "id": ["o1", "o2"], "type": ["x", None], "amount": [2.5, 1.0], MSG_COLUMN: [0, 1]}
    assert "page" not in order.rows.column_names and "kind" not in order.rows.column_names


def test_unknown_missing_or_unusable_types_are_dead_with_the_reason():
    s = split(delivery("r1", {"kind": "refund", "id": "r1"}),
              delivery("n1", {"id": "n1"}),
              delivery("s1", {"kind": {"nested": 1}, "id": "s1"}),
              delivery("bad", b"{nope"),
              delivery("c1", {"kind": "click", "id": "c1", "page": "/"}))
    assert list(s.parts) == ["click"]
    reasons = dict((d.id, r) for d, r in s.dead)
    assert reasons["r1"] == ("tenant 'acme': message 'r1' has type 'refund', which no stream "
                             "app takes; the types taken are click, order")
    assert "message 'n1' has no type (no header or top-level JSON field 'kind')" in reasons["n1"]
    assert reasons["s1"].startswith("tenant 'acme': message 's1' has ")  # an object: no app's
    assert "not valid JSON" in reasons["bad"]
    assert len(reasons) == 4


def test_instances_and_micro_batches_of_a_routed_tenant():
    assert instance_app(PROFILE, "click") == instance_app(PROFILE, "order") == ROUTED
    assert instance_app(PROFILE, "files") == "files"  # a batch app is not routed
    assert batch_limits(PROFILE) == (50, 8 * 1024**2, 300)
    plain = PROFILE.model_copy(update={"stream": PROFILE.stream.model_copy(
        update={"route_by": None})})
    assert not plain.routed and instance_app(plain, "click") == "click"


def test_an_empty_batch_splits_into_nothing():
    s = split_by_type(decode_batch([], 10_000), PROFILE)
    assert s.parts == {} and s.dead == []
    assert isinstance(decode_batch([], 10_000).rows, pa.Table)


def _report(app: str, messages: int, backlog: int, p99: float | None = 9.0) -> dict:
    now = time.time()
    return {"tenant": "acme", "app": app, "instance": "acme-routed-1", "window_start": now - 1,
            "window_end": now, "messages": messages, "bytes": messages * 100,
            "rows_loaded": messages, "rows_rejected": 0, "latency_mean_ms": 5.0,
            "latency_p99_ms": p99, "backlog": backlog}


def test_the_monitor_scales_a_routed_tenant_as_one(tmp_path):
    tables = [{"name": n, "columns": [{"name": "id", "type": "text"}]}
              for n in ("clicks", "orders", "audits")]
    apps = [{"name": "click", "kind": "stream", "tables": ["clicks"],
             "message_types": ["click"], "target_backlog": 100, "max_instances": 3},
            {"name": "order", "kind": "stream", "tables": ["orders"],
             "message_types": ["order"], "target_backlog": 900, "max_instances": 2},
            {"name": "audit", "kind": "stream", "tables": ["audits"],
             "message_types": ["audit"], "max_instances": 4}]
    platform = make_platform(tmp_path / "home", [{
        "tenant_id": "acme", "tables": tables, "apps": apps, "stream": {"route_by": "type"}}])
    store = StateStore.open(platform.config)
    store.set_desired("acme", "click", 1)
    store.set_desired("acme", "order", 2)
    store.set_desired("acme", "audit", 0)  # stopped: left alone, its limits do not count
    mon = StreamMonitor(platform, store, ScalingPolicy(cooldown_secs=0))
    for _ in range(2):  # the backlog is over click's target: the tenant's instances scale
        mon.ingest_reports([_report("click", 10, 500), _report("order", 10, 500),
                            _report(ROUTED, 1, 500, None)])
        mon.evaluate()
    assert {r["app"]: r["instances"] for r in store.desired()} == {
        "click": 3, "order": 2, "audit": 0}  # order stops at its max; 3 run (the most)
    [d] = store.decisions("acme")
    assert (d["app"], d["action"], d["instances_before"], d["instances_after"]) == (
        ROUTED, "scale_up", 2, 3)
    assert "backlog 500 > target 100" in d["reason"]
    for _ in range(3):  # at the most of the started apps' max_instances (3): no more
        mon.ingest_reports([_report("click", 10, 500), _report("order", 10, 500)])
        mon.evaluate()
    assert len(store.decisions("acme")) == 1
    assert {r["app"] for r in store.stream_reports("acme")} == {"click", "order", ROUTED}
