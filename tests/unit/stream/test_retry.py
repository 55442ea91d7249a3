"""Back-off with jitter and the one-line-per-outage log."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from simbdp.observe.logs import get_logger
from simbdp.stream.retry import Backoff, Outage


def test_backoff_grows_with_jitter_is_capped_and_resets():
    b = Backoff(base_secs=0.1, cap_secs=2.0)
    delays = [b.next_delay() for _ in range(12)]
    assert 0.1 <= delays[0] <= 0.2
    assert max(delays) <= 2.0 and delays[-1] >= 1.0  # capped, jitter at most halves it
    assert len(set(delays)) > 1
    b.reset()
    assert b.next_delay() <= 0.2


def test_backoff_wait_ends_early_on_stop():
    async def go() -> float:
        stop = asyncio.Event()
        b = Backoff(base_secs=5.0, cap_secs=5.0)
        asyncio.get_running_loop().call_later(0.1, stop.set)
        t = time.monotonic()
        await b.wait(stop)
        return time.monotonic() - t
    assert asyncio.run(go()) < 1.0


def test_outage_logs_once_when_lost_and_once_when_back():
    with capture_logs() as logs:
        o = Outage(get_logger("t"))
        for _ in range(5):
            o.lost("connection refused")
        time.sleep(0.05)
        secs = o.back()
        assert o.back() is None  # no outage now
    assert [e["event"] for e in logs] == ["broker_lost", "broker_reconnected"]
    assert secs is not None and secs >= 0.05
    assert logs[1]["outage_secs"] >= 0.05 and logs[1]["reason"] == "connection refused"
    assert o.last is not None and o.last["outage_secs"] == secs
