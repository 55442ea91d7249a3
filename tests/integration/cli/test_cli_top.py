"""``simbdp top`` in a pseudo-terminal: a terminal emulator (pyte) reads the screen, which shows
the records' figures and follows them every refresh."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simbdp.api.app import serve_api
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.state.store import today
from simbdp.testing import free_port, make_platform, missing, stream_tenant, tenant_profile

SIMBDP = str(Path(sys.executable).parent / "simbdp")


class Terminal:
    """``simbdp`` run in a pseudo-terminal of ``cols`` x ``rows``, its output fed to pyte."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 cols: int = 150, rows: int = 40):
        try:
            import pexpect
            import pyte
        except ImportError:
            missing("pexpect and pyte are not installed (pip install -e '.[test]')")
        self.pexpect = pexpect
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(SIMBDP, args, dimensions=(rows, cols),
                                   env={**os.environ, "TERM": "xterm-256color", **(env or {})})

    def _pump(self) -> None:
        while True:
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.1))
            except (self.pexpect.TIMEOUT, self.pexpect.EOF):
                return

    def lines(self) -> list[str]:
        self._pump()
        return [line.rstrip() for line in self.screen.display]

    def wait(self, ok: Callable[[list[str]], bool], secs: float = 30) -> list[str]:
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            lines = self.lines()
            if ok(lines):
                return lines
        raise AssertionError("the screen never showed it:\n" + "\n".join(self.lines()))

    def row(self, tenant: str) -> dict[str, str] | None:
        """The tenant's row, by column header."""
        lines = self.lines()
        head = next((ln for ln in lines if "tenant" in ln and "rows/s" in ln), None)
        mine = next((ln for ln in lines if ln.startswith(("│", "|"))
                     and ln.strip("│| ").split()[0:1] == [tenant]), None)
        if head is None or mine is None:
            return None
        names = [c.strip() for c in head.strip("┃|").split("┃")]
        cells = [c.strip() for c in mine.strip("│|").split("│")]
        return dict(zip(names, cells, strict=True))

    def wait_row(self, tenant: str, want: dict[str, str], secs: float = 30) -> dict[str, str]:
        def ok(_: list[str]) -> bool:
            row = self.row(tenant)
            return row is not None and all(row.get(k) == v for k, v in want.items())
        self.wait(ok, secs)
        row = self.row(tenant)
        assert row is not None
        return row

    def stop(self) -> int:
        """Ctrl-C; the exit status."""
        self.child.sendintr()
        self.child.expect(self.pexpect.EOF, timeout=20)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Any]:
    acme = stream_tenant("acme")
    acme["batch"] = tenant_profile("acme", batch={"max_files_per_day": 10})["batch"]
    beta = {**tenant_profile("beta"), "enabled": False}
    platform = make_platform(tmp_path / "home", [acme, beta], report_interval_secs=5)
    store = StateStore.open(platform.config)
    yield platform, store
    store.close()


def _report(store: StateStore, tenant: str, instance: str, backlog: int, rows: int) -> None:
    now = time.time()
    store.add_stream_report({"tenant": tenant, "app": "ev", "instance": instance,
                             "window_start": now - 1, "window_end": now, "messages": rows,
                             "bytes": rows * 50, "rows_loaded": rows, "rows_rejected": 0,
                             "latency_mean_ms": 12.0, "latency_p99_ms": 40.0,
                             "backlog": backlog})


def test_top_reads_a_home_and_follows_the_records(home):
    platform, store = home
    for rows in (120, 80):
        store.add_record("acme", "batch", f"c{rows}.csv", "processed", rows_loaded=rows,
                         bytes=1000)
    store.add_record("acme", "batch", "notes.xml", "rejected", reason="file type")
    assert store.reserve_files("acme", today(), 2, 2000, 10, 10**12)
    store.set_desired("acme", "ev", 2)
    _report(store, "acme", "acme-ev-1", backlog=7, rows=30)
    term = Terminal(["top", "--home", str(platform.config.home), "--interval", "0.3"])
    row = term.wait_row("acme", {"rows loaded": "230"})
    assert row == {**row, "state": "ok", "files ok": "2", "files rej": "1", "failed": "0",
                   "messages": "30", "backlog": "7", "instances": "1/2", "quota": "20.0%"}
    assert term.row("beta") == {**(term.row("beta") or {}), "state": "disabled",
                                "rows loaded": "0"}
    assert any("beta: enabled: false in its profile" in ln for ln in term.lines())

    # it follows the records: a new file, a failure, instances crashing in a loop
    store.add_record("acme", "batch", "c50.csv", "processed", rows_loaded=50, bytes=500)
    store.add_record("acme", "batch", "bad.csv", "failed", reason="the app failed")
    for i in range(3):
        store.add_decision("acme", "ev", "restart", f"instance acme-ev-{i} exited with code "
                           "1; restarting in 1.0 s", 2, 1)
    row = term.wait_row("acme", {"rows loaded": "280", "failed": "1"})
    assert row["state"] == "crash loop"
    lines = term.wait(lambda ls: any("acme/ev: crash loop, 3 restarts" in ln for ln in ls))
    assert any("restart: instance acme-ev-2 exited with code 1" in ln for ln in lines)
    assert term.stop() == 0


def test_top_with_no_data_yet(home):
    platform, _ = home
    term = Terminal(["top", "--home", str(platform.config.home), "--interval", "0.3"])
    row = term.wait_row("acme", {"rows loaded": "0"})
    assert row["state"] == "ok" and row["instances"] == "0/0" and row["quota"] == "0.0%"
    term.wait(lambda ls: any("no records in this window yet" in ln for ln in ls))
    assert term.stop() == 0



def test_top_reads_a_running_serve_with_the_tenants_key(home, tmp_path):
    _, store = home
    port = free_port()
    acme = stream_tenant("acme")
    platform = make_platform(tmp_path / "home", [acme, tenant_profile("beta")],
                             api={"port": port})
    key = create_key(store, "acme")
    create_key(store, OPERATOR)
    store.add_record("acme", "batch", "c.csv", "processed", rows_loaded=75, bytes=100)
    store.add_record("beta", "batch", "secret.csv", "processed", rows_loaded=9, bytes=100)
    stop = threading.Event()
    server = threading.Thread(target=serve_api, args=(platform, stop), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        term = Terminal(["top", "--server", url, "--interval", "0.3"],
                        env={"SIMBDP_KEY": key})
        assert term.wait_row("acme", {"rows loaded": "75"})["files ok"] == "1"
        assert term.row("beta") is None  # a tenant's key: its own row only
        assert any(url in ln for ln in term.lines())
        store.add_record("acme", "batch", "d.csv", "processed", rows_loaded=5, bytes=100)
        term.wait_row("acme", {"rows loaded": "80", "files ok": "2"})
        assert term.stop() == 0

        wrong = Terminal(["top", "--server", url], env={"SIMBDP_KEY": "sbdp_x_y"})
        wrong.child.expect(wrong.pexpect.EOF, timeout=30)
        wrong.child.close()
        assert wrong.child.exitstatus == 2
        assert b"the key was refused" in wrong.child.before
    finally:
        stop.set()
        server.join(30)
