"""``simbdp records show ID``: one ingestion whole (timings, rows, quality, reason, files)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from simbdp.cli.common import EXIT_USAGE, console, err_console, load
from simbdp.observe.report import describe_sink, queue_secs, work_secs
from simbdp.profiles.platform import PlatformConfig
from simbdp.quality import QualityStats
from simbdp.state import StateStore
from simbdp.units import format_bytes

__all__ = ["find_outcome_file", "records_app"]

records_app = typer.Typer(help="Ingestion records, one at a time.", no_args_is_help=True)
HOME = typer.Option(None, "--home", envvar="SIMBDP_HOME", help="platform home")
#: the folder a finished file is moved to, by the outcome of its record
_FOLDER = {"processed": "processed", "duplicate": "rejected", "rejected": "rejected",
           "failed": "failed"}


def find_outcome_file(config: PlatformConfig, record: dict[str, Any]
                      ) -> tuple[Path, Path, dict[str, Any]] | None:
    """The file a batch record's attempt left in its outcome folder, its ``.reason.json``
    and what that says; None while the file is not finished (or if it was removed)."""
    folder = _FOLDER.get(record["outcome"])
    if folder is None or record["kind"] != "batch":
        return None
    d = config.outcome_dir(record["tenant"], folder)
    # a name taken already gets a numeric suffix: name, name.1, name.2, ...
    for reason in sorted(d.glob(f"{record['source']}*.reason.json")):
        try:
            details = json.loads(reason.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if details.get("record") == record["id"]:
            return reason.with_name(reason.name[: -len(".reason.json")]), reason, details
    return None


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds") if at else "-"


@records_app.command("show")
def show(record_id: str = typer.Argument(..., help="the record id (from the API, the logs "
                                         "or a .reason.json)"),
         home: Path | None = HOME) -> None:
    """Print one ingestion record whole: what, when, how long (at work and queued), rows,
    quality rule failures, the reason and the files it left."""
    platform = load(home)
    store = StateStore.open(platform.config)
    rec = store.record(record_id)
    if rec is None and (report := store.stream_report(record_id)) is not None:
        _show_stream_report(report)
        return
    if rec is None:
        err_console.print(f"[red]error[/red] no record {escape(record_id)!r}; "
                          "`simbdp report` and GET /v1/tenants/{tenant}/records list them",
                          highlight=False)
        raise typer.Exit(EXIT_USAGE)
    t = Table(title=f"record {rec['id']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    total = (rec["ended_at"] or rec["started_at"]) - rec["started_at"]
    size = format_bytes(rec["bytes"])
    if rec.get("decompressed_bytes"):
        size += f" ({format_bytes(rec['decompressed_bytes'])} read)"
    rows: list[tuple[str, str]] = [
        ("tenant", rec["tenant"]), ("kind", rec["kind"]), ("source", rec["source"]),
        ("app", rec["app"] or "-"), ("outcome", rec["outcome"]),
        ("attempt", str(rec["attempt"])), ("sandbox", rec["sandbox"] or "-"),
        ("content key", rec["content_key"] or "-"), ("size", size),
        ("accepted at", _when(rec["started_at"])), ("done at", _when(rec["ended_at"])),
        ("total s", f"{total:.3f} (accepted -> done)"),
        ("work s", f"{work_secs(rec):.3f} = read {rec['read_secs']:.3f} + app "
                   f"{rec['app_secs']:.3f} + write {rec['write_secs']:.3f}"),
        ("queued s", f"{queue_secs(rec):.3f} (accepted -> taken by a worker)"),
        ("rows", f"{rec['rows_in']:,} in, {rec['rows_loaded']:,} loaded "
                 f"({rec.get('rows_updated') or 0:,} of them updated a row with the same key), "
                 f"{rec['rows_rejected']:,} rejected"),
    ]
    if rec["kind"] != "batch":
        rows.append(("messages", f"{rec['messages']:,}"))
    if rec.get("sinks"):
        rows += [(f"sink {n}", state) for n, state in json.loads(rec["sinks"]).items()]
    found = find_outcome_file(platform.config, rec)
    if rec.get("quality"):
        rows += _quality_rows(rec["quality"])
    if found is not None:
        path, reason, details = found
        quality = details.get("quality") or {}
        if not rec.get("quality"):  # a record written before quality metadata was stored
            rows.append(("quality", ", ".join(f"{k}: {v:,}" for k, v in quality.items())
                         if quality else "no rule failed"))
        rows += [("file", str(path)), ("reason file", str(reason))]
        if details.get("rejected_rows_file"):
            rows.append(("rejected rows", str(details["rejected_rows_file"])))
    rows.append(("reason", rec["reason"] or "-"))
    for k, v in rows:
        t.add_row(k, escape(v))
    console.print(t)


def _quality_rows(quality: dict[str, Any]) -> list[tuple[str, str]]:
    """The quality metadata of a record or a stream report: totals, then each table's if
    there are several."""
    total = QualityStats.from_dict(quality)
    line = total.describe()
    rows = [("quality", line if total.failed or total.rows_failed_schema
             else f"{line}; no rule failed")]
    tables = quality.get("tables") or {}
    if len(tables) > 1:
        rows += [(f"quality {t}", QualityStats.from_dict(q).describe())
                 for t, q in sorted(tables.items())]
    return rows


def _show_stream_report(rep: dict[str, Any]) -> None:
    """A stream report (one instance's window of micro-batches) whole."""
    t = Table(title=f"stream report {rep['id']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("tenant", rep["tenant"]), ("kind", "stream"), ("app", rep["app"]),
        ("instance", rep["instance"]),
        ("window", f"{_when(rep['window_start'])} -> {_when(rep['window_end'])}"),
        ("messages", f"{rep['messages']:,} ({format_bytes(rep['bytes'])})"),
        ("rows", f"{rep['rows_loaded']:,} loaded, {rep['rows_rejected']:,} rejected "
                 "(dead-lettered, or quarantined where the table keeps a quarantine table)"),
    ]
    rows += _quality_rows(rep["quality"]) if rep.get("quality") else [
        ("quality", "no rows checked")]
    rows += [(f"sink {n}", describe_sink(s)) for n, s in (rep.get("sinks") or {}).items()]
    for k, v in rows:
        t.add_row(k, escape(v))
    console.print(t)
