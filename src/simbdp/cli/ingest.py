"""``simbdp ingest``: ingest files for a tenant once and exit.

The command is also an app of its own (:data:`ingest_app`, the same command and the same
group behaviour as in :data:`simbdp.cli.main.app`): ``simbdp ingest`` runs it without
importing the other commands (the API client, the stream and report commands...), which the
command never needs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.markup import escape

from simbdp.batch.staging import prepare_tenant_dirs
from simbdp.cli.common import EXIT_FAILED, EXIT_USAGE, HOME, CliGroup, console, err_console, load
from simbdp.home import start_home, use_private_umask
from simbdp.state import StateStore

__all__ = ["ingest", "ingest_app"]


def ingest(
    files: list[Path] = typer.Argument(..., help="files to ingest"),
    tenant: str = typer.Option(..., "--tenant", "-t"),
    home: Path | None = HOME,
) -> None:
    """Ingest files for a tenant once and exit (for scripts). Files are copied to its staging
    folder first; the originals are left untouched."""
    platform = load(home, runs_apps=True)
    start_home(platform.config)
    profile = platform.tenant(tenant)  # unknown: a ConfigError, exit 2
    from simbdp.batch.worker import prepare_prestarted

    prepare_prestarted(platform.config, profile)  # its sinks' modules load while files copy
    staging = prepare_tenant_dirs(platform.config, profile.tenant_id)
    staged = []
    for f in files:
        if not f.is_file():
            err_console.print(f"[red]error[/red] {escape(str(f))}: no such file; "
                              "give the path of a file to ingest", highlight=False)
            raise typer.Exit(EXIT_USAGE)
        dest = staging / f.name
        part = staging / f".{f.name}.part"
        shutil.copyfile(f, part)
        part.replace(dest)
        staged.append(dest)
    from simbdp.batch import BatchIngestManager  # each command imports what it runs

    store = StateStore.open(platform.config)
    try:
        # one worker now (a DuckDB tenant uses one; more start if the files need them), which
        # ensures the tenant's tables itself: the other tenants' are not this command's
        manager = BatchIngestManager(platform, store, warm=1, ensure=False)
        try:
            subs = manager.submit(tenant, staged)
            manager.run_until_idle()
        finally:
            manager.close()
        records = [store.record(s.record_id) or {} for s in subs]
    finally:
        store.close()
    from rich.table import Table

    t = Table(title=f"tenant {tenant}")
    for col in ("file", "outcome", "rows loaded", "rows rejected", "reason"):
        t.add_column(col)
    ok = True
    for s, rec in zip(subs, records, strict=True):
        outcome = rec.get("outcome", "?")
        ok &= outcome in ("processed", "duplicate")  # a duplicate loaded before: no error
        t.add_row(s.path.name, outcome, str(rec.get("rows_loaded", 0)),
                  str(rec.get("rows_rejected", 0)), rec.get("reason") or "")
    console.print(t)
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def _private_files() -> None:
    """Every command creates files and folders private to the platform's user."""
    use_private_umask()


#: ``simbdp ingest`` alone, as :mod:`simbdp.cli.entry` runs it
ingest_app = typer.Typer(help="simbdp: multi-tenant big-data ingestion platform.", cls=CliGroup,
                         no_args_is_help=True, pretty_exceptions_show_locals=False)
ingest_app.callback()(_private_files)
ingest_app.command("ingest")(ingest)
