"""The ``simbdp`` command."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from simbdp.batch import BatchIngestManager
from simbdp.batch.staging import prepare_tenant_dirs
from simbdp.cli.api import keys_app, push_command
from simbdp.cli.common import EXIT_FAILED, EXIT_USAGE, CliGroup, console, err_console, load
from simbdp.cli.crypto import encrypt, keyset_app
from simbdp.cli.lake import lake_app
from simbdp.cli.records import records_app
from simbdp.cli.report import report
from simbdp.cli.schema import schema
from simbdp.cli.stream import publish, stream_app
from simbdp.cli.tenants import HOME, tenants_app
from simbdp.cli.top import top
from simbdp.home import start_home, use_private_umask
from simbdp.service import run_platform
from simbdp.state import StateStore

__all__ = ["app"]

app = typer.Typer(help="simbdp: multi-tenant big-data ingestion platform.", cls=CliGroup,
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(tenants_app, name="tenants")
app.add_typer(stream_app, name="stream")
app.add_typer(records_app, name="records")
app.add_typer(keyset_app, name="keyset")
app.add_typer(lake_app, name="lake")
tenants_app.add_typer(keys_app, name="key")
app.command("push")(push_command)
app.command("report")(report)
app.command("publish")(publish)
app.command("schema")(schema)
app.command("encrypt")(encrypt)
app.command("top")(top)


@app.callback()
def _private_files() -> None:
    """Every command creates files and folders private to the platform's user."""
    use_private_umask()


@app.command()
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
    store = StateStore.open(platform.config)
    # one worker now (a DuckDB tenant uses one); more start if the files need them
    manager = BatchIngestManager(platform, store, warm=1)
    try:
        subs = manager.submit(tenant, staged)
        manager.run_until_idle()
    finally:
        manager.close()
    t = Table(title=f"tenant {tenant}")
    for col in ("file", "outcome", "rows loaded", "rows rejected", "reason"):
        t.add_column(col)
    ok = True
    for s in subs:
        rec = store.record(s.record_id) or {}
        outcome = rec.get("outcome", "?")
        ok &= outcome in ("processed", "duplicate")  # a duplicate loaded before: no error
        t.add_row(s.path.name, outcome, str(rec.get("rows_loaded", 0)),
                  str(rec.get("rows_rejected", 0)), rec.get("reason") or "")
    console.print(t)
    if not ok:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def serve(home: Path | None = HOME) -> None:
    """Run the platform until Ctrl-C or SIGTERM; then finish the files in flight and exit."""
    platform = load(home, log_console=False, runs_apps=True)
    start_home(platform.config)
    store = StateStore.open(platform.config)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        console.print(f"signal {signum}: finishing the files in flight ...")
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    broken = f", {len(platform.broken)} disabled (profile broken)" if platform.broken else ""
    console.print(f"simbdp serving {len(platform.tenants)} tenant(s){broken} from "
                  f"{platform.config.home}")
    run_platform(platform, store, stop)
    console.print("stopped")


@app.command()
def demo(
    keep: Path | None = typer.Option(None, help="use this folder as the demo home and keep it"),
    keep_serving: bool = typer.Option(False, help="keep serving the dashboard after the "
                                      "demo, until Ctrl-C"),
) -> None:
    """Run the demo: two tenants, good and bad files, the report and a few rows; the live
    dashboard is served meanwhile (its URL is printed at the start and the end)."""
    from simbdp.demo import run_demo

    run_demo(keep, keep_serving)


if __name__ == "__main__":
    app()
