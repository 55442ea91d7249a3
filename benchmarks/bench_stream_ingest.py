"""Stream ingestion benchmark: one simbdp instance beside the strongest bare broker clients.

    python -m benchmarks.bench_stream_ingest [--quick] [--json PATH] [--messages 50000]
        [--runs 3] [--only SCENARIO] [--broker rabbitmq|nats] [--rabbit URL] [--nats URL]
        [--pg DSN]

Every scenario runs the bare client and simbdp on the same kind of queue (created by simbdp's
broker code, filled by the same publisher), alternated, ``--runs`` times each; the figures are
medians. The bare clients are the strongest loops we know with the same prefetch as simbdp:

- RabbitMQ: aio-pika, a plain connection, ``prefetch_count`` equal to simbdp's (two micro-
  batches), one ``basic.ack`` with ``multiple=True`` every 500 messages (and at once when the
  queue goes quiet);
- NATS JetStream: nats-py, a durable pull consumer with simbdp's ``max_ack_pending``, fetches
  of one micro-batch (5,000), the acks of a fetch sent in one go with one flush.

Scenarios (500-byte JSON messages, micro-batches of up to 5,000 / 50 ms, DuckDB sink):

- ``drain``: a backlog published first, then consumed; msg/s from the consumer's start to the
  last ack (simbdp acks only after the commit, so that is the last commit);
- ``publish-to-commit``: the consumer is running, a publisher process publishes the messages as
  fast as the broker confirms them; seconds from the first publish to the last commit (what a
  user who publishes a batch waits for), and p50 / p99 latency publish -> commit per message;
- ``steady`` (not with ``--quick``): p50 / p99 latency at a steady publish rate.

Without ``--quick`` also: PostgreSQL sinks, the embedded queue, seed 000's shape and the
monitor's reaction to a burst. ``--json PATH`` writes every figure as a list of
``{"scenario", "what", "engine", "seconds", "runs", "rate", "unit", "vs_bare"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import nats
import uvloop
from nats.js.api import ConsumerConfig

from simbdp.coredms.base import open_sink
from simbdp.errors import BrokerUnavailable
from simbdp.profiles import Platform
from simbdp.stream.brokers import Broker, Delivery, OutMessage, open_broker

try:
    from simbdp.stream.instance import StreamInstance
except ImportError:  # simbdp before the split of stream/consumer.py: for before/after runs
    from simbdp.stream.consumer import StreamInstance  # type: ignore[no-redef]
from simbdp.testing import make_platform

BODY_PAD = "x" * 420
BATCH_ROWS = 5000
BATCH_WAIT_MS = 50
BARE_ACK_EVERY = 500  # the bare RabbitMQ loop's multiple-ack interval
NATS_MAX_ACK_PENDING = 20_000  # as simbdp's durable consumer
WARM_UP_ID = "warm-up"


def _tenant(tenant: str, sink: str, columns: list[dict[str, Any]], **app: Any) -> dict:
    return {"tenant_id": tenant,
            "tables": [{"name": "events", "sinks": [sink], "columns": columns}],
            "apps": [{"name": "ev", "kind": "stream", "tables": ["events"],
                      "batch_max_rows": BATCH_ROWS, "batch_max_wait_ms": BATCH_WAIT_MS,
                      **app}]}


EVENT_COLUMNS = [{"name": "id", "type": "text"}, {"name": "n", "type": "int"},
                 {"name": "pad", "type": "text"}]


def _body(i: int | str) -> bytes:
    return json.dumps({"id": f"m{i}", "n": i if isinstance(i, int) else -1,
                       "pad": BODY_PAD}).encode()


def _messages(n: int, start: int = 0) -> list[OutMessage]:
    now = time.time()
    return [OutMessage(f"m{i}", _body(i), now) for i in range(start, start + n)]


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


# what each consumer reports -------------------------------------------------------------------
@dataclass
class Acks:
    """Ack times of one consumer run: every message acknowledged (after its commit, for
    simbdp) counts once; latency = ack time - the publisher's timestamp."""

    want: int
    latencies_ms: list[float] = field(default_factory=list)
    first_published: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    ids: set[str] = field(default_factory=set)
    first_ask: float | None = None

    def asked(self) -> None:
        if self.first_ask is None:
            self.first_ask = time.time()

    def settled(self, items: list[tuple[str, float]]) -> None:
        now = time.time()
        for mid, published in items:
            if mid == WARM_UP_ID or mid in self.ids:
                continue
            self.ids.add(mid)
            self.latencies_ms.append((now - published) * 1000)
            if self.first_published is None or published < self.first_published:
                self.first_published = published
        if len(self.ids) >= self.want:
            self.done.set()


class _AckProbe:
    """simbdp's broker, with its acks recorded (simbdp acks only after the sink commit)."""

    def __init__(self, inner: Broker, acks: Acks, warm: asyncio.Event):
        self._inner, self._acks, self._warm = inner, acks, warm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def fetch(self, tenant: str, max_messages: int, timeout_secs: float
                    ) -> list[Delivery]:
        self._acks.asked()
        return await self._inner.fetch(tenant, max_messages, timeout_secs)

    async def ack(self, tenant: str, deliveries: list[Delivery], *,
                  whole_batch: bool = False) -> None:
        await self._inner.ack(tenant, deliveries, whole_batch=whole_batch)
        if any(d.id == WARM_UP_ID for d in deliveries):
            self._warm.set()
        self._acks.settled([(d.id, d.published_at) for d in deliveries])


Consumer = Callable[[Platform, str, Acks, asyncio.Event, asyncio.Event], Awaitable[None]]


async def simbdp_consumer(platform: Platform, tenant: str, acks: Acks, warm: asyncio.Event,
                          stop: asyncio.Event) -> None:
    broker = _AckProbe(open_broker(platform.config.broker, prefix=tenant), acks, warm)
    inst = StreamInstance(platform, tenant, "ev", "bench-1", broker)  # type: ignore[arg-type]
    await inst.run(stop)


def _rabbit_published_at(msg: aio_pika.abc.AbstractIncomingMessage) -> float:
    return float((msg.headers or {}).get("x-published-at", time.time()))  # type: ignore[arg-type]


async def bare_rabbit(platform: Platform, tenant: str, acks: Acks, warm: asyncio.Event,
                      stop: asyncio.Event) -> None:
    """aio-pika with simbdp's prefetch, one multiple ack every 500 messages or when idle."""
    url = platform.config.broker.url.get_secret_value()  # type: ignore[union-attr]
    conn = await aio_pika.connect(url)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=2 * BATCH_ROWS)  # simbdp's: room for two micro-batches
    q = await ch.get_queue(f"{tenant}.{tenant}.in", ensure=False)
    pending: list[aio_pika.abc.AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    lock = asyncio.Lock()  # multiple acks must go out in tag order

    async def settle() -> None:
        async with lock:
            if not pending:
                return
            batch = pending[:]
            pending.clear()
            await batch[-1].ack(multiple=True)
        if any(m.message_id == WARM_UP_ID for m in batch):
            warm.set()
        acks.settled([(m.message_id or "", _rabbit_published_at(m)) for m in batch])

    async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        pending.append(msg)
        arrived.set()
        if len(pending) >= BARE_ACK_EVERY:
            await settle()

    acks.asked()
    await q.consume(on)
    while not stop.is_set():
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 0.02)
        if not arrived.is_set() and pending:  # quiet: settle the tail at once
            await settle()
    await conn.close()


async def bare_nats(platform: Platform, tenant: str, acks: Acks, warm: asyncio.Event,
                    stop: asyncio.Event) -> None:
    """nats-py pull consumer: fetches of a micro-batch, the acks of a fetch in one flush."""
    url = platform.config.broker.url.get_secret_value()  # type: ignore[union-attr]
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        f"{tenant}.{tenant}.in", durable="bare", stream=f"{tenant}_{tenant}".upper(),
        config=ConsumerConfig(max_ack_pending=NATS_MAX_ACK_PENDING))
    acks.asked()
    while not stop.is_set():
        try:
            msgs = await sub.fetch(BATCH_ROWS, timeout=0.05)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        for m in msgs:
            await nc.publish(m.reply, b"")  # what Msg.ack() sends, without its bookkeeping
        await nc.flush()
        items = []
        for m in msgs:
            h = m.headers or {}
            mid = h.get("Nats-Msg-Id", "")
            if mid == WARM_UP_ID:
                warm.set()
            items.append((mid, float(h.get("x-published-at", time.time()))))
        acks.settled(items)
    await nc.close()


# one run ---------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    latencies_ms: list[float]


# the publisher process: only the broker client imported (no DuckDB, no pyarrow), so it
# starts in a fraction of the time the benchmark's own imports take
PUBLISHER = """
import asyncio, json, sys, time
import uvloop
from simbdp.profiles.platform import BrokerSettings
from simbdp.stream.brokers import OutMessage, open_broker

kind, url, tenant, start, n, rate, pad = sys.argv[1:8]
start, n, rate = int(start), int(n), float(rate)

async def main():
    b = open_broker(BrokerSettings.model_validate({"kind": kind, "url": url}), prefix=tenant)
    await b.connect()
    step = 2000 if not rate else max(1, int(rate) // 50)  # 50 publishes a second
    t0 = time.perf_counter()
    for i in range(start, start + n, step):
        now = time.time()
        await b.publish(tenant, [OutMessage(f"m{j}", json.dumps(
            {"id": f"m{j}", "n": j, "pad": pad}).encode(), now)
            for j in range(i, min(i + step, start + n))])
        if rate:
            ahead = (i - start + step) / rate - (time.perf_counter() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    await b.close()

uvloop.run(main())
"""


async def _publisher(broker_url: str, kind: str, tenant: str, start: int, n: int,
                     rate: float | None) -> None:
    """Publish in a process of its own, as a tenant's client would."""
    args = [sys.executable, "-c", PUBLISHER, kind, broker_url, tenant, str(start), str(n),
            str(rate or 0), BODY_PAD]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"publisher failed: {args[3:]}\n{out.decode(errors='replace')}")


async def one_run(consumer: Consumer, home: Path, broker: dict, sink: dict | None, n: int,
                  mode: str, rate: float | None = None) -> Run:
    """``mode``: "drain" (backlog first) or "live" (publisher running beside the consumer)."""
    platform, tenant = _platform(home, broker, sink)
    if sink is None:
        s = open_sink(platform.config.sinks["default"])
        s.ensure_tables(platform.tenant(tenant))
        s.close()
    pub = open_broker(platform.config.broker, prefix=tenant)
    await pub.connect()
    await pub.ensure_tenant(tenant)
    await pub.publish(tenant, [OutMessage(WARM_UP_ID, _body(WARM_UP_ID), time.time())])
    if mode == "drain":
        for i in range(0, n, 2000):
            await pub.publish(tenant, _messages(min(2000, n - i), i))
    gc.collect()
    acks, warm, stop = Acks(want=n), asyncio.Event(), asyncio.Event()
    t0 = time.time()
    task = asyncio.create_task(consumer(platform, tenant, acks, warm, stop))
    try:
        if mode == "live":
            await asyncio.wait_for(warm.wait(), 30)  # consumer subscribed and committing
            t0 = time.time()
            await _publisher(broker["url"], broker["kind"], tenant, 0, n, rate)
        await asyncio.wait_for(acks.done.wait(), 600)
        end = time.time()
    finally:
        stop.set()
        await task
    if mode == "live" and acks.first_published is not None:
        t0 = acks.first_published  # the publisher process's start-up left out
    elif mode == "drain" and acks.first_ask is not None:
        t0 = acks.first_ask  # the consumer's start-up (connect, tables) left out
    await pub.purge(tenant)
    await pub.close()
    return Run(end - t0, acks.latencies_ms)


# the suite -------------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


class Results:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, scenario: str, what: str, engine: str, runs: list[float], rate: float,
            unit: str, vs_bare: float | None, seconds: float | None = None) -> None:
        self.rows.append({"scenario": scenario, "what": what, "engine": engine,
                          "seconds": seconds, "runs": [round(r, 4) for r in runs],
                          "rate": round(rate, 2), "unit": unit,
                          "vs_bare": None if vs_bare is None else round(vs_bare, 3)})
        ratio = "" if vs_bare is None else f"{vs_bare:.0%}"
        secs = "" if seconds is None else f"{seconds:.2f}"
        print(f"| {scenario} | {what} | {engine} | {secs} | {rate:,.1f} {unit} | {ratio} |",
              flush=True)


BARE = {"rabbitmq": ("bare aio-pika, prefetch 10,000, ack multiple every 500", bare_rabbit),
        "nats": ("bare nats-py pull, fetch 5,000, acks flushed per fetch", bare_nats)}


async def _retried(run: Callable[[], Awaitable[Run]], attempts: int = 4) -> Run:
    """One run, again from the start if the broker went away meanwhile (other people's tests
    restart the shared brokers of the development machine)."""
    for attempt in range(1, attempts + 1):
        try:
            return await run()
        except (BrokerUnavailable, aiormq.exceptions.AMQPError, nats.errors.Error,
                ConnectionError, TimeoutError) as e:
            if attempt == attempts:
                raise
            print(f"(run lost to a broker outage, again in 5 s: {e})", file=sys.stderr)
            await asyncio.sleep(5)
    raise AssertionError("unreachable")


async def compare(res: Results, root: Path, engine: str, broker: dict, sink: dict | None,
                  sink_name: str, n: int, runs: int, mode: str, rate: float | None = None
                  ) -> None:
    """Bare client and simbdp alternated ``runs`` times; medians."""
    bare_what, bare = BARE[engine]
    got: dict[str, list[Run]] = {"bare": [], "simbdp": []}
    for _ in range(runs):
        for who, fn in (("bare", bare), ("simbdp", simbdp_consumer)):
            if who == "bare" and sink is not None:
                continue  # the bare loop writes nowhere: one bare figure per broker
            got[who].append(await _retried(lambda fn=fn: one_run(  # type: ignore[misc]
                fn, root / uuid.uuid4().hex[:6], broker, sink, n, mode, rate)))
    scenario = (f"drain {n:,} msgs" if mode == "drain" else f"publish-to-commit {n:,} msgs"
                if rate is None else f"steady {rate:,.0f} msg/s")
    base: float | None = None
    for who in ("bare", "simbdp"):
        rs = got[who]
        if not rs:
            continue
        what = bare_what if who == "bare" else f"simbdp -> {sink_name}"
        secs = [r.seconds for r in rs]
        med = statistics.median(secs)
        if rate is None:
            r = n / med
            vs = None if who == "bare" else (None if base is None else r / base)
            if who == "bare":
                base = r
            if mode == "live":  # the user waits for the seconds: less is better
                res.add(scenario, what, engine, secs, med, "s", vs, seconds=med)
            else:
                res.add(scenario, what, engine, secs, r, "msg/s", vs, seconds=med)
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            if mode == "drain" and rate is None:
                break  # a backlog's latency is its age, not the consumer's
            per_run = [_pct(r.latencies_ms, q) for r in rs]
            res.add(scenario, f"{what}: {label} latency", engine, per_run,
                    statistics.median(per_run), "ms", None)
    if mode == "live" and rate is None and base is not None:
        # publish-to-commit: vs_bare as the bare client's seconds over simbdp's
        bare_row = next(r for r in res.rows if r["scenario"] == scenario and r["what"] ==
                        bare_what and r["engine"] == engine)
        for row in res.rows:
            if row["scenario"] == scenario and row["engine"] == engine \
                    and row["what"].startswith("simbdp") and row["unit"] == "s":
                row["vs_bare"] = round(bare_row["seconds"] / row["seconds"], 3)


async def suite(args: argparse.Namespace) -> Results:
    res = Results()
    data = Path(__file__).parent / "data"
    data.mkdir(exist_ok=True)
    n, runs = args.messages, args.runs
    rmq = {"kind": "rabbitmq", "url": args.rabbit}
    nts = {"kind": "nats", "url": args.nats}
    pg = {"kind": "postgres", "dsn": args.pg}
    print(f"# stream benchmark: ~500-byte messages, one instance, {runs} alternated runs, "
          "medians\n")
    print("| scenario | what | broker | seconds | figure | vs bare |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    only = set(args.only or ["drain", "live"] + ([] if args.quick else ["pg", "steady",
                                                                         "extras"]))
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        root = Path(tmp)
        engines = [(e, b) for e, b in (("rabbitmq", rmq), ("nats", nts))
                   if not args.broker or e in args.broker]
        for engine, broker in engines:
            if "drain" in only:
                await compare(res, root, engine, broker, None, "DuckDB", n, runs, "drain")
            if "live" in only:
                await compare(res, root, engine, broker, None, "DuckDB", args.live_messages,
                              runs, "live")
        for engine, broker in engines:
            if "pg" in only:
                await compare(res, root, engine, broker, pg, "PostgreSQL", n, runs, "drain")
            if "steady" in only:  # 10 s at a steady rate, as the latency figures before
                rate = 3000 if engine == "rabbitmq" else 5000  # about half the bare client's
                await compare(res, root, engine, broker, None, "DuckDB", rate * 10, 1, "live",
                              rate=rate)
        if "extras" in only:
            await extras(res, root)
    return res


async def extras(res: Results, root: Path) -> None:
    """The embedded queue, seed 000's shape, the monitor's reaction to a burst."""
    emb = {"kind": "embedded"}
    platform, tenant = _platform(root / "emb", emb, None)
    n = 50_000
    await _publish(platform, tenant, _messages(n))
    secs = await _drain_embedded(platform, tenant, n)
    res.add(f"drain {n:,} msgs", "simbdp -> DuckDB", "embedded", [secs], n / secs, "msg/s",
            None, seconds=secs)
    secs, txns = await seed000(root / "seed000", emb, 100_000)
    res.add("seed 000: 100,000 events x 100 pairs", f"simbdp -> DuckDB ({txns} transactions)",
            "embedded", [secs], secs, "s", None, seconds=secs)
    up, drain, down = await asyncio.to_thread(scaling, root / "scaling")
    for what, v in (("scale_up decided after", up), ("all committed after", drain),
                    ("scale_down decided after the drain", down)):
        res.add("burst of 200,000 msgs, reports every 1 s", what, "embedded", [v], v, "s", None,
                seconds=v)


async def _drain_embedded(platform: Platform, tenant: str, n: int) -> float:
    broker = open_broker(platform.config.broker, prefix=tenant)
    inst = StreamInstance(platform, tenant, "ev", "bench-1", broker)
    stop = asyncio.Event()
    sink = open_sink(platform.config.sinks[platform.tenant(tenant).tables[0].sinks[0]])
    profile = platform.tenant(tenant)
    sink.ensure_tables(profile)
    t0 = time.perf_counter()
    task = asyncio.create_task(inst.run(stop))
    while time.perf_counter() - t0 < 600:
        await asyncio.sleep(0.05)
        if await asyncio.to_thread(sink.count_rows, profile, "events") >= n:
            break
    secs = time.perf_counter() - t0
    stop.set()
    await task
    sink.close()
    return secs


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
    secs = await _drain_embedded(platform, tenant, events)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small message counts, RabbitMQ and NATS into DuckDB only (< 60 s)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", action="append",
                    choices=["drain", "live", "pg", "steady", "extras"],
                    help="run only these scenarios (repeat the option for several)")
    ap.add_argument("--broker", action="append", choices=["rabbitmq", "nats"],
                    help="run only these brokers' scenarios (repeat the option for both)")
    ap.add_argument("--rabbit", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    if args.messages is None:
        args.messages = 10_000 if args.quick else 50_000
    args.live_messages = 3000 if args.quick else 20_000
    t0 = time.perf_counter()
    # the instance process runs on uvloop (stream/consumer.py): so do both sides here
    res = uvloop.run(suite(args))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(res.rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
