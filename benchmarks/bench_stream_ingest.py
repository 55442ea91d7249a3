"""Stream ingestion benchmark: one simbdp instance beside the bare broker clients, one run.

    python -m benchmarks.bench_stream_ingest [--messages 50000] [--rabbit URL] [--nats URL]
        [--pg DSN]

- sustained messages/s of one instance (500-byte JSON messages, pre-published backlog) into
  DuckDB and PostgreSQL, from the embedded queue, RabbitMQ and NATS JetStream, beside a bare
  aio-pika consume-and-ack loop and a bare nats-py pull-and-ack loop on the same queue;
- latency publish -> commit (p50, p99) at a steady publish rate;
- seed 000's shape: 100,000 events of 100 key-value pairs; time and sink transactions;
- the monitor's reaction to a burst: time to the scale-up decision, and back down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import nats
from nats.js.api import ConsumerConfig

from simbdp.coredms.base import open_sink
from simbdp.profiles import Platform
from simbdp.stream.brokers import OutMessage, open_broker
from simbdp.stream.consumer import StreamInstance
from simbdp.testing import make_platform

BODY_PAD = "x" * 420


def _tenant(tenant: str, sink: str, columns: list[dict[str, Any]], **app: Any) -> dict:
    return {"tenant_id": tenant,
            "tables": [{"name": "events", "sinks": [sink], "columns": columns}],
            "apps": [{"name": "ev", "kind": "stream", "tables": ["events"],
                      "batch_max_rows": 5000, "batch_max_wait_ms": 50, **app}]}


EVENT_COLUMNS = [{"name": "id", "type": "text"}, {"name": "n", "type": "int"},
                 {"name": "pad", "type": "text"}]


def _messages(n: int, start: float | None = None) -> list[OutMessage]:
    now = time.time() if start is None else start
    return [OutMessage(f"m{i}", json.dumps({"id": f"m{i}", "n": i, "pad": BODY_PAD}).encode(),
                       now) for i in range(n)]


def _platform(home: Path, broker: dict, sink: dict | None, columns: list[dict] = EVENT_COLUMNS,
              **app: Any) -> tuple[Platform, str]:
    tenant = f"b{uuid.uuid4().hex[:8]}"
    sinks = {"bench": sink} if sink else {}
    p = make_platform(home, [_tenant(tenant, "bench" if sink else "default", columns, **app)],
                      broker=broker, sinks=sinks, report_interval_secs=1.0)
    return p, tenant


async def _publish(platform: Platform, tenant: str, msgs: list[OutMessage],
                   prefix: str | None = None) -> None:
    """Publish under ``prefix`` (default: a namespace of the tenant's own, as the instances
    this benchmark runs itself use; "simbdp" for those the manager starts)."""
    b = open_broker(platform.config.broker, prefix=prefix or tenant)
    await b.connect()
    await b.ensure_tenant(tenant)
    for i in range(0, len(msgs), 2000):
        await b.publish(tenant, msgs[i:i + 2000])
    await b.close()


async def _run_instance(platform: Platform, tenant: str, until_rows: int,
                        timeout: float = 300) -> tuple[float, list[dict]]:
    """Run one instance until ``until_rows`` are in the sink; (seconds, reports)."""
    broker = open_broker(platform.config.broker, prefix=tenant)
    inst = StreamInstance(platform, tenant, "ev", "bench-1", broker)
    stop = asyncio.Event()
    sink = open_sink(platform.config.sinks[platform.tenant(tenant).tables[0].sinks[0]])
    profile = platform.tenant(tenant)
    sink.ensure_tables(profile)
    t0 = time.perf_counter()
    task = asyncio.create_task(inst.run(stop))
    while time.perf_counter() - t0 < timeout:
        await asyncio.sleep(0.2)
        if await asyncio.to_thread(sink.count_rows, profile, "events") >= until_rows:
            break
    secs = time.perf_counter() - t0
    stop.set()
    await task
    sink.close()
    probe = open_broker(platform.config.broker, prefix=tenant)
    reports = await probe.fetch_reports(10_000, 0.5)
    await probe.purge(tenant)
    await probe.close()
    return secs, reports


async def bare_rabbit(url: str, n: int) -> float:
    q_name = f"bare-{uuid.uuid4().hex[:6]}"
    conn = await aio_pika.connect_robust(url)
    ch = await conn.channel(publisher_confirms=True)
    q = await ch.declare_queue(q_name, durable=True, arguments={"x-queue-type": "quorum"})
    msgs = _messages(n)
    for i in range(0, n, 2000):
        await asyncio.gather(*(ch.default_exchange.publish(
            aio_pika.Message(m.body, message_id=m.id), routing_key=q_name)
            for m in msgs[i:i + 2000]))
    await ch.set_qos(prefetch_count=2000)
    done = asyncio.Event()
    count = 0

    async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        await msg.ack()
        count += 1
        if count >= n:
            done.set()

    t0 = time.perf_counter()
    await q.consume(on)
    await done.wait()
    secs = time.perf_counter() - t0
    await q.delete(if_unused=False, if_empty=False)
    await conn.close()
    return n / secs


async def bare_nats(url: str, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = f"BARE{uuid.uuid4().hex[:6]}".upper()
    await js.add_stream(name=name, subjects=[f"{name}.in"])
    msgs = _messages(n)
    for i in range(0, n, 2000):
        await asyncio.gather(*(js.publish(f"{name}.in", m.body) for m in msgs[i:i + 2000]))
    sub = await js.pull_subscribe(f"{name}.in", durable="bare", stream=name,
                                  config=ConsumerConfig(max_ack_pending=20_000))
    got = 0
    t0 = time.perf_counter()
    while got < n:
        batch = await sub.fetch(min(5000, n - got), timeout=0.25)
        await asyncio.gather(*(m.ack() for m in batch))
        got += len(batch)
    secs = time.perf_counter() - t0
    await js.delete_stream(name)
    await nc.close()
    return n / secs


async def throughput(home: Path, broker: dict, sink: dict | None, n: int) -> float:
    platform, tenant = _platform(home, broker, sink)
    await _publish(platform, tenant, _messages(n))
    secs, _ = await _run_instance(platform, tenant, n)
    return n / secs


async def latency(home: Path, broker: dict, rate: int, secs: float) -> tuple[float, float]:
    """Median window mean and worst window p99 publish -> commit at a steady publish rate.

    The instance is started first and commits one warm-up message before the steady
    publishing begins; report windows that started before then (the instance's start-up,
    the warm-up) are left out.
    """
    platform, tenant = _platform(home, broker, None, batch_max_wait_ms=20)
    total = int(rate * secs)
    inst_task = asyncio.create_task(_run_instance(platform, tenant, total + 1,
                                                  timeout=secs + 120))
    b = open_broker(platform.config.broker, prefix=tenant)
    await b.connect()
    await b.ensure_tenant(tenant)
    await b.publish(tenant, [OutMessage("warm-up", json.dumps(
        {"id": "warm-up", "n": -1, "pad": ""}).encode(), time.time())])
    sink = open_sink(platform.config.sinks["default"])
    while await asyncio.to_thread(sink.count_rows, platform.tenant(tenant), "events") < 1:
        await asyncio.sleep(0.05)
    sink.close()
    steady = time.time()
    step = max(1, rate // 50)  # 50 publishes a second
    t0 = time.perf_counter()
    for i in range(0, total, step):
        chunk = [OutMessage(f"l{j}", json.dumps({"id": f"l{j}", "n": j, "pad": BODY_PAD})
                            .encode(), time.time()) for j in range(i, min(i + step, total))]
        await b.publish(tenant, chunk)
        ahead = (i + step) / rate - (time.perf_counter() - t0)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await b.close()
    _, reports = await inst_task
    reports = [r for r in reports if r["window_start"] >= steady and r["latency_p99_ms"]]
    p99 = max(r["latency_p99_ms"] for r in reports)
    return statistics.median(r["latency_mean_ms"] for r in reports), p99


async def seed000(home: Path, broker: dict, events: int) -> tuple[float, int]:
    cols = [{"name": "id", "type": "text"}] + [{"name": f"k{i}", "type": "text"}
                                               for i in range(99)]
    platform, tenant = _platform(home, broker, None, columns=cols, batch_max_rows=10_000,
                                 batch_max_bytes="64MB")
    vals = {f"k{i}": f"value-{i}" for i in range(99)}
    now = time.time()
    msgs = [OutMessage(f"e{i}", json.dumps({"id": f"e{i}", **vals}).encode(), now)
            for i in range(events)]
    await _publish(platform, tenant, msgs)
    secs, _ = await _run_instance(platform, tenant, events)
    return secs, _ledger_rows(platform, tenant)


def scaling(home: Path, burst: int = 200_000) -> tuple[float, float, float]:
    """A burst on the embedded queue with the manager and the monitor running (reports every
    second, target backlog 3,000): seconds from the start of the burst to the monitor's
    scale-up decision and to the last row committed, and from there to the scale-down
    decision."""
    import threading

    from simbdp.state import StateStore
    from simbdp.stream.manager import StreamManager
    from simbdp.stream.monitor import StreamMonitor

    platform, tenant = _platform(home, {"kind": "embedded"}, None, target_backlog=3000,
                                 min_instances=1, max_instances=3)
    store = StateStore.open(platform.config)
    stop = threading.Event()
    parts = [StreamManager(platform, StateStore.open(platform.config), grace_secs=10),
             StreamMonitor(platform, StateStore.open(platform.config))]
    threads = [threading.Thread(target=p.run, args=(stop,), daemon=True) for p in parts]
    for t in threads:
        t.start()
    store.set_desired(tenant, "ev", 1)
    while not store.stream_reports(tenant):  # the instance runs and reports
        time.sleep(0.1)
    started = time.time()
    asyncio.run(_publish(platform, tenant, _messages(burst), prefix="simbdp"))
    sink = open_sink(platform.config.sinks["default"])

    def first(action: str) -> float | None:
        ds = [d["at"] for d in store.decisions(tenant) if d["action"] == action]
        return min(ds) if ds else None

    up = drained = down = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and down is None:
        up = up or first("scale_up")
        if drained is None and sink.count_rows(platform.tenant(tenant), "events") >= burst:
            drained = time.time()
        down = first("scale_down") if drained else None
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(30)
    sink.close()
    if up is None or drained is None or down is None:
        raise SystemExit(f"scaling: no decision in time (up={up}, drained={drained})")
    return up - started, drained - started, down - drained


def _ledger_rows(platform: Platform, tenant: str) -> int:
    import duckdb

    path = platform.config.sinks["default"].path / f"coredms-{tenant}.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    n = con.execute(f'SELECT count(*) FROM "{tenant}"._simbdp_ledger').fetchone()[0]
    con.close()
    return int(n)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--rabbit", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    n = args.messages
    data = Path(__file__).parent / "data"
    data.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        home = Path(tmp)
        emb = {"kind": "embedded"}
        rmq = {"kind": "rabbitmq", "url": args.rabbit}
        nts = {"kind": "nats", "url": args.nats}
        pg = {"kind": "postgres", "dsn": args.pg}
        print(f"# stream benchmark: {n:,} messages of ~500 bytes, one instance\n")
        print("| path | msg/s | vs bare client |")
        print("| --- | ---: | ---: |")
        bare_r = await bare_rabbit(args.rabbit, n)
        print(f"| bare aio-pika consume+ack (RabbitMQ quorum queue) | {bare_r:,.0f} | - |")
        for name, broker, sink, bare in (
                ("RabbitMQ -> DuckDB", rmq, None, bare_r),
                ("RabbitMQ -> PostgreSQL", rmq, pg, bare_r)):
            r = await throughput(home / uuid.uuid4().hex[:6], broker, sink, n)
            print(f"| simbdp {name} | {r:,.0f} | {r / bare:.0%} |", flush=True)
        bare_n = await bare_nats(args.nats, n)
        print(f"| bare nats-py pull+ack (JetStream) | {bare_n:,.0f} | - |")
        for name, broker, sink in (("NATS -> DuckDB", nts, None), ("NATS -> PostgreSQL", nts, pg)):
            r = await throughput(home / uuid.uuid4().hex[:6], broker, sink, n)
            print(f"| simbdp {name} | {r:,.0f} | {r / bare_n:.0%} |", flush=True)
        r = await throughput(home / uuid.uuid4().hex[:6], emb, None, n)
        print(f"| simbdp embedded queue -> DuckDB | {r:,.0f} | - |", flush=True)
        print("\n| latency publish -> commit | rate msg/s | median of window means ms | "
              "max window p99 ms |")
        print("| --- | ---: | ---: | ---: |")
        for name, broker, rate in (("NATS", nts, 5000), ("embedded", emb, 5000),
                                   ("RabbitMQ", rmq, int(bare_r / 2))):
            p50, p99 = await latency(home / uuid.uuid4().hex[:6], broker, rate, 10)
            print(f"| {name} -> DuckDB | {rate:,} | {p50:.0f} | {p99:.0f} |", flush=True)
        secs, txns = await seed000(home / uuid.uuid4().hex[:6], emb, 100_000)
        print(f"\nseed 000 shape: 100,000 events x 100 key-value pairs via the embedded queue "
              f"into DuckDB: {secs:.1f} s, {txns} sink transactions (ledger rows)")
        up, drain, down = await asyncio.to_thread(scaling, home / uuid.uuid4().hex[:6])
        print(f"\nburst of 200,000 messages on the embedded queue, reports every 1 s: scale-up "
              f"decided {up:.1f} s after the burst began, every row committed at {drain:.1f} s, "
              f"scale-down decided {down:.1f} s after that")


if __name__ == "__main__":
    asyncio.run(main())
