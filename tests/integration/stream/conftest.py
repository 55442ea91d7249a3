from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simbdp.coredms.base import open_sink
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.stream.brokers import open_broker
from simbdp.stream.client import make_messages, publish
from simbdp.stream.consumer import StreamInstance
from simbdp.testing import make_platform, stream_tenant


class StreamEnv:
    def __init__(self, home: Path, tenants: list[dict], **kw: Any):
        kw.setdefault("broker", {"kind": "embedded", "lease_secs": 2})
        self.platform: Platform = make_platform(home, tenants, report_interval_secs=0.5, **kw)
        self.config = self.platform.config
        self.store = StateStore.open(self.config)

    def publish(self, tenant: str, rows: list, **kw: Any) -> None:
        asyncio.run(publish(self.platform, tenant, make_messages(rows, **kw)))

    def count(self, tenant: str = "acme", table: str = "events", sink: str = "default") -> int:
        s = open_sink(self.config.sinks[sink])
        try:
            s.ensure_tables(self.platform.tenant(tenant))
            return s.count_rows(self.platform.tenant(tenant), table)
        finally:
            s.close()

    def drain(self, tenant: str = "acme", app: str = "ev", secs: float = 20) -> list[dict]:
        """Run one instance in this process until the queue is empty; return its reports."""
        async def go() -> list[dict]:
            broker = open_broker(self.config.broker)
            stop = asyncio.Event()
            inst = StreamInstance(self.platform, tenant, app, "test-1", broker)
            task = asyncio.create_task(inst.run(stop))
            probe = open_broker(self.config.broker)
            deadline = time.monotonic() + secs
            await asyncio.sleep(0.3)
            while time.monotonic() < deadline and await probe.backlog(tenant) > 0:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            stop.set()
            await task
            reports = await probe.fetch_reports(1000, 0.1)
            await probe.close()
            return reports
        return asyncio.run(go())

    def dead_letters(self, tenant: str = "acme") -> list:
        async def go() -> list:
            b = open_broker(self.config.broker)
            out = await b.read_dead_letters(tenant, 1000)
            await b.close()
            return out
        return asyncio.run(go())


@pytest.fixture
def make_stream_env(tmp_path: Path) -> Callable[..., StreamEnv]:
    def _make(tenants: list[dict] | None = None, **kw: Any) -> StreamEnv:
        return StreamEnv(tmp_path / "home", tenants or [stream_tenant()], **kw)
    return _make
