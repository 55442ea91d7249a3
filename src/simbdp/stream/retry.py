"""Waiting out outages: broker back-off with jitter and one log line per outage; sink calls
retried a bounded number of times.

Brokers never reconnect behind the caller's back (no robust connection, no client-side
reconnect loop): every failure is a ``BrokerUnavailable`` at once, the caller closes the
broker, waits ``Backoff.wait`` and tries again, for as long as the broker is away. So an
outage is seen, logged and reported in one place, and no await hangs on a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simbdp.errors import SinkUnavailable

__all__ = ["RETRY_ATTEMPTS", "RETRY_BASE_SECS", "Backoff", "Outage", "retry_sink"]

RETRY_BASE_SECS = 0.2
RETRY_ATTEMPTS = 8


@dataclass
class Backoff:
    """Exponential back-off with full jitter, capped; ``reset`` after a success."""

    base_secs: float = 0.2
    cap_secs: float = 5.0  # so a broker that is back is used again within seconds
    attempt: int = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return random.uniform(0.5, 1.0) * min(self.cap_secs,
                                              self.base_secs * 2 ** min(self.attempt, 16))

    async def wait(self, stop: asyncio.Event | threading.Event | None = None) -> None:
        """Sleep the next delay; return early when ``stop`` is set."""
        delay = self.next_delay()
        if isinstance(stop, asyncio.Event):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            return
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0 and not (stop and stop.is_set()):
            await asyncio.sleep(min(left, 0.2))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Outage:
    """One broker outage at a time: ``lost`` logs ``broker_lost`` once when it starts,
    ``back`` logs ``broker_reconnected`` with ``outage_secs`` once when it ends."""

    log: Any
    since: float | None = None
    reason: str = ""
    last: dict[str, float] | None = field(default=None)

    def lost(self, reason: str) -> None:
        if self.since is None:
            self.since, self.reason = time.time(), reason
            self.log.warning("broker_lost", reason=reason)

    def back(self) -> float | None:
        """End the outage, if any; its length in seconds."""
        if self.since is None:
            return None
        now = time.time()
        secs = now - self.since
        self.log.warning("broker_reconnected", outage_secs=round(secs, 3), reason=self.reason)
        self.last = {"outage_start": self.since, "outage_secs": secs}
        self.since = None
        return secs


async def retry_sink(what: str, fn: Callable[[], object], log: Any,
                     beat: Callable[[], None]) -> bool:
    """Call ``fn`` in a thread (the event loop keeps receiving meanwhile) until the sink
    answers: back-off with jitter, base 200 ms, 8 attempts (seed 004). False if it never
    did; exceptions other than SinkUnavailable propagate. ``beat`` is called between
    attempts (the instance's heartbeat)."""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            await asyncio.to_thread(fn)
            return True
        except SinkUnavailable as e:
            if attempt == RETRY_ATTEMPTS:
                log.error("sink_unavailable_giving_up", step=what, reason=str(e))
                return False
            delay = RETRY_BASE_SECS * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            log.warning("sink_retry", step=what, attempt=attempt, delay_secs=delay,
                        reason=str(e))
            await asyncio.sleep(delay)
            beat()
    return False
