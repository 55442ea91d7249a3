"""``simbdp tenants``: check, add, list and show service profiles."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import typer
from rich.table import Table

from simbdp.batch.staging import prepare_tenant_dirs
from simbdp.cli.common import console, err_console, home_path, load, print_config_error
from simbdp.errors import BrokerUnavailable, ConfigError, CredentialsIssued
from simbdp.home import make_private
from simbdp.profiles import check_profiles, load_profile, save_profile
from simbdp.stream.client import issue_broker_credentials

__all__ = ["tenants_app"]

tenants_app = typer.Typer(help="Manage tenant service profiles.", no_args_is_help=True)
HOME = typer.Option(None, "--home", envvar="SIMBDP_HOME", help="platform home")


@tenants_app.command("check")
def check(path: Path = typer.Argument(..., help="a profile file or a folder of them")) -> None:
    """Validate profiles; print every error with the file, the field and what is wrong."""
    if not path.exists():
        err_console.print(f"[red]error[/red] {path}: no such file or folder")
        raise typer.Exit(2)
    good, problems = check_profiles(path)
    for p in good:
        console.print(f"[green]ok[/green] {p.tenant_id}")
    for f, loc, msg in problems:
        err_console.print(f"[red]error[/red] {f}: [bold]{loc or '(file)'}[/bold]: {msg}")
    if problems:
        raise typer.Exit(1)


@tenants_app.command("add")
def add(profile_file: Path, home: Path | None = HOME,
        app_dir: Path | None = typer.Option(None, help="folder with the tenant's app code")
        ) -> None:
    """Validate a profile and install it (with its app code) into the platform."""
    try:
        profile = load_profile(profile_file)
    except ConfigError as e:
        print_config_error(e)
        raise typer.Exit(1) from e
    platform = load(home_path(home))
    dest = save_profile(platform.config, profile)
    prepare_tenant_dirs(platform.config, profile.tenant_id)
    if app_dir is not None:
        dest_apps = platform.config.apps_dir(profile.tenant_id)
        shutil.copytree(app_dir, dest_apps, dirs_exist_ok=True)
        make_private(dest_apps)  # copytree copies the source's modes
    console.print(f"added tenant [bold]{profile.tenant_id}[/bold] ({dest}); staging folder: "
                  f"{platform.config.staging_dir(profile.tenant_id)}")


@tenants_app.command("list")
def list_(home: Path | None = HOME) -> None:
    """List tenants with their tables, apps and limits."""
    platform = load(home)
    t = Table()
    for col in ("tenant", "enabled", "tables", "apps", "file types", "max file MB",
                "files/day", "GB/day", "disabled because"):
        t.add_column(col)
    for p in platform.tenants.values():
        t.add_row(p.tenant_id, "yes" if p.enabled else "no",
                  ", ".join(x.name for x in p.tables), ", ".join(a.name for a in p.apps) or "-",
                  ", ".join(p.batch.file_types), f"{p.batch.max_file_bytes / 1e6:g}",
                  str(p.batch.max_files_per_day), f"{p.batch.max_bytes_per_day / 1e9:g}",
                  "" if p.enabled else "enabled: false in its profile")
    for tenant, reason in sorted(platform.broken.items()):
        t.add_row(tenant, "no", *["-"] * 6, f"profile did not load: {reason}")
    console.print(t)


@tenants_app.command("show")
def show(tenant: str, home: Path | None = HOME) -> None:
    """Print one tenant's profile as JSON."""
    platform = load(home)
    try:
        profile = platform.tenant(tenant)
    except ConfigError as e:
        print_config_error(e)
        raise typer.Exit(1) from e
    console.print_json(json.dumps(profile.model_dump(mode="json")))


@tenants_app.command("broker-credentials")
def broker_credentials(
        tenant: str, home: Path | None = HOME,
        rotate: bool = typer.Option(False, "--rotate",
                                    help="give the tenant's user a new secret; the old one "
                                         "stops working")) -> None:
    """Hand a tenant its own broker user (RabbitMQ or NATS) for its own clients.

    The secret is made when the user is created (or with --rotate) and printed once: simbdp
    keeps no copy. The user may publish to and read the tenant's own queues only.
    """
    platform = load(home)
    try:
        creds = asyncio.run(issue_broker_credentials(platform, tenant, rotate=rotate))
    except ConfigError as e:
        print_config_error(e)
        raise typer.Exit(2) from e
    except (CredentialsIssued, BrokerUnavailable) as e:
        err_console.print(f"[red]error[/red] {e}")
        raise typer.Exit(1) from e
    console.print(f"tenant:   {creds.tenant}\nuser:     {creds.username}\n"
                  f"secret:   {creds.password}\nurl:      {creds.url}", soft_wrap=True,
                  highlight=False, markup=False)
    if creds.inbox_prefix:
        console.print(f"inbox prefix: {creds.inbox_prefix} (the client's reply subjects must "
                      "start with it)", highlight=False, markup=False)
    err_console.print("shown once: simbdp keeps no copy of the secret; --rotate makes a new one")
