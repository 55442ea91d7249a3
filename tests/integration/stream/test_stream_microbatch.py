"""What one micro-batch does on the fast path: no id lookup for first deliveries (the unique
key catches a publisher's duplicate), and a tenant's DuckDB file held between micro-batches
but let go now and then, so other writers and readers get their turn."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import simbdp.stream.microbatch as microbatch
from simbdp.stream.brokers import open_broker
from simbdp.stream.instance import StreamInstance


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"e{i}", "n": i, "note": "hello"} for i in range(start, start + n)]


def test_a_publisher_duplicate_in_a_later_micro_batch_loads_once(make_stream_env):
    env = make_stream_env()
    env.publish("acme", rows(100), id_field="id")
    env.drain()
    env.publish("acme", rows(150), id_field="id")  # e0..e99 again (not redeliveries), e100..
    reports = env.drain()
    assert env.count() == 150
    assert env.dead_letters() == []
    assert sum(r["rows_loaded"] for r in reports) == 50
    assert sum(r["messages"] for r in reports) == 150  # a redone batch is counted once


def test_a_reader_gets_the_tenant_file_while_a_backlog_is_drained(make_stream_env,
                                                                   monkeypatch):
    monkeypatch.setattr(microbatch, "HOLD_SECS", 0.2)
    env = make_stream_env()
    total = 6000  # 30 micro-batches of 200: the instance stays busy for a while
    env.publish("acme", rows(total), id_field="id")
    env.count()  # creates the tables
    done = threading.Event()

    def consume() -> None:
        async def go() -> None:
            stop = asyncio.Event()
            inst = StreamInstance(env.platform, "acme", "ev", "t-1",
                                  open_broker(env.config.broker))
            task = asyncio.create_task(inst.run(stop))
            while not done.is_set():
                await asyncio.sleep(0.05)
            stop.set()
            await task
        asyncio.run(go())

    t = threading.Thread(target=consume)
    t.start()
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not seen or seen[-1] < total:
            seen.append(env.count())  # waits for the writer lock while the file is held
            if time.monotonic() > deadline:
                pytest.fail(f"the backlog did not drain: {seen[-5:]}")
    finally:
        done.set()
        t.join(60)
    # the reader got in between micro-batches, not only once the queue was empty
    assert any(0 < n < total for n in seen), seen[:20]
    assert env.count() == total
