"""One micro-batch, from deliveries to acks: skip the ids already committed, decode, transform,
dead-letter the poison, write the rows and the message ids in one transaction per sink, and
only then ack.

The sink work runs in threads (the event loop keeps receiving the next micro-batch). A DuckDB
tenant file is held open, with its writer lock, while micro-batches keep coming, and let go
when the queue goes quiet, during a broker outage, after a failure, after every commit of an
app that runs tenant code, or after ``HOLD_SECS`` so batch jobs and other instances of the
tenant get their turn (opening and closing the file cost tens of ms a batch).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from simbdp.apps import AppRunner
from simbdp.coredms.base import LedgerEntry, Sink, SinkTransaction, open_sink
from simbdp.crypto.messages import MessageDecryptor
from simbdp.errors import DuplicateMessages, SinkUnavailable
from simbdp.profiles.models import AppSpec, TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.profiles.tables import QUARANTINE_SUFFIX
from simbdp.quality import QualityStats
from simbdp.stream.brokers import Broker, Delivery
from simbdp.stream.decode import Decoded, decode_batch
from simbdp.stream.lakebuffer import LakeBuffer, lake_limits, writes_lake
from simbdp.stream.retry import retry_sink
from simbdp.stream.transform import Transform, Transformed
from simbdp.stream.window import Window

__all__ = ["HOLD_SECS", "POISON_REASONS_LOGGED", "MicroBatches"]

#: the longest an instance keeps a tenant's DuckDB file and writer lock between micro-batches
HOLD_SECS = 1.0
#: after letting go at ``HOLD_SECS``, wait this long before taking the file again: others poll
#: the lock every 20 ms (coredms/lock.py) and would otherwise rarely find it free
TURN_SECS = 0.05
POISON_REASONS_LOGGED = 3  # per micro-batch: one log line with counts and the first reasons


def _fault_point(home: Path, name: str) -> None:
    """Crash here if ``<home>/.faults/<name>`` exists (tests: SIGKILL between commit and ack)."""
    if (home / ".faults" / name).exists():
        os._exit(137)


class MicroBatches:
    """Works the micro-batches of one stream app instance, one at a time, in order."""

    def __init__(self, config: PlatformConfig, profile: TenantProfile, spec: AppSpec,
                 broker: Broker, log: Any, beat: Callable[[], None], *,
                 decode: Callable[[list[Delivery]], Decoded] | None = None,
                 sinks: dict[str, Sink] | None = None, whole_batch_acks: bool = True):
        """``decode``, ``sinks`` and ``whole_batch_acks`` are for the apps of a routed tenant
        (``stream/route.py``): their rows decoded already, their sink sessions shared, and
        their acks one per message (a part of a fetched batch does not settle the others)."""
        self.config, self.profile, self.spec, self.broker = config, profile, spec, broker
        self.tenant = profile.tenant_id
        self.log, self._beat = log, beat
        self.window = Window()
        self.runner: AppRunner | None = None
        self._decode = decode or (lambda ds: decode_batch(
            ds, int(profile.stream.max_message_bytes), MessageDecryptor(config, profile)))
        self._whole_batch_acks = whole_batch_acks
        self._sinks: dict[str, Sink] = {} if sinks is None else sinks
        self._open_txn: SinkTransaction | None = None
        self._turn_until = 0.0  # monotonic: do not take a held session again before
        self._acking: asyncio.Task[None] | None = None  # the acks of the last commit
        self._transforming = asyncio.Lock()  # FIFO: micro-batches take it in their order
        self._by_sink: dict[str, list[str]] = {}  # sink -> the app's tables (and quarantine)
        for t in spec.tables:
            table = profile.table(t)
            for s in table.sinks:
                self._by_sink.setdefault(s, []).append(t)
                if table.quarantine:
                    self._by_sink[s].append(t + QUARANTINE_SUFFIX)
        self.sink_names = sorted(self._by_sink)
        #: a lake app's micro-batches are committed together (stream/lakebuffer.py)
        self.lake = LakeBuffer(lake_limits(config, profile, spec, broker)) \
            if writes_lake(config, profile, spec) else None

    # sinks ------------------------------------------------------------------------------------
    def _sink(self, name: str) -> Sink:
        if name not in self._sinks:
            self._sinks[name] = open_sink(self.config.sinks[name])
        return self._sinks[name]

    def _begin(self, name: str) -> SinkTransaction:
        sink = self._sink(name)
        hold = getattr(sink, "hold", None)
        if hold is not None:
            wait = self._turn_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # in a worker thread: the event loop keeps receiving
            hold(self.profile)  # kept open between micro-batches; see release()
        return sink.begin(self.profile)

    def release(self, *, only_after_secs: float | None = None) -> None:
        """Let go of held sink sessions (all, or those held ``only_after_secs`` or longer).
        Call from a thread, never while a micro-batch is being worked."""
        now = time.monotonic()
        for sink in self._sinks.values():
            held_since = getattr(sink, "held_since", None)
            if held_since is None:
                continue
            since = held_since(self.tenant)
            if since is not None and (only_after_secs is None or now - since >= only_after_secs):
                sink.release(self.tenant)  # type: ignore[attr-defined]
                if only_after_secs is not None:
                    self._turn_until = now + TURN_SECS

    @property
    def holding(self) -> bool:
        return any(getattr(s, "held_since", lambda _t: None)(self.tenant) is not None
                   for s in self._sinks.values())

    async def ensure_tables(self) -> bool:
        return await retry_sink("ensure_tables", lambda: [
            self._sink(n).ensure_tables(self.profile) for n in self.sink_names],
            self.log, self._beat)

    def close(self) -> None:
        for s in self._sinks.values():
            s.close()

    # one micro-batch --------------------------------------------------------------------------
    async def process(self, batch: list[Delivery], *, after: asyncio.Task[None] | None = None,
                      redo: bool = False) -> None:
        """Commit ``batch`` exactly once and ack it; poison to the dead-letter queue; a sink
        that stays away nacks the batch (it comes back). Raises BrokerUnavailable, and what
        ``after`` raised.

        ``after``: the previous micro-batch's task. This one is decoded and transformed
        meanwhile, and written (its ids looked up, committed, acked) only once that one is
        done, so commits and acks stay in order (RabbitMQ's ``multiple`` ack of this batch
        must not settle the previous one before its commit).

        The committed ids are looked up first only when the batch can hold some: a message
        delivered before (a crash between commit and ack), or several sinks. Otherwise the
        unique key on the message ids, inside the write transaction, is the check: a
        publisher's duplicate rolls the transaction back and the batch is ``redo``ne with
        the lookup. That saves a query per micro-batch on the common path."""
        if not redo and len(self.sink_names) == 1 and self.lake is None \
                and not any(d.redelivered for d in batch):
            await self._sort_out(batch, set(), count=True, after=after)
            return
        if after is not None:
            await after
        ids = pa.array([d.id for d in batch], pa.string())
        seen: set[str] = set()
        #: several sinks: the sinks that have each id (a crash between two sinks' commits
        #: leaves the messages in some sinks only)
        seen_by: dict[str, set[str]] = {}

        def lookup() -> None:
            name = self.sink_names[0]
            try:
                if len(self.sink_names) > 1:
                    for name in self.sink_names:
                        seen_by[name] = set(self._sink(name).seen_message_ids(
                            self.profile, ids).to_pylist())
                    seen.update(set.intersection(*seen_by.values()))
                    return
                # one sink: look up in the transaction that will write the batch, so a DuckDB
                # tenant file is opened (at most) once per micro-batch, not twice
                txn = self._begin(name)
                try:
                    seen.update(txn.seen_message_ids(ids).to_pylist())
                except BaseException:
                    txn.rollback()
                    raise
                self._open_txn = txn
            except BaseException as e:
                if isinstance(e, SinkUnavailable):
                    self.window.sink_failed(name, str(e))
                self.release()  # its state is unknown: open afresh next time
                raise

        try:
            if not await retry_sink("lookup", lookup, self.log, self._beat):
                await self.broker.nack(self.tenant, batch)  # redelivered later, nothing lost
                return
            if self.lake is not None:  # a publisher's duplicate of a buffered one
                seen.update(d.id for d in batch if d.id in self.lake.ids and not d.redelivered)
            batch = await self._complete_partial(batch, seen, seen_by)
            await self._sort_out(batch, seen, count=not redo)
        finally:
            if self._open_txn is not None:  # nothing was written with it
                self._open_txn.rollback()
                self._open_txn = None

    async def _complete_partial(self, batch: list[Delivery], seen: set[str],
                                seen_by: dict[str, set[str]]) -> list[Delivery]:
        """Write messages that some sinks have and others not into those others only; the
        rest of ``batch`` is returned."""
        missing: dict[tuple[str, ...], list[Delivery]] = {}
        rest = []
        for d in batch:
            have = [n for n, ids in seen_by.items() if d.id in ids]
            if have and d.id not in seen:
                missing.setdefault(tuple(n for n in self.sink_names if n not in have),
                                   []).append(d)
            else:
                rest.append(d)
        for sinks, part in missing.items():
            self.log.info("completing_sinks", sinks=list(sinks), count=len(part))
            await self._ingest(part, count=False, sinks=sinks)
        return rest

    async def _sort_out(self, batch: list[Delivery], seen: set[str], *, count: bool,
                        after: asyncio.Task[None] | None = None) -> None:
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
            await self._ingest(list(unique.values()), count=count, after=after)
        elif after is not None:
            await after

    async def _ingest(self, batch: list[Delivery], *, count: bool,
                      after: asyncio.Task[None] | None = None,
                      sinks: tuple[str, ...] | None = None) -> None:
        """Decode, transform, dead-letter the poison, commit (into ``sinks`` only, if given)
        and ack."""
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
        async with self._transforming:  # the app runner serves one batch at a time, in order
            good, done = await asyncio.to_thread(self._decode_and_transform, routed, poison,
                                                 self.window.id)
        poison.extend(done.poison)
        bad_ids = {d.id for d, _ in poison}
        keep = [d for d in good if d.id not in bad_ids] if bad_ids else good
        for d, reason in poison:
            await self.broker.dead_letter(self.tenant, d, reason)
        if poison:  # one line per micro-batch, not one per message
            self.log.warning("dead_lettered", count=len(poison), batch=len(batch),
                             first=[f"{d.id}: {r}" for d, r in poison[:POISON_REASONS_LOGGED]])
        if after is not None:
            await after  # the previous micro-batch committed (and its acks are under way)
        if keep:
            if sinks is None:
                await self._commit(done.outputs, keep)
            else:
                await self._commit_now(done.outputs, keep, sinks)
        w = self.window  # now, not before: a report meanwhile has sent the earlier one
        w.rows_rejected += len(poison) + done.rows_rejected
        if count:  # a redo's messages were counted the first time
            w.messages += len(batch)
            w.bytes += sum(map(len, (d.body for d in batch)))
            for table, stats in done.quality.items():
                w.quality.setdefault(table, QualityStats()).add(stats)

    def _decode_and_transform(self, routed: list[Delivery], poison: list[tuple[Delivery, str]],
                              window_id: str) -> tuple[list[Delivery], Transformed]:
        """In a worker thread: Arrow parses and casts with the GIL released."""
        decoded = self._decode(routed)
        poison.extend(decoded.poison)
        return decoded.good, Transform(self.config, self.profile, self.spec, self.runner)(
            decoded.rows, decoded.good, window_id)

    async def _commit(self, outputs: dict[str, pa.Table], keep: list[Delivery]) -> None:
        if self.lake is not None:  # buffered; committed once the buffer is full
            taken = self.lake.add(outputs, keep)
            if taken is None:
                return
            outputs, keep = taken
        await self._commit_now(outputs, keep)

    async def flush_lake(self, *, force: bool = False,
                         after: asyncio.Task[None] | None = None) -> None:
        """After ``after``, commit and ack the lake buffer if its age bound is reached, or
        whatever it holds with ``force`` (a stop)."""
        if after is not None:
            await after
        while self.lake is not None and (force or self.lake.due()):
            taken = self.lake.take()
            if taken is None:
                return
            await self._commit_now(*taken)  # a redo of duplicates buffers again

    async def _commit_now(self, outputs: dict[str, pa.Table], keep: list[Delivery],
                          sinks: tuple[str, ...] | None = None) -> None:
        ids = pa.array([d.id for d in keep], pa.string())
        try:
            ok = await retry_sink("commit", lambda: self._write_all(outputs, ids, sinks),
                                  self.log, self._beat)
        except DuplicateMessages:
            # committed before (a publisher's duplicate, or another instance meanwhile): the
            # transaction rolled back; look the ids up and redo
            await self.process(keep, redo=True)
            return
        if not ok:
            await self.broker.nack(self.tenant, keep)
            return
        _fault_point(self.config.home, "stream_after_commit")
        # the acks go out while the next micro-batch is decoded and written (on NATS, one
        # publish per message): after the previous batch's acks, so they stay in order
        await self.acked()
        self._acking = asyncio.create_task(self._ack(keep, sum(
            t.num_rows for name, t in outputs.items() if name in self.spec.tables)))

    async def _ack(self, keep: list[Delivery], rows: int) -> None:
        # repeats and poison of this batch were settled before: the batch is done
        await self.broker.ack(self.tenant, keep, whole_batch=self._whole_batch_acks)
        self.window.committed([d.published_at for d in keep], rows)

    async def acked(self) -> None:
        """Wait until the last committed micro-batch is acknowledged. Raises
        BrokerUnavailable (its messages come back, and are skipped as committed)."""
        task, self._acking = self._acking, None
        if task is not None:
            await task

    def _write_all(self, outputs: dict[str, pa.Table], ids: pa.Array,
                   sinks: tuple[str, ...] | None = None) -> None:
        key = f"batch:{uuid.uuid4().hex}"
        try:
            for i, (sink_name, tables) in enumerate(sorted(self._by_sink.items())):
                if sinks is not None and sink_name not in sinks:
                    continue
                if i:
                    _fault_point(self.config.home, "stream_between_sinks")
                try:
                    txn = self._open_txn or self._begin(sink_name)
                except SinkUnavailable as e:
                    self.window.sink_failed(sink_name, str(e))
                    raise
                self._open_txn = None
                rows = 0
                try:
                    txn.add_message_ids(ids)  # first: a duplicate fails before the writes
                    for t in tables:
                        if t in outputs and outputs[t].num_rows:
                            txn.write(self.profile.table(t), outputs[t])
                            rows += outputs[t].num_rows
                    txn.commit(LedgerEntry(tenant=self.tenant, key=key,
                                           source=f"stream:{self.spec.name}",
                                           ingestion_id=key, rows=len(ids)))
                except BaseException as e:
                    txn.rollback()
                    if isinstance(e, SinkUnavailable):
                        self.window.sink_failed(sink_name, str(e))
                    raise
                self.window.sink_committed(sink_name, len(ids), rows,
                                           completing=sinks is not None)
        except DuplicateMessages:
            raise  # rolled back cleanly: the held session stays usable
        except BaseException:
            self.release()
            raise
        # others' turn now and then; at once where an app runs, which may take its time with
        # the next micro-batch before anything is written
        self.release(only_after_secs=HOLD_SECS if self.runner is None else 0.0)
