"""``simbdp lake``: maintenance of the tenants' Delta Lake tables."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from simbdp.cli.common import EXIT_USAGE, console, err_console, load
from simbdp.coredms.compaction import compact_lake

__all__ = ["lake_app"]

lake_app = typer.Typer(help="Delta Lake tables: compaction.", no_args_is_help=True)
HOME = typer.Option(None, "--home", envvar="SIMBDP_HOME", help="platform home")


@lake_app.command("compact")
def compact(tenant: str | None = typer.Option(None, "--tenant", help="only this tenant"),
            table: str | None = typer.Option(None, "--table", help="only this table"),
            vacuum: bool = typer.Option(True, "--vacuum/--no-vacuum",
                                        help="delete unreferenced files older than the "
                                             "sink's vacuum_retain_hours"),
            home: Path | None = HOME) -> None:
    """Rewrite small data files of Delta tables into large ones (exactly once holds: files
    committed before are still duplicates after)."""
    platform = load(home)
    if tenant is not None and tenant not in platform.tenants:
        err_console.print(f"[red]error[/red] no tenant {tenant!r}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    done = compact_lake(platform, tenant, table, vacuum=vacuum)
    if not done:
        console.print("no Delta table to compact (no table of a `kind: delta` sink matches)")
        return
    t = Table(title="lake compaction")
    for col in ("tenant", "table", "files before", "files after", "files deleted"):
        t.add_column(col, justify="left" if col in ("tenant", "table") else "right")
    for c in done:
        t.add_row(c.tenant, c.table, str(c.files_before), str(c.files_after),
                  str(c.files_deleted))
    console.print(t)
