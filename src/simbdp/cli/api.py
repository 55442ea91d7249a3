"""``simbdp tenants key ...`` and ``simbdp push``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from simbdp.cli.common import console, err_console, load
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key, list_keys, revoke_key

__all__ = ["keys_app", "push_command"]

keys_app = typer.Typer(help="API keys of tenants and of the operator.", no_args_is_help=True)
HOME = typer.Option(None, "--home", envvar="SIMBDP_HOME", help="platform home")


@keys_app.command("create")
def create(tenant: str | None = typer.Argument(None, help="tenant id (omit with --operator)"),
           operator: bool = typer.Option(False, "--operator"), home: Path | None = HOME) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    platform = load(home)
    if operator == (tenant is not None):
        err_console.print("[red]error[/red] give a tenant id or --operator")
        raise typer.Exit(2)
    if tenant is not None:
        platform.tenant(tenant)
    key = create_key(StateStore.open(platform.config), tenant or OPERATOR)
    console.print(key, soft_wrap=True)


@keys_app.command("revoke")
def revoke(key_id: str, home: Path | None = HOME) -> None:
    """Revoke a key by its id (the part after ``sbdp_``)."""
    platform = load(home)
    if not revoke_key(StateStore.open(platform.config), key_id):
        err_console.print(f"[red]error[/red] no active key {key_id!r}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


@keys_app.command("list")
def list_(home: Path | None = HOME) -> None:
    platform = load(home)
    t = Table()
    for col in ("key id", "tenant", "created", "revoked"):
        t.add_column(col)
    for k in list_keys(StateStore.open(platform.config)):
        t.add_row(str(k["key_id"]), str(k["tenant"]), f"{k['created_at']:.0f}",
                  f"{k['revoked_at']:.0f}" if k["revoked_at"] else "")
    console.print(t)


def push_command(folder: Path = typer.Argument(..., help="folder of files to send"),
                 server: str = typer.Option(..., help="e.g. https://simbdp.example:8470"),
                 key: str = typer.Option(..., envvar="SIMBDP_KEY"),
                 tenant: str = typer.Option(..., "--tenant", "-t"),
                 watch: bool = typer.Option(False, help="keep sending new files"),
                 workers: int = typer.Option(4), cafile: Path | None = typer.Option(None),
                 encrypt: Path | None = typer.Option(
                     None, "--encrypt", metavar="KEYSET",
                     help="send each file encrypted with this keyset (`simbdp keyset new`), "
                          "as NAME.enc")
                 ) -> None:
    """Upload the files of FOLDER that meet the tenant's constraints; list the others."""
    from simbdp.push import push

    results = push(server, key, tenant, folder, workers=workers, watch=watch,
                   verify=str(cafile) if cafile else True, encrypt=encrypt)
    t = Table()
    for col in ("file", "status", "reason"):
        t.add_column(col)
    for r in results:
        t.add_row(r.file, r.status, r.reason)
    console.print(t)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
