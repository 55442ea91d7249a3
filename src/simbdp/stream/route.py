"""Routing a tenant's queue to several stream apps by message type (profile
``stream.route_by`` and each stream app's ``message_types``).

One instance of a routed tenant consumes its queue for all its stream apps. Each fetched
micro-batch is decoded once (Arrow, as ``decode.py`` does); the type is the message's header
named by ``route_by``, else its top-level JSON field of that name. The rows are split by type
with ``pyarrow.compute`` masks, and each part goes to its app's
:class:`~simbdp.stream.microbatch.MicroBatches` (its own app, tables and transaction), the
parts committed one after the other in the order of the profile's apps, and acked message by
message once committed. A message whose type no app takes, or that has none, goes to the
dead-letter queue with the reason; so does one that does not decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simbdp.coredms.base import Sink
from simbdp.crypto.messages import MessageDecryptor
from simbdp.profiles.models import ROUTED_APP, AppSpec, TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.stream.brokers import Broker, Delivery
from simbdp.stream.decode import MSG_COLUMN, Decoded, decode_batch
from simbdp.stream.lakebuffer import LakeBuffer
from simbdp.stream.microbatch import POISON_REASONS_LOGGED, MicroBatches
from simbdp.stream.window import Window

__all__ = ["ROUTED", "Router", "Split", "batch_limits", "instance_app", "scaling_spec",
           "split_by_type"]

#: the app name under which a routed tenant's instances run (manager, instance ids, the
#: report of the messages no app took); each app's own figures are reported under its name
ROUTED = ROUTED_APP


def instance_app(profile: TenantProfile, app: str) -> str:
    """The name the instances serving ``app`` run under: ``ROUTED`` for a stream app of a
    routed tenant, else the app's own."""
    if profile.routed and any(a.name == app for a in profile.stream_apps()):
        return ROUTED
    return app


def batch_limits(profile: TenantProfile) -> tuple[int, int, int]:
    """A routed tenant's micro-batch: the smallest ``batch_max_rows``, ``batch_max_bytes``
    and ``batch_max_wait_ms`` of its stream apps (no app gets more than it asked for)."""
    apps = profile.stream_apps()
    return (min(a.batch_max_rows for a in apps), min(int(a.batch_max_bytes) for a in apps),
            min(a.batch_max_wait_ms for a in apps))


def scaling_spec(apps: list[AppSpec]) -> AppSpec:
    """How the monitor scales a routed tenant's instances, serving ``apps`` (its started
    stream apps): the most of their ``min_instances`` and ``max_instances``, the least of
    their ``target_backlog``, ``target_latency_ms`` and ``batch_max_rows``."""
    return apps[0].model_copy(update={
        "name": ROUTED, "min_instances": max(a.min_instances for a in apps),
        "max_instances": max(a.max_instances for a in apps),
        "target_backlog": min(a.target_backlog for a in apps),
        "target_latency_ms": min(a.target_latency_ms for a in apps),
        "batch_max_rows": min(a.batch_max_rows for a in apps)})


class Split:
    """A micro-batch split by type: the decoded part of each app that has messages (in the
    profile's order), and the messages to dead-letter with their reasons."""

    def __init__(self) -> None:
        self.parts: dict[str, Decoded] = {}
        self.dead: list[tuple[Delivery, str]] = []


def _message_types(decoded: Decoded, key: str) -> pa.Array:
    """Each decoded message's type: its header ``key``, else its JSON field ``key`` as text
    (null when it has neither, or when the field is an object or a list in every message)."""
    header = pa.array([d.headers.get(key) for d in decoded.good], pa.string())
    if key == MSG_COLUMN or key not in decoded.rows.column_names:
        return header
    try:
        field = decoded.rows.column(key).cast(pa.string()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return header  # an object or a list throughout: no type (no app takes one)
    return pc.coalesce(header, field)


def _part(decoded: Decoded, idx: pa.Array, keep: set[str], key: str) -> Decoded:
    """The rows at ``idx`` as one app's micro-batch: the fields only other types carry (null
    throughout) and the type field dropped, unless a table of the app has such a column."""
    rows = decoded.rows.take(idx)
    drop = [c for c, col in zip(rows.column_names, rows.columns, strict=True)
            if c != MSG_COLUMN and c not in keep
            and (c == key or col.null_count == rows.num_rows)]
    rows = rows.drop_columns(drop)
    good = decoded.good
    return Decoded(_renumber(rows), [good[i] for i in idx.to_pylist()])


def _renumber(rows: pa.Table) -> pa.Table:
    """``_simbdp_msg`` numbered 0.. again: the index of each row's message in its part."""
    return rows.set_column(rows.schema.get_field_index(MSG_COLUMN), MSG_COLUMN,
                           pa.array(np.arange(rows.num_rows, dtype=np.int64)))


def split_by_type(decoded: Decoded, profile: TenantProfile) -> Split:
    """Split decoded messages by type among the tenant's stream apps (vectorised: one
    ``is_in`` mask per app); the others, and ``decoded``'s poison, are to dead-letter."""
    key = profile.stream.route_by
    if key is None:
        raise ValueError(f"tenant {profile.tenant_id!r} routes no messages (no route_by)")
    out = Split()
    out.dead.extend(decoded.poison)
    if not decoded.good:
        return out
    apps = profile.stream_apps()
    types = _message_types(decoded, key)
    for app in apps:
        mask = pc.is_in(types, value_set=pa.array(app.message_types, pa.string()))
        idx = pc.indices_nonzero(mask)
        if len(idx):
            keep = {c for t in app.tables for c in profile.table(t).column_names}
            out.parts[app.name] = _part(decoded, idx, keep, key)
    taken = pa.array(sorted({t for a in apps for t in a.message_types}), pa.string())
    lost = pc.indices_nonzero(pc.invert(pc.fill_null(pc.is_in(types, value_set=taken), False)))
    if len(lost):
        tenant, names = profile.tenant_id, ", ".join(taken.to_pylist())
        for i, t in zip(lost.to_pylist(), pc.take(types, lost).to_pylist(), strict=True):
            d = decoded.good[i]
            what = (f"has no type (no header or top-level JSON field {key!r})" if t is None
                    else f"has type {t!r}, which no stream app takes")
            out.dead.append((d, f"tenant {tenant!r}: message {d.id!r} {what}; the types "
                                f"taken are {names}"))
    return out


class _Predecoded:
    """One app's parts, decoded already, by message: its MicroBatches' ``decode``."""

    def __init__(self) -> None:
        self._at: dict[int, tuple[Decoded, int]] = {}

    def add(self, part: Decoded) -> None:
        for i, d in enumerate(part.good):
            self._at[id(d)] = (part, i)

    def drop(self, part: Decoded) -> None:
        for d in part.good:
            self._at.pop(id(d), None)

    def __call__(self, deliveries: list[Delivery]) -> Decoded:
        """The rows of ``deliveries`` (all of one part: what is left of it once duplicates
        and messages for a table the app does not own are set aside)."""
        if not deliveries:
            return Decoded(pa.table({MSG_COLUMN: pa.array([], pa.int64())}), [])
        part = self._at[id(deliveries[0])][0]
        if len(deliveries) == len(part.good):
            return part
        idx = pa.array([self._at[id(d)][1] for d in deliveries], pa.int64())
        return Decoded(_renumber(part.rows.take(idx)), list(deliveries))


class _Lakes:
    """The lake buffers of a routed tenant's apps into a delta sink (``lakebuffer.py``), as
    the instance loop sees one app's: due when one is, dropped together."""

    def __init__(self, buffers: list[LakeBuffer]):
        self._buffers = buffers

    def due(self) -> bool:
        return any(b.due() for b in self._buffers)

    def drop(self) -> int:
        return sum(b.drop() for b in self._buffers)


class Router:
    """The micro-batches of a routed tenant's instance: split by type, one
    :class:`MicroBatches` per stream app (sink sessions shared, parts committed in turn)."""

    def __init__(self, config: PlatformConfig, profile: TenantProfile, broker: Broker,
                 log: Any, beat: Callable[[], None]):
        self.config, self.profile, self.broker, self.log = config, profile, broker, log
        self.tenant = profile.tenant_id
        #: the messages no app took (and those that did not decode): reported as ``ROUTED``
        self.window = Window()
        self._decoded: dict[str, _Predecoded] = {}
        self.apps: dict[str, MicroBatches] = {}
        sinks: dict[str, Sink] = {}  # one session per sink for all apps: they take turns
        for spec in profile.stream_apps():
            pre = self._decoded[spec.name] = _Predecoded()
            self.apps[spec.name] = MicroBatches(
                config, profile, spec, broker, log.bind(app=spec.name), beat, decode=pre,
                sinks=sinks, whole_batch_acks=False)
        self.sink_names = sorted({s for mb in self.apps.values() for s in mb.sink_names})
        lakes = [mb.lake for mb in self.apps.values() if mb.lake is not None]
        self.lake = _Lakes(lakes) if lakes else None

    @property
    def specs(self) -> list[AppSpec]:
        return [mb.spec for mb in self.apps.values()]

    async def ensure_tables(self) -> bool:
        for mb in self.apps.values():
            if not await mb.ensure_tables():
                return False
        return True

    def _split(self, batch: list[Delivery]) -> Split:
        """In a worker thread: Arrow decodes with the GIL released."""
        decoded = decode_batch(batch, int(self.profile.stream.max_message_bytes),
                               MessageDecryptor(self.config, self.profile))
        return split_by_type(decoded, self.profile)

    async def process(self, batch: list[Delivery], *, after: asyncio.Task[None] | None = None
                      ) -> None:
        """Dead-letter what no app takes, then hand each app its part; the parts commit in
        turn after ``after`` (the previous micro-batch), each acked once committed. Raises
        BrokerUnavailable, and what ``after`` raised."""
        split = await asyncio.to_thread(self._split, batch)
        for d, reason in split.dead:
            await self.broker.dead_letter(self.tenant, d, reason)
        if split.dead:
            self.log.warning("dead_lettered", count=len(split.dead), batch=len(batch),
                             first=[f"{d.id}: {r}"
                                    for d, r in split.dead[:POISON_REASONS_LOGGED]])
            w = self.window
            w.messages += len(split.dead)
            w.bytes += sum(len(d.body) for d, _ in split.dead)
            w.rows_rejected += len(split.dead)
        tasks: list[asyncio.Task[None]] = []
        for name, part in split.parts.items():
            pre = self._decoded[name]
            pre.add(part)
            task = asyncio.create_task(self.apps[name].process(
                part.good, after=tasks[-1] if tasks else after))
            task.add_done_callback(lambda _t, pre=pre, part=part: pre.drop(part))
            tasks.append(task)
        if not tasks:
            if after is not None:
                await after
            return
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(r, BaseException):
                raise r

    async def flush_lake(self, *, force: bool = False,
                         after: asyncio.Task[None] | None = None) -> None:
        """After ``after``, commit and ack each app's lake buffer that is due (all with
        ``force``: a stop), one after the other."""
        if after is not None:
            await after
        for mb in self.apps.values():
            if mb.lake is not None:
                await mb.flush_lake(force=force)

    @property
    def holding(self) -> bool:
        return any(mb.holding for mb in self.apps.values())

    def release(self) -> None:
        """Let go of the held sink sessions (from a thread, between micro-batches)."""
        for mb in self.apps.values():
            mb.release()

    async def acked(self) -> None:
        """Wait until every app's last committed part is acknowledged."""
        for mb in self.apps.values():
            await mb.acked()

    def close(self) -> None:
        for mb in self.apps.values():
            mb.close()
