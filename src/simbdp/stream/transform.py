"""From a micro-batch's decoded rows to the rows each table gets: the tenant's app (poison
messages found by bisecting the batch when it fails), conform to the table's types, the rows
that fail a check into the table's quarantine table (when it has one; else their messages are
poison), and the last row per primary key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from simbdp.apps import AppContext, AppRunner
from simbdp.errors import AppFailed, SchemaError
from simbdp.profiles.models import AppSpec, TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.profiles.tables import QUARANTINE_SUFFIX, TableSpec
from simbdp.quality import QualityStats, conform, dedupe_last, pass_rate_breach, quarantine_rows
from simbdp.stream.brokers import Delivery
from simbdp.stream.decode import MSG_COLUMN

__all__ = ["Transform", "Transformed"]

Poison = list[tuple[Delivery, str]]


@dataclass
class Transformed:
    """The rows per table, the messages found poison (with the reason), and the rows refused
    that no message column traces back (an app's output without ``_simbdp_msg``)."""

    outputs: dict[str, pa.Table] = field(default_factory=dict)
    poison: Poison = field(default_factory=list)
    rows_rejected: int = 0
    #: the quality checks' counts per table (the report window sums them)
    quality: dict[str, QualityStats] = field(default_factory=dict)


class Transform:
    """The transformation of one stream app; called in a worker thread per micro-batch."""

    def __init__(self, config: PlatformConfig, profile: TenantProfile, spec: AppSpec,
                 runner: AppRunner | None):
        self.config, self.profile, self.spec, self.runner = config, profile, spec, runner
        self._source = f"stream:{spec.name}"

    def __call__(self, rows: pa.Table, good: list[Delivery], ingestion: str = "") -> Transformed:
        """``rows`` carries ``_simbdp_msg``, the index of each row's message in ``good``.
        ``ingestion`` (the id of the report window checking them) is what quarantined rows
        name as theirs."""
        out = Transformed()
        if not good:
            return out
        if self.runner is None:
            outputs = {self.spec.tables[0]: rows}
        else:
            outputs = self._call_app(rows, good, out.poison)
        for table, data in outputs.items():
            spec = self.profile.table(table)
            has_msg = MSG_COLUMN in data.column_names
            body = data.drop_columns([MSG_COLUMN]) if has_msg else data
            try:
                # PostgreSQL text cannot hold a NUL byte: those messages are poison, not the batch
                c = conform(body, spec, self._source, refuse_nul=any(
                    self.config.sinks[s].kind == "postgres" for s in spec.sinks))
            except SchemaError as e:
                return Transformed(poison=[*out.poison, *((d, str(e)) for d in good)])
            out.quality.setdefault(table, QualityStats()).add(c.stats)
            breach = pass_rate_breach(spec, c.stats, f"tenant {self.profile.tenant_id!r}: "
                                      f"micro-batch of {len(good)} messages ({self.spec.name})")
            if breach is not None:  # the whole micro-batch to the dead-letter queue
                done = {d.id for d, _ in out.poison}
                return Transformed(poison=[*out.poison, *((d, breach) for d in good
                                                          if d.id not in done)],
                                   quality=out.quality)
            if c.rows_rejected and spec.quarantine:  # kept in the sink; their messages acked
                out.rows_rejected += c.rows_rejected
                out.outputs[spec.name + QUARANTINE_SUFFIX] = self._quarantine(
                    c.rejected, spec, data, good, ingestion)
            elif c.rows_rejected and has_msg:
                msg_idx = pc.take(data.column(MSG_COLUMN), c.rejected.column("_row"))
                for i, reason in zip(msg_idx.to_pylist(), c.rejected.column("_reason").to_pylist(),
                                     strict=True):
                    out.poison.append((good[i], f"message {good[i].id!r}: {reason}"))
            elif c.rows_rejected:
                out.rows_rejected += c.rows_rejected
            kept = c.good
            if spec.primary_key and kept.num_rows:
                kept = dedupe_last(kept, spec.primary_key)
            out.outputs[table] = kept
        return out

    def _quarantine(self, rejected: pa.Table, spec: TableSpec, data: pa.Table,
                    good: list[Delivery], ingestion: str) -> pa.Table:
        """The rejected rows for the quarantine table, each naming its message as its source
        (the app, when the app's rows do not say which message they came from)."""
        q = quarantine_rows(rejected, spec, self._source, ingestion)
        if MSG_COLUMN not in data.column_names:
            return q
        ids = pa.array([d.id for d in good], pa.string())
        source = pc.take(ids, pc.take(data.column(MSG_COLUMN), rejected.column("_row")))
        return q.set_column(q.schema.get_field_index("quality_source"), "quality_source",
                            source)

    def _call_app(self, rows: pa.Table, good: list[Delivery], poison: Poison
                  ) -> dict[str, pa.Table]:
        if self.runner is None:
            raise RuntimeError("no app runner")
        body = rows.drop_columns([MSG_COLUMN])
        ctx = AppContext(tenant=self.profile.tenant_id, app=self.spec.name,
                         source=self._source, tables=tuple(self.spec.tables))
        try:
            return self.runner.call(body, ctx)
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
