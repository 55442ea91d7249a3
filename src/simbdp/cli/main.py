"""The ``simbdp`` command."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from simbdp.cli.api import keys_app, push_command
from simbdp.cli.common import HOME, CliGroup, console, load
from simbdp.cli.crypto import encrypt, keyset_app
from simbdp.cli.ingest import ingest
from simbdp.cli.lake import lake_app
from simbdp.cli.records import records_app
from simbdp.cli.report import report
from simbdp.cli.schema import schema
from simbdp.cli.stream import publish, stream_app
from simbdp.cli.tenants import tenants_app
from simbdp.cli.top import top
from simbdp.home import start_home, use_private_umask
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


app.command("ingest")(ingest)


@app.command()
def serve(home: Path | None = HOME) -> None:
    """Run the platform until Ctrl-C or SIGTERM; then finish the files in flight and exit."""
    platform = load(home, log_console=False, runs_apps=True)
    from simbdp.service import run_platform  # the API and both managers: serve only

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
