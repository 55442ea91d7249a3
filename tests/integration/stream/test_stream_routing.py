"""Several apps per tenant: batch apps take files by ``file_pattern``, stream apps take the
messages of their types from the one tenant queue (``stream.route_by``), each into its own
table; a message whose type no app takes is dead-lettered with the reason. Real instance
processes started by the stream manager, on each broker."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from typing import Any

import pytest
import yaml

from simbdp.batch import BatchIngestManager
from simbdp.coredms.base import open_sink
from simbdp.profiles import load_platform
from simbdp.reload import Reloader
from simbdp.stream.brokers import OutMessage, open_broker
from simbdp.stream.heartbeat import heartbeat_path
from simbdp.stream.manager import StreamManager
from simbdp.stream.route import ROUTED
from simbdp.testing import crash_at_fault, drop, wait_for

APP = '''
import pyarrow.compute as pc

def shout(data, ctx):
    return data.set_column(data.schema.get_field_index("page"), "page",
                           pc.utf8_upper(data["page"]))

def tenfold(data, ctx):
    return data.set_column(data.schema.get_field_index("n"), "n",
                           pc.multiply(data["n"], 10))

def as_is(data, ctx):
    return data
'''


def _wait(cond, secs: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    return wait_for(cond, secs, every=0.2)


def table(name: str, *cols: tuple[str, str], sinks: tuple[str, ...] = ("default",)
          ) -> dict[str, Any]:
    return {"name": name, "primary_key": ["id"], "sinks": list(sinks),
            "columns": [{"name": "id", "type": "text", "nullable": False},
                        *({"name": c, "type": t} for c, t in cols)]}


def routed_tenant(tenant: str, stream_sinks: tuple[str, ...] = ("default",)
                  ) -> dict[str, Any]:
    stream = {"kind": "stream", "batch_max_rows": 100, "batch_max_wait_ms": 100,
              "timeout_secs": 10}
    return {
        "tenant_id": tenant,
        "tables": [table("clicks", ("page", "text"), sinks=stream_sinks),
                   table("orders", ("amount", "float64"), sinks=stream_sinks),
                   table("visits", ("n", "int64")), table("stock", ("qty", "int64"))],
        "stream": {"route_by": "type", "max_message_bytes": "2KB"},
        "batch": {"file_types": ["csv"]},
        "apps": [
            {"name": "visits", "tables": ["visits"], "file_pattern": "visits*.csv",
             "entrypoint": "feed:tenfold"},
            {"name": "stock", "tables": ["stock"], "file_pattern": "stock*.csv",
             "entrypoint": "feed:as_is"},
            {"name": "click", "tables": ["clicks"], "message_types": ["click"],
             "entrypoint": "feed:shout", **stream},
            {"name": "order", "tables": ["orders"], "message_types": ["order", "order_v2"],
             **stream},
        ],
    }


def messages() -> tuple[list[OutMessage], dict[str, str], dict[str, float]]:
    """Clicks typed by their JSON field, orders by header or field, a refund and an untyped
    message; the clicks and orders each table should hold."""
    now, out = time.time(), []
    clicks = {f"c{i}": f"/page/{i}" for i in range(60)}
    orders = {f"o{i}": i + 0.5 for i in range(40)}
    for i in range(60):
        out.append(OutMessage(f"c{i}", f'{{"type": "click", "id": "c{i}", "page": '
                                       f'"/page/{i}"}}'.encode(), now))
        if i < 40:  # half typed by a header (no type field), half by the field
            body = {"id": f"o{i}", "amount": i + 0.5}
            if i % 2:
                out.append(OutMessage(f"o{i}", _json(body), now, {"type": "order"}))
            else:
                out.append(OutMessage(f"o{i}", _json({"type": "order_v2", **body}), now))
    out.append(OutMessage("r1", b'{"type": "refund", "id": "r1", "amount": 3.0}', now))
    out.append(OutMessage("x1", b'{"id": "x1", "page": "/nowhere"}', now))
    # a header wins over the field: this "click" body is an order
    out.append(OutMessage("o99", b'{"type": "click", "id": "o99", "amount": 1.5}', now,
                          {"type": "order"}))
    orders["o99"] = 1.5
    # a click for a table its app does not write: dead, and its part loads without it
    out.insert(7, OutMessage("t1", b'{"type": "click", "id": "t1", "page": "/t"}', now,
                             {"table": "orders"}))
    return out, clicks, orders


def _json(v: dict[str, Any]) -> bytes:
    import json

    return json.dumps(v).encode()


def _unconfined_without_bwrap(env) -> None:  # type: ignore[no-untyped-def]
    """Apps run confined where bubblewrap is installed, else unconfined (routing is what
    is tested here; tests/integration/batch/test_batch_unconfined.py tests the choice)."""
    if shutil.which("bwrap"):
        return
    path = env.config.home / "platform.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()),
                                    "apps": {"unconfined": True}}))
    env.platform = load_platform(env.config.home)
    env.config = env.platform.config




def _rows(env, tenant: str, name: str, sink_name: str = "default"  # type: ignore[no-untyped-def]
          ) -> dict[str, Any]:
    sink = open_sink(env.config.sinks[sink_name])
    try:
        profile = env.platform.tenant(tenant)
        sink.ensure_tables(profile)
        t = sink.read_rows(profile, name, limit=10_000)
    finally:
        sink.close()
    cols = t.column_names
    return {r["id"]: r[cols[1]] for r in t.to_pylist()}


def _broker_call(env, fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        b = open_broker(env.config.broker)
        try:
            return await fn(b)
        finally:
            await b.close()
    return asyncio.run(go())


@pytest.mark.parametrize("broker", [
    "embedded",
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    # the stream tables in PostgreSQL too: two sinks per part, sessions shared by the apps
    pytest.param("rabbitmq+postgres", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]),
    pytest.param("nats", marks=pytest.mark.nats),
])
def test_one_tenant_two_batch_apps_two_stream_apps_routed_by_type(make_stream_env, request,
                                                                  broker):
    settings: dict[str, Any] = {"kind": "embedded", "lease_secs": 2}
    tenant = "acme"
    sinks: dict[str, Any] = {}
    if broker.startswith("rabbitmq"):
        settings = {"kind": "rabbitmq", "url": request.getfixturevalue("rabbitmq_url")}
    if broker == "rabbitmq+postgres":
        sinks = {"pg": {"kind": "postgres", "dsn": request.getfixturevalue("pg_dsn")}}
    elif broker == "nats":  # the shared server: a tenant (so a stream) of this test's own
        settings = {"kind": "nats", "url": request.getfixturevalue("nats_url"), "lease_secs": 2}
        tenant = f"r{uuid.uuid4().hex[:10]}"
    env = make_stream_env([routed_tenant(tenant, ("default", *sinks))], broker=settings,
                          sinks=sinks,
                          apps={tenant: {"feed.py": APP}})
    _unconfined_without_bwrap(env)
    if broker == "nats":
        request.addfinalizer(lambda: _broker_call(env, lambda b: b.purge(tenant)))

    # batch: each file to the app its name matches, into that app's table
    staging = env.config.staging_dir(tenant)
    drop(staging / "visits1.csv", b"id,n\nv1,1\nv2,2\nv3,3\n")
    drop(staging / "stock1.csv", b"id,qty\ns1,10\ns2,20\n")
    batch = BatchIngestManager(env.platform, env.store)
    try:
        subs = batch.submit(tenant, [staging / "visits1.csv", staging / "stock1.csv"])
        batch.run_until_idle(timeout_secs=120)
    finally:
        batch.close()
    recs = {env.store.record(s.record_id)["app"]: env.store.record(s.record_id) for s in subs}
    assert {a: r["outcome"] for a, r in recs.items()} == {"visits": "processed",
                                                          "stock": "processed"}
    assert _rows(env, tenant, "visits") == {"v1": 10, "v2": 20, "v3": 30}
    assert _rows(env, tenant, "stock") == {"s1": 10, "s2": 20}

    # stream: one queue, two apps, one set of instances (as the most wanted of the two)
    msgs, clicks, orders = messages()
    _broker_call(env, lambda b: b.ensure_tenant(tenant))
    _broker_call(env, lambda b: b.publish(tenant, msgs))
    manager = StreamManager(env.platform, env.store, grace_secs=10)
    env.store.set_desired(tenant, "click", 1)
    env.store.set_desired(tenant, "order", 2)
    try:
        manager.reconcile()
        assert manager.status() == {(tenant, ROUTED): 2}
        done = lambda: (len(_rows(env, tenant, "clicks")) == len(clicks)  # noqa: E731
                        and len(_rows(env, tenant, "orders")) == len(orders))
        assert _wait(done), (_rows(env, tenant, "clicks"), _rows(env, tenant, "orders"))
        procs = [i.proc for i in manager.apps[(tenant, ROUTED)].instances]
        env.store.set_desired(tenant, "click", 0)
        env.store.set_desired(tenant, "order", 0)
        manager.reconcile()
        assert _wait(lambda: all(p.poll() is not None for p in procs))
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        manager.shutdown()

    assert _rows(env, tenant, "clicks") == {k: v.upper() for k, v in clicks.items()}
    assert _rows(env, tenant, "orders") == orders
    for name in sinks:
        assert _rows(env, tenant, "clicks", name) == {k: v.upper() for k, v in clicks.items()}
        assert _rows(env, tenant, "orders", name) == orders
    dead = {d.id: d.headers["x-reason"]
            for d in _broker_call(env, lambda b: b.read_dead_letters(tenant, 100))}
    assert dead == {
        "r1": f"tenant {tenant!r}: message 'r1' has type 'refund', which no stream app "
              "takes; the types taken are click, order, order_v2",
        "x1": f"tenant {tenant!r}: message 'x1' has no type (no header or top-level JSON "
              "field 'type'); the types taken are click, order, order_v2",
        "t1": "message 't1' is for table 'orders', which tenant " f"{tenant!r} does not own "
              "(app tables: ['clicks'])",
    }
    # each app reports its own figures; the messages no app took under ROUTED
    reports = _broker_call(env, lambda b: b.fetch_reports(10_000, 1.0))
    by_app: dict[str, list[dict[str, Any]]] = {}
    for r in reports:
        assert r["tenant"] == tenant
        by_app.setdefault(r["app"], []).append(r)
    assert set(by_app) == {"click", "order", ROUTED}
    assert sum(r["rows_loaded"] for r in by_app["click"]) == len(clicks)
    assert sum(r["rows_loaded"] for r in by_app["order"]) == len(orders)
    assert sum(r["messages"] for r in by_app[ROUTED]) == 2
    assert sum(r["rows_rejected"] for r in by_app["click"]) == 1
    assert sum(r["rows_rejected"] for r in by_app[ROUTED]) == 2


@pytest.mark.slow
def test_sigkill_between_a_part_commit_and_its_ack_loads_each_message_once(make_stream_env):
    """The first committed part (clicks) is redelivered unacked with the rest: its ids are
    found committed and skipped, and the parts not written yet load once."""
    env = make_stream_env([routed_tenant("acme")], apps={"acme": {"feed.py": APP}})
    _unconfined_without_bwrap(env)
    msgs, clicks, orders = messages()
    _broker_call(env, lambda b: b.ensure_tenant("acme"))
    _broker_call(env, lambda b: b.publish("acme", msgs))
    # dies right after its first commit, before the ack
    manager, fault = crash_at_fault(env.platform, env.store, "stream_after_commit",
                                    app="order", runs=ROUTED)
    try:
        first = len(_rows(env, "acme", "clicks")), len(_rows(env, "acme", "orders"))
        assert sum(first) > 0 and first != (len(clicks), len(orders))
        fault.unlink()
        done = lambda: (manager.reconcile(),  # noqa: E731
                        len(_rows(env, "acme", "orders")) == len(orders)
                        and len(_rows(env, "acme", "clicks")) == len(clicks))[1]
        assert _wait(done)
    finally:
        manager.shutdown()
    assert _rows(env, "acme", "clicks") == {k: v.upper() for k, v in clicks.items()}
    assert _rows(env, "acme", "orders") == orders
    assert sorted(d.id for d in _broker_call(env, lambda b: b.read_dead_letters("acme", 100))
                  ) == ["r1", "t1", "x1"]
    restarts = [d for d in env.store.decisions("acme") if d["action"] == "restart"]
    assert restarts and restarts[0]["app"] == ROUTED and "code 137" in restarts[0]["reason"]


def test_turning_routing_on_drains_the_app_instances_before_the_routed_ones_start(
        make_stream_env):
    routed = routed_tenant("acme")
    routed["apps"] = [{k: v for k, v in a.items() if k != "entrypoint"}  # rows as sent
                      for a in routed["apps"] if a.get("kind") == "stream"]
    plain = {**routed, "stream": {"max_message_bytes": "2KB"},
             "apps": [{k: v for k, v in a.items() if k != "message_types"}
                      for a in routed["apps"]]}
    env = make_stream_env([plain])
    manager = StreamManager(env.platform, env.store, grace_secs=10)
    reloader = Reloader(env.platform)
    reloader.attach(manager)
    env.store.set_desired("acme", "click", 1)
    env.store.set_desired("acme", "order", 1)
    try:
        manager.reconcile()
        olds = [i for app in ("click", "order") for i in manager.apps[("acme", app)].instances]
        assert len(olds) == 2
        assert _wait(lambda: all(heartbeat_path(env.config.home, i.id).exists() for i in olds))

        path = env.config.tenants_dir / "acme.yaml"
        path.write_text(yaml.safe_dump(routed))
        assert reloader.check(env.store).changed == ["acme"]  # type: ignore[union-attr]
        manager.reconcile()
        # the app instances drain first: no routed instance beside them meanwhile
        while any(i.proc.poll() is None for i in olds):
            assert manager.apps[("acme", ROUTED)].instances == []
            time.sleep(0.05)
            manager.reconcile()
        assert [i.proc.returncode for i in olds] == [0, 0]
        assert _wait(lambda: (manager.reconcile(),
                              len(manager.apps[("acme", ROUTED)].instances) == 1)[1])
        msgs, clicks, orders = messages()
        _broker_call(env, lambda b: b.publish("acme", msgs))
        assert _wait(lambda: (manager.reconcile(),
                              len(_rows(env, "acme", "clicks")) == len(clicks)
                              and len(_rows(env, "acme", "orders")) == len(orders))[1])
    finally:
        manager.shutdown()
    assert _rows(env, "acme", "clicks") == clicks  # no entrypoint: as sent
    assert _rows(env, "acme", "orders") == orders


def test_a_routed_app_into_a_delta_sink_buffers_its_part_and_the_others_load_meanwhile(
        make_stream_env, tmp_path):
    from deltalake import DeltaTable

    tenant = routed_tenant("acme")
    tenant["apps"] = [{k: v for k, v in a.items() if k != "entrypoint"}
                      for a in tenant["apps"] if a.get("kind") == "stream"]
    tenant["tables"][0] = {**table("clicks", ("page", "text"), sinks=("lake",)),
                           "primary_key": []}  # unkeyed: a duplicate would show
    tenant["lake"] = {"max_wait_secs": 1}
    env = make_stream_env([tenant], sinks={"lake": {"kind": "delta",
                                                    "path": str(tmp_path / "lake")}})
    msgs, clicks, orders = messages()
    _broker_call(env, lambda b: b.ensure_tenant("acme"))
    _broker_call(env, lambda b: b.publish("acme", msgs))
    lake = lambda: (DeltaTable(str(tmp_path / "lake" / "acme" / "clicks"))  # noqa: E731
                    .to_pyarrow_table().to_pylist())
    manager = StreamManager(env.platform, env.store, grace_secs=10)
    env.store.set_desired("acme", "click", 1)
    try:
        manager.reconcile()
        assert _wait(lambda: len(_rows(env, "acme", "orders")) == len(orders))
        # the buffer's age bound commits it while the instance runs
        assert _wait(lambda: (tmp_path / "lake" / "acme" / "clicks").exists()
                     and len(lake()) == len(clicks))
    finally:
        manager.shutdown()
    assert sorted((r["id"], r["page"]) for r in lake()) == sorted(clicks.items())
    assert _rows(env, "acme", "orders") == orders
    assert sorted(d.id for d in _broker_call(env, lambda b: b.read_dead_letters("acme", 100))
                  ) == ["r1", "t1", "x1"]
