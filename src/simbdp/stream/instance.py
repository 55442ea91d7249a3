"""A stream ingest instance: one tenant's clientstreamingestapp consuming the tenant's queue.

Loop: pull a micro-batch (max rows, max bytes or max wait, from the app's profile) and hand it
to :class:`~simbdp.stream.microbatch.MicroBatches` (skip committed ids, decode, app, conform,
one transaction per sink, then ack); the next micro-batch is collected while the previous one
is written, and commits (so acks) stay in order. Every ``report_interval_secs`` a report goes
to the monitor.

A broker outage is waited out (back-off with jitter, however long it lasts) and reported once
it ends (log ``broker_reconnected``, ``broker_outage_secs`` in the next report). The loop
touches a heartbeat file the manager watches; a stop drains the batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import ExitStack
from typing import Any

from simbdp.apps import AppRunner
from simbdp.errors import BrokerUnavailable, SinkUnavailable
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.stream.brokers import Broker, Delivery
from simbdp.stream.heartbeat import Heartbeat, heartbeat_path
from simbdp.stream.microbatch import MicroBatches
from simbdp.stream.retry import Backoff, Outage
from simbdp.stream.window import Window

__all__ = ["StreamInstance"]

FETCH_SLICE_SECS = 0.25  # the longest one fetch waits, so stops and beats are seen


class StreamInstance:
    """One instance of a tenant's stream app, consuming the tenant's queue."""

    def __init__(self, platform: Platform, tenant: str, app: str, instance: str,
                 broker: Broker):
        self.config, self.profile = platform.config, platform.tenant(tenant)
        self.spec = self.profile.app(app)
        self.tenant, self.app, self.instance, self.broker = tenant, app, instance, broker
        self.log = get_logger("simbdp.stream", tenant=tenant, app=app, instance=instance)
        self._outage = Outage(self.log)
        self._backoff = Backoff()
        self._heartbeat = Heartbeat(heartbeat_path(self.config.home, instance))
        self._beat = self._heartbeat.beat
        self._batches = MicroBatches(self.config, self.profile, self.spec, broker, self.log,
                                     self._beat)

    # main loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain the batch in flight and send a last
        report. Raises SinkUnavailable when the sinks cannot even be prepared (the manager
        restarts the instance)."""
        self._beat()
        await self._connect(stop)
        mb = self._batches
        try:
            with ExitStack() as stack:
                if not await mb.ensure_tables():
                    raise SinkUnavailable(
                        f"tenant {self.tenant!r}: sinks {mb.sink_names} unavailable; the "
                        "manager restarts this instance")
                if self.spec.entrypoint:
                    mb.runner = stack.enter_context(
                        AppRunner(self.config.apps_dir(self.tenant), self.spec, self.tenant,
                                  self.config.apps))
                await self._loop(stop)
                mb.runner = None
        finally:
            await asyncio.to_thread(mb.close)
        await self.broker.close()

    async def _loop(self, stop: asyncio.Event) -> None:
        mb = self._batches
        next_report = asyncio.get_running_loop().time() + self.config.report_interval_secs
        # at most two micro-batches in flight: the older one written, the newer one decoded
        # and transformed meanwhile; the next one is collected during both
        flight: list[asyncio.Task[None]] = []
        try:
            while not stop.is_set():
                self._beat()
                try:
                    batch = await self._collect(stop, flight[-1] if flight else None)
                    self._broker_ok()
                    if batch:
                        flight.append(asyncio.create_task(
                            mb.process(batch, after=flight[-1] if flight else None)))
                    while len(flight) > 1 or (flight and flight[0].done()):
                        await self._await_writing(flight.pop(0))
                    if mb.lake is not None and mb.lake.due():  # a lake buffer's age bound
                        flight.append(asyncio.create_task(
                            mb.flush_lake(after=flight[-1] if flight else None)))
                    if not flight and not batch and mb.holding:
                        await asyncio.to_thread(mb.release)  # quiet: others' turn
                    if asyncio.get_running_loop().time() >= next_report:
                        await self._report()
                        next_report = (asyncio.get_running_loop().time()
                                       + self.config.report_interval_secs)
                except BrokerUnavailable as e:
                    await self._settle(flight)  # their deliveries come back if unacked
                    flight = []
                    if mb.lake is not None:
                        mb.lake.drop()  # unacked: they come back
                    await asyncio.to_thread(mb.release)  # no commits while the broker is away
                    self._outage.lost(str(e))
                    await self.broker.close()
                    await self._connect(stop)
        finally:
            await self._settle(flight)  # a stop drains the batches in flight
            if stop.is_set() and self._outage.since is None:  # and commits a lake buffer
                await self._settle([asyncio.create_task(mb.flush_lake(force=True))])
        if self._outage.since is None:  # with the broker away, a stop does not wait
            with contextlib.suppress(BrokerUnavailable, TimeoutError):
                await asyncio.wait_for(self._report(), 3)

    async def _connect(self, stop: asyncio.Event) -> None:
        """Connect and declare the tenant's queues, waiting out an outage (or a stop)."""
        while not stop.is_set():
            self._beat()
            try:
                await self.broker.connect()
                await self.broker.ensure_tenant(self.tenant)
                return
            except BrokerUnavailable as e:
                self._outage.lost(str(e))
                await self.broker.close()
                await self._backoff.wait(stop)

    def _broker_ok(self) -> None:
        if self._outage.since is not None:
            self._outage.back()
        self._backoff.reset()

    async def _await_writing(self, writing: asyncio.Task[None]) -> None:
        while not writing.done():  # the batch is worked on in threads: still alive
            await asyncio.wait({writing}, timeout=1.0)
            self._beat()
        writing.result()

    async def _settle(self, flight: list[asyncio.Task[None]]) -> None:
        """The batches in flight written, and the last commit's acks sent (or lost)."""
        for task in flight:
            try:
                await self._await_writing(task)
            except BrokerUnavailable as e:
                self._outage.lost(str(e))  # committed rows stay; unacked messages come back
        try:
            await self._batches.acked()
        except BrokerUnavailable as e:
            self._outage.lost(str(e))

    async def _collect(self, stop: asyncio.Event, writing: asyncio.Task[None] | None
                       ) -> list[Delivery]:
        """A micro-batch: up to max rows or bytes, within max wait, and for as long as the
        previous batch is still being written (so batches grow when the sink is slow)."""
        spec = self.spec
        loop = asyncio.get_running_loop()
        batch: list[Delivery] = []
        size = 0
        deadline = loop.time() + spec.batch_max_wait_ms / 1000
        while len(batch) < spec.batch_max_rows and size < spec.batch_max_bytes:
            left = deadline - loop.time()
            if writing is not None and not writing.done():
                left = max(left, 0.02)
            if left <= 0 or (stop.is_set() and not batch):
                break
            got = await self.broker.fetch(self.tenant, spec.batch_max_rows - len(batch),
                                          min(left, FETCH_SLICE_SECS))
            batch.extend(got)
            size += sum(len(d.body) for d in got)
        return batch

    async def _report(self) -> None:
        mb = self._batches
        w, mb.window = mb.window, Window()
        report: dict[str, Any] = {
            "tenant": self.tenant, "app": self.app, "instance": self.instance, **w.figures(),
            "backlog": await self.broker.backlog(self.tenant),
            "sandbox": None if mb.runner is None else
            "bwrap" if mb.runner.confined else "unconfined",
        }
        last = self._outage.last
        if last is not None:
            report["broker_outage_start"] = last["outage_start"]
            report["broker_outage_secs"] = last["outage_secs"]
        await self.broker.publish_report(report)
        self._outage.last = None  # reported once
