"""``simbdp report``: per tenant batch and stream figures from the records."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from simbdp.cli.common import console, load
from simbdp.observe.report import (
    BatchSummary,
    StreamSummary,
    batch_summary,
    stream_summary,
    unconfined_runs,
)
from simbdp.profiles import Platform
from simbdp.quality.stats import percent
from simbdp.state import StateStore
from simbdp.units import format_bytes

__all__ = ["parse_since", "print_disabled", "print_quality", "print_report", "report"]

_REL = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str | None) -> float | None:
    """``30m``, ``2h``, ``1d`` ago, or an ISO date/time."""
    if text is None:
        return None
    m = _REL.match(text.strip())
    if m:
        mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - float(m.group(1)) * mult
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise typer.BadParameter(f"--since {text!r}: use e.g. 30m, 2h, 1d or an ISO date") from None


def print_report(store: StateStore, tenant: str | None = None, since: float | None = None,
                 platform: Platform | None = None) -> None:
    if platform is not None:
        print_disabled(platform, tenant)
    t = Table(title="batch ingestion per tenant")
    for col in ("tenant", "accepted", "rejected", "failed", "duplicate", "waiting", "size",
                "read", "rows loaded", "updated", "rows rejected", "mean s", "p95 s", "work s",
                "queued s", "MiB/s"):
        t.add_column(col, justify="left" if col == "tenant" else "right")
    t.caption = ("mean s, p95 s: accepted -> done; work s: read + app + write (mean); "
                 "queued s: accepted -> taken by a worker (mean); updated: rows loaded that "
                 "replaced a row with the same key; MiB/s: bytes read per second of work")
    batches = batch_summary(store, tenant, since)
    for s in batches:
        t.add_row(s.tenant, str(s.accepted), str(s.rejected), str(s.failed), str(s.duplicate),
                  f"[yellow]{s.waiting}[/yellow]" if s.waiting else "0",
                  format_bytes(s.bytes), format_bytes(s.decompressed_bytes),
                  f"{s.rows_loaded:,}", f"{s.rows_updated:,}", f"{s.rows_rejected:,}",
                  f"{s.mean_secs:.3f}", f"{s.p95_secs:.3f}", f"{s.work_mean_secs:.3f}",
                  f"{s.queue_mean_secs:.3f}", f"{s.mib_per_sec:.1f}")
    console.print(t)
    streams = stream_summary(store, tenant, since)
    if streams:
        st = Table(title="stream ingestion per tenant and app")
        for col in ("tenant", "app", "messages", "size", "rows loaded", "rows rejected",
                    "mean ms", "p99 ms", "max instances", "scale ups", "scale downs"):
            st.add_column(col, justify="left" if col in ("tenant", "app") else "right")
        for s in streams:
            st.add_row(s.tenant, s.app, f"{s.messages:,}", format_bytes(s.bytes),
                       f"{s.rows_loaded:,}", f"{s.rows_rejected:,}", f"{s.latency_mean_ms:.1f}",
                       f"{s.latency_p99_ms:.1f}", str(s.instances_max), str(s.scale_ups),
                       str(s.scale_downs))
        console.print(st)
    print_quality(batches, streams)
    for t_id, n in unconfined_runs(store, tenant, since).items():
        console.print(f"[red]tenant {t_id}: {n} app runs without the sandbox "
                      "(apps.unconfined: true)[/red]")


def print_quality(batches: list[BatchSummary], streams: list[StreamSummary]) -> None:
    """Rows checked, passed, the pass rate and the rules failed most, per tenant (batch) and
    per tenant and stream app."""
    rows = [(s.tenant, "batch", s.quality) for s in batches]
    rows += [(s.tenant, f"stream {s.app}", s.quality) for s in streams]
    rows = [r for r in rows if r[2].rows_checked]
    if not rows:
        return
    t = Table(title="quality per tenant")
    for col in ("tenant", "path", "rows checked", "rows passed", "pass rate",
                "failed (rule: rows)"):
        t.add_column(col, justify="left" if col in ("tenant", "path", "failed (rule: rows)")
                     else "right", overflow="fold")
    for tenant, path, q in rows:
        failed = sorted(q.failed.items(), key=lambda x: (-x[1], x[0]))
        text = [f"{r}: {n:,}" for r, n in failed[:5]]
        if len(failed) > 5:
            text.append(f"+{len(failed) - 5} more")
        if q.rows_failed_schema:
            text.append(f"types/required: {q.rows_failed_schema:,}")
        t.add_row(tenant, path, f"{q.rows_checked:,}", f"{q.rows_passed:,}",
                  percent(q.pass_rate or 0.0), ", ".join(text) or "-")
    console.print(t)


def print_disabled(platform: Platform, tenant: str | None = None) -> None:
    """Tenants that do not run now and why: a profile that did not load, or enabled: false."""
    rows = [(t, f"profile did not load: {r}") for t, r in sorted(platform.broken.items())]
    rows += [(t, "enabled: false in its profile") for t, p in platform.tenants.items()
             if not p.enabled]
    rows = [r for r in rows if tenant is None or r[0] == tenant]
    if rows:
        t = Table(title="disabled tenants")
        t.add_column("tenant")
        t.add_column("reason", overflow="fold")
        for row in rows:
            t.add_row(*row)
        console.print(t)


def report(
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="only this tenant"),
    since: str | None = typer.Option(None, help="e.g. 30m, 2h, 1d or an ISO date"),
    home: Path | None = typer.Option(None, envvar="SIMBDP_HOME", help="platform home"),
) -> None:
    """Print files accepted/rejected/failed, sizes, rows, time (accepted -> done, at work, and
    queued) and MiB/s per tenant."""
    platform = load(home)
    store = StateStore.open(platform.config)
    print_report(store, tenant, parse_since(since), platform)
