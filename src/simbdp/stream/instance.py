"""A stream ingest instance: one tenant's clientstreamingestapp consuming the tenant's queue.

Loop: pull a micro-batch (max rows, max bytes or max wait, from the app's profile) and hand it
to :class:`~simbdp.stream.microbatch.MicroBatches` (skip committed ids, decode, app, conform,
one transaction per sink, then ack); the next micro-batch is collected while the previous one
is written, and commits (so acks) stay in order. Every ``report_interval_secs`` a report goes
to the monitor.

A broker outage is waited out (back-off with jitter, however long it lasts) and reported once
it ends (log ``broker_reconnected``, ``broker_outage_secs`` in the next report). The loop
touches a heartbeat file the manager watches; a stop drains the batch in flight.

An instance of a tenant whose profile routes by message type (``stream.route_by``) serves all
its stream apps: its micro-batches go through :class:`~simbdp.stream.route.Router`, and it
reports each app's figures under the app's name (``stream/route.py``).
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
from simbdp.stream.route import ROUTED, Router, batch_limits
from simbdp.stream.window import Window

__all__ = ["StreamInstance"]

FETCH_SLICE_SECS = 0.25  # the longest one fetch waits, so stops and beats are seen


class StreamInstance:
    """One instance of a tenant's stream app, consuming the tenant's queue; of a routed
    tenant (``app`` is then ``ROUTED``), of all its stream apps."""

    def __init__(self, platform: Platform, tenant: str, app: str, instance: str,
                 broker: Broker):
        self.config, self.profile = platform.config, platform.tenant(tenant)
        if self.profile.routed:
            app = ROUTED
        self.tenant, self.app, self.instance, self.broker = tenant, app, instance, broker
        self.log = get_logger("simbdp.stream", tenant=tenant, app=app, instance=instance)
        self._outage = Outage(self.log)
        self._backoff = Backoff()
        self._heartbeat = Heartbeat(heartbeat_path(self.config.home, instance))
        self._beat = self._heartbeat.beat
        self._batches: MicroBatches | Router
        if self.profile.routed:
            self._batches = Router(self.config, self.profile, broker, self.log, self._beat)
            self._apps = dict(self._batches.apps)
            #: most rows, most bytes, longest wait of a micro-batch
            self._limits = batch_limits(self.profile)
        else:
            spec = self.profile.app(app)
            self._batches = MicroBatches(self.config, self.profile, spec, broker, self.log,
                                         self._beat)
            self._apps = {app: self._batches}
            self._limits = (spec.batch_max_rows, int(spec.batch_max_bytes),
                            spec.batch_max_wait_ms)

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
                for app in self._apps.values():
                    if app.spec.entrypoint:
                        app.runner = stack.enter_context(
                            AppRunner(self.config.apps_dir(self.tenant), app.spec,
                                      self.tenant, self.config.apps))
                await self._loop(stop)
                for app in self._apps.values():
                    app.runner = None
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
        max_rows, max_bytes, max_wait_ms = self._limits
        loop = asyncio.get_running_loop()
        batch: list[Delivery] = []
        size = 0
        deadline = loop.time() + max_wait_ms / 1000
        while len(batch) < max_rows and size < max_bytes:
            left = deadline - loop.time()
            if writing is not None and not writing.done():
                left = max(left, 0.02)
            if left <= 0 or (stop.is_set() and not batch):
                break
            got = await self.broker.fetch(self.tenant, max_rows - len(batch),
                                          min(left, FETCH_SLICE_SECS))
            batch.extend(got)
            size += sum(len(d.body) for d in got)
        return batch

    async def _report(self) -> None:
        """One report per app (a routed tenant's instance: one for each of its apps, with
        the tenant queue's backlog, and one as ``ROUTED`` when messages were dead-lettered
        for want of an app)."""
        backlog = await self.broker.backlog(self.tenant)
        last = self._outage.last
        parts: list[tuple[str, MicroBatches | Router, AppRunner | None]] = [
            (name, mb, mb.runner) for name, mb in self._apps.items()]
        if isinstance(self._batches, Router) and self._batches.window.messages:
            parts.append((ROUTED, self._batches, None))
        for name, holder, runner in parts:
            w, holder.window = holder.window, Window()
            report: dict[str, Any] = {
                "tenant": self.tenant, "app": name, "instance": self.instance, **w.figures(),
                "backlog": backlog, "sandbox": None if runner is None else
                "bwrap" if runner.confined else "unconfined",
            }
            if last is not None:
                report["broker_outage_start"] = last["outage_start"]
                report["broker_outage_secs"] = last["outage_secs"]
            await self.broker.publish_report(report)
        self._outage.last = None  # reported once
