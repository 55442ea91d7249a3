"""A stream ingest instance: one process running one tenant's clientstreamingestapp.

Loop: pull a micro-batch (max rows, max bytes or max wait, from the app's profile) -> drop ids
already committed -> decode to Arrow -> app (isolated process) -> conform -> one transaction per
sink holding the rows and the message ids -> only then ack. Poison messages (bad JSON, too big,
a table the tenant does not own, rows the table refuses, an app failure) go to the tenant's
dead-letter queue with the reason. Every ``report_interval_secs`` a report goes to the monitor.

A broker outage is waited out (back-off with jitter, however long it lasts) and reported once
it ends (log ``broker_reconnected``, ``broker_outage_secs`` in the next report). The loop
touches a heartbeat file (``heartbeat_path``) the manager watches; SIGTERM drains the batch in
flight and ends the process within ``STOP_DEADLINE_SECS`` whatever it is waiting on; the
instance also stops when the manager that started it dies.

Run it as ``python -m simbdp.stream.consumer --home H --tenant T --app A --instance I``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import random
import signal
import statistics
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from simbdp.apps import AppContext, AppRunner
from simbdp.coredms.base import LedgerEntry, Sink, SinkTransaction, open_sink
from simbdp.crypto.messages import MessageDecryptor
from simbdp.errors import (
    AppFailed,
    BrokerUnavailable,
    DuplicateMessages,
    SchemaError,
    SinkUnavailable,
)
from simbdp.observe.logs import configure_logging, get_logger
from simbdp.profiles import Platform, load_platform
from simbdp.quality import QualityStats, conform, dedupe_last, pass_rate_breach, quality_json
from simbdp.stream.brokers import Broker, Delivery, open_broker
from simbdp.stream.decode import MSG_COLUMN, decode_batch
from simbdp.stream.retry import Backoff, Outage

__all__ = ["StreamInstance", "heartbeat_path", "main"]

RETRY_BASE_SECS = 0.2
RETRY_ATTEMPTS = 8
STOP_DEADLINE_SECS = 10.0  # after SIGTERM, the process ends by then whatever it waits on
POISON_REASONS_LOGGED = 3  # per micro-batch: one log line with counts and the first reasons


def heartbeat_path(home: Path, instance: str) -> Path:
    """The file an instance touches while its loop runs; the manager watches its mtime."""
    return home / "run" / "stream" / f"{instance}.alive"


@dataclass
class _Window:
    start: float = field(default_factory=time.time)
    messages: int = 0
    bytes: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    quality: dict[str, QualityStats] = field(default_factory=dict)


class StreamInstance:
    """One instance of a tenant's stream app, consuming the tenant's queue."""

    def __init__(self, platform: Platform, tenant: str, app: str, instance: str,
                 broker: Broker):
        self.config, self.profile = platform.config, platform.tenant(tenant)
        self.spec = self.profile.app(app)
        self.tenant, self.app, self.instance, self.broker = tenant, app, instance, broker
        self.log = get_logger("simbdp.stream", tenant=tenant, app=app, instance=instance)
        self._window = _Window()
        self._sinks: dict[str, Sink] = {}
        self._runner: AppRunner | None = None
        self._open_txn: SinkTransaction | None = None
        self._outage = Outage(self.log)
        self._backoff = Backoff()
        self._beat_file = heartbeat_path(self.config.home, instance)
        self._beat_at = 0.0

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._beat_at >= 1.0:
            self._beat_at = now
            self._beat_file.parent.mkdir(parents=True, exist_ok=True)
            self._beat_file.touch()

    def _sink(self, name: str) -> Sink:
        if name not in self._sinks:
            self._sinks[name] = open_sink(self.config.sinks[name])
        return self._sinks[name]

    # main loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._beat()
        await self._connect(stop)
        with ExitStack() as stack:
            names = {s for t in self.spec.tables for s in self.profile.table(t).sinks}
            if not await self._retrying("ensure_tables", lambda: [
                    self._sink(n).ensure_tables(self.profile) for n in sorted(names)]):
                raise SinkUnavailable(f"tenant {self.tenant!r}: sinks {sorted(names)} "
                                      "unavailable; the manager restarts this instance")
            if self.spec.entrypoint:
                self._runner = stack.enter_context(
                    AppRunner(self.config.apps_dir(self.tenant), self.spec, self.tenant,
                              self.config.apps))
            next_report = time.monotonic() + self.config.report_interval_secs
            # the next micro-batch is collected while the previous one is written; commits
            # (and so acks) stay in order, one batch at a time
            writing: asyncio.Task[None] | None = None
            try:
                while not stop.is_set():
                    self._beat()
                    try:
                        batch = await self._collect(stop, writing)
                        self._broker_ok()
                        if writing is not None:
                            await self._await_writing(writing)
                            writing = None
                        if batch:
                            writing = asyncio.create_task(self._process(batch))
                        if time.monotonic() >= next_report:
                            await self._report()
                            next_report = time.monotonic() + self.config.report_interval_secs
                    except BrokerUnavailable as e:
                        await self._settle(writing)  # its deliveries come back if unacked
                        writing = None
                        self._outage.lost(str(e))
                        await self.broker.close()
                        await self._connect(stop)
            finally:
                await self._settle(writing)  # a stop drains the batch in flight
            if self._outage.since is None:  # with the broker away, a stop does not wait
                with contextlib.suppress(BrokerUnavailable, TimeoutError):
                    await asyncio.wait_for(self._report(), 3)
        for s in self._sinks.values():
            s.close()
        await self.broker.close()

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

    async def _settle(self, writing: asyncio.Task[None] | None) -> None:
        if writing is None:
            return
        try:
            await self._await_writing(writing)
        except BrokerUnavailable as e:
            self._outage.lost(str(e))  # committed rows stay; unacked messages come back

    async def _collect(self, stop: asyncio.Event, writing: asyncio.Task[None] | None
                       ) -> list[Delivery]:
        """A micro-batch: up to max rows or bytes, within max wait, and for as long as the
        previous batch is still being written (so batches grow when the sink is slow)."""
        spec = self.spec
        batch: list[Delivery] = []
        size = 0
        deadline = time.monotonic() + spec.batch_max_wait_ms / 1000
        while len(batch) < spec.batch_max_rows and size < spec.batch_max_bytes:
            left = deadline - time.monotonic()
            if writing is not None and not writing.done():
                left = max(left, 0.02)
            if left <= 0 or (stop.is_set() and not batch):
                break
            got = await self.broker.fetch(self.tenant, spec.batch_max_rows - len(batch),
                                          min(left, 0.25))
            batch.extend(got)
            size += sum(len(d.body) for d in got)
        return batch

    # one micro-batch -----------------------------------------------------------------------
    async def _retrying(self, what: str, fn: Any) -> bool:
        """Call ``fn`` until the sink answers: back-off with jitter, base 200 ms, 8 attempts
        (seed 004). False if it never did."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                await asyncio.to_thread(fn)  # the event loop keeps receiving meanwhile
                return True
            except SinkUnavailable as e:
                if attempt == RETRY_ATTEMPTS:
                    self.log.error("sink_unavailable_giving_up", step=what, reason=str(e))
                    return False
                delay = RETRY_BASE_SECS * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                self.log.warning("sink_retry", step=what, attempt=attempt, delay_secs=delay,
                                 reason=str(e))
                await asyncio.sleep(delay)
                self._beat()
        return False

    async def _process(self, batch: list[Delivery]) -> None:
        sink_names = sorted({s for t in self.spec.tables for s in self.profile.table(t).sinks})
        ids = pa.array([d.id for d in batch], pa.string())
        seen: set[str] = set()

        def lookup() -> None:
            if len(sink_names) > 1:
                for name in sink_names:
                    seen.update(self._sink(name).seen_message_ids(self.profile, ids).to_pylist())
                return
            # one sink: look up in the transaction that will write the batch, so a DuckDB
            # tenant file is opened once per micro-batch, not twice
            txn = self._sink(sink_names[0]).begin(self.profile)
            try:
                seen.update(txn.seen_message_ids(ids).to_pylist())
            except BaseException:
                txn.rollback()
                raise
            self._open_txn = txn

        try:
            if not await self._retrying("lookup", lookup):
                await self.broker.nack(self.tenant, batch)  # redelivered later, nothing lost
                return
            await self._sort_out(batch, seen)
        finally:
            if self._open_txn is not None:  # nothing was written with it
                self._open_txn.rollback()
                self._open_txn = None

    async def _sort_out(self, batch: list[Delivery], seen: set[str]) -> None:
        unique: dict[str, Delivery] = {}
        repeats: list[Delivery] = []
        for d in batch:
            if d.id in seen or d.id in unique:
                repeats.append(d)  # committed before, or twice in this batch
            else:
                unique[d.id] = d
        if repeats:
            await self.broker.ack(self.tenant, repeats)
            self.log.info("duplicates_skipped", count=len(repeats))
        if unique:
            await self._ingest(list(unique.values()))

    async def _ingest(self, batch: list[Delivery]) -> None:
        owned = set(self.spec.tables)
        poison: list[tuple[Delivery, str]] = []
        routed = []
        for d in batch:
            table = d.headers.get("table")
            if table is not None and table not in owned:
                poison.append((d, f"message {d.id!r} is for table {table!r}, which tenant "
                                  f"{self.tenant!r} does not own (app tables: {sorted(owned)})"))
            else:
                routed.append(d)
        decoded = decode_batch(routed, int(self.profile.stream.max_message_bytes),
                               MessageDecryptor(self.config, self.profile))
        poison.extend(decoded.poison)
        good = decoded.good
        outputs, rejected_msgs = await asyncio.to_thread(self._transform, decoded.rows, good)
        poison.extend(rejected_msgs)
        bad_ids = {d.id for d, _ in poison}
        keep = [d for d in good if d.id not in bad_ids]
        for d, reason in poison:
            await self.broker.dead_letter(self.tenant, d, reason)
        if poison:  # one line per micro-batch, not one per message
            self.log.warning("dead_lettered", count=len(poison), batch=len(batch),
                             first=[f"{d.id}: {r}" for d, r in poison[:POISON_REASONS_LOGGED]])
        if keep:
            await self._commit(outputs, keep, bad_ids)
        w = self._window
        w.messages += len(batch)
        w.bytes += sum(len(d.body) for d in batch)
        w.rows_rejected += len(poison)

    def _transform(self, rows: pa.Table, good: list[Delivery]
                   ) -> tuple[dict[str, pa.Table], list[tuple[Delivery, str]]]:
        """Run the app (bisecting to find poison messages) and conform the output."""
        poison: list[tuple[Delivery, str]] = []
        if not good:
            return {}, poison
        if self._runner is None:
            outputs = {self.spec.tables[0]: rows}
        else:
            outputs = self._call_app(rows, good, poison)
        conformed: dict[str, pa.Table] = {}
        for table, data in outputs.items():
            spec = self.profile.table(table)
            has_msg = MSG_COLUMN in data.column_names
            body = data.drop_columns([MSG_COLUMN]) if has_msg else data
            try:
                # PostgreSQL text cannot hold a NUL byte: those messages are poison, not the batch
                c = conform(body, spec, f"stream:{self.app}", refuse_nul=any(
                    self.config.sinks[s].kind == "postgres" for s in spec.sinks))
            except SchemaError as e:
                for d in good:
                    poison.append((d, str(e)))
                return {}, poison
            self._window.quality.setdefault(table, QualityStats()).add(c.stats)
            breach = pass_rate_breach(spec, c.stats, f"tenant {self.tenant!r}: micro-batch of "
                                      f"{len(good)} messages ({self.app})")
            if breach is not None:  # the whole micro-batch to the dead-letter queue
                done = {d.id for d, _ in poison}
                return {}, poison + [(d, breach) for d in good if d.id not in done]
            if c.rows_rejected and has_msg:
                msg_idx = pc.take(data.column(MSG_COLUMN), c.rejected.column("_row"))
                for i, reason in zip(msg_idx.to_pylist(), c.rejected.column("_reason").to_pylist(),
                                     strict=True):
                    poison.append((good[i], f"message {good[i].id!r}: {reason}"))
            elif c.rows_rejected:
                self._window.rows_rejected += c.rows_rejected
            out = c.good
            if spec.primary_key and out.num_rows:
                out = dedupe_last(out, spec.primary_key)
            conformed[table] = out
        return conformed, poison

    def _call_app(self, rows: pa.Table, good: list[Delivery],
                  poison: list[tuple[Delivery, str]]) -> dict[str, pa.Table]:
        assert self._runner is not None
        body = rows.drop_columns([MSG_COLUMN])
        ctx = AppContext(tenant=self.tenant, app=self.app, source=f"stream:{self.app}",
                         tables=tuple(self.spec.tables))
        try:
            return self._runner.call(body, ctx)
        except AppFailed as e:
            if len(good) == 1:
                poison.append((good[0], str(e)))
                return {}
            half = len(good) // 2
            out: dict[str, list[pa.Table]] = {}
            for part_rows, part in ((rows.slice(0, half), good[:half]),
                                    (rows.slice(half), good[half:])):
                for t, data in self._call_app(part_rows, part, poison).items():
                    out.setdefault(t, []).append(data)
            return {t: pa.concat_tables(v, promote_options="permissive") for t, v in out.items()}

    async def _commit(self, outputs: dict[str, pa.Table], keep: list[Delivery],
                      bad_ids: set[str]) -> None:
        ids = pa.array([d.id for d in keep], pa.string())
        try:
            ok = await self._retrying("commit", lambda: self._write_all(outputs, ids))
        except DuplicateMessages:
            # another instance committed some of these meanwhile: skip those and redo
            await self._process(keep)
            return
        if not ok:
            await self.broker.nack(self.tenant, keep)
            return
        _fault_point(self.config.home, "stream_after_commit")
        # repeats and poison of this batch were settled before: the batch is done
        await self.broker.ack(self.tenant, keep, whole_batch=True)
        now = time.time()
        w = self._window
        w.rows_loaded += sum(t.num_rows for t in outputs.values())
        w.latencies_ms.extend((now - d.published_at) * 1000 for d in keep)

    def _write_all(self, outputs: dict[str, pa.Table], ids: pa.Array) -> None:
        by_sink: dict[str, list[str]] = {}
        for t in self.spec.tables:
            for s in self.profile.table(t).sinks:
                by_sink.setdefault(s, []).append(t)
        key = f"batch:{uuid.uuid4().hex}"
        for sink_name, tables in sorted(by_sink.items()):
            txn = self._open_txn or self._sink(sink_name).begin(self.profile)
            self._open_txn = None
            try:
                for t in tables:
                    if t in outputs and outputs[t].num_rows:
                        txn.write(self.profile.table(t), outputs[t])
                txn.add_message_ids(ids)
                txn.commit(LedgerEntry(tenant=self.tenant, key=key, source=f"stream:{self.app}",
                                       ingestion_id=key, rows=len(ids)))
            except BaseException:
                txn.rollback()
                raise

    async def _report(self) -> None:
        w, self._window = self._window, _Window()
        lat = sorted(w.latencies_ms)
        report: dict[str, Any] = {
            "tenant": self.tenant, "app": self.app, "instance": self.instance,
            "window_start": w.start, "window_end": time.time(), "messages": w.messages,
            "bytes": w.bytes, "rows_loaded": w.rows_loaded, "rows_rejected": w.rows_rejected,
            "quality": quality_json(w.quality),
            "latency_mean_ms": statistics.fmean(lat) if lat else None,
            "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "backlog": await self.broker.backlog(self.tenant),
            "sandbox": None if self._runner is None else
            "bwrap" if self._runner.confined else "unconfined",
        }
        last = self._outage.last
        if last is not None:
            report["broker_outage_start"] = last["outage_start"]
            report["broker_outage_secs"] = last["outage_secs"]
        await self.broker.publish_report(report)
        self._outage.last = None  # reported once


def _fault_point(home: Path, name: str) -> None:
    """Crash here if ``<home>/.faults/<name>`` exists (tests: SIGKILL between commit and ack)."""
    if (home / ".faults" / name).exists():
        os._exit(137)


def _die_with_parent(parent: int | None) -> None:
    """SIGTERM this process when the manager that started it dies (Linux PDEATHSIG); if it
    died before this ran, stop now."""
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def _amain(home: Path, tenant: str, app: str, instance: str, parent: int | None
                 ) -> None:
    platform = load_platform(home)
    configure_logging(platform.config.home / "logs" / "simbdp.jsonl")
    log = get_logger("simbdp.stream", tenant=tenant, app=app, instance=instance)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            return
        stop.set()
        log.info("instance_stopping", signal=sig.name, deadline_secs=STOP_DEADLINE_SECS)

        def hard_stop() -> None:
            log.error("instance_stop_overdue", deadline_secs=STOP_DEADLINE_SECS,
                      reason="did not drain in time; exiting (unacked messages come back)")
            os._exit(143)
        timer = threading.Timer(STOP_DEADLINE_SECS, hard_stop)
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    _die_with_parent(parent)
    broker = open_broker(platform.config.broker)
    try:
        await StreamInstance(platform, tenant, app, instance, broker).run(stop)
    finally:
        heartbeat_path(platform.config.home, instance).unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--app", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="the manager's pid: stop when it dies")
    a = ap.parse_args()
    asyncio.run(_amain(a.home, a.tenant, a.app, a.instance, a.parent_pid))


if __name__ == "__main__":
    main()
