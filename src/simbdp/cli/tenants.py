"""``simbdp tenants``: init, check, add, list and show service profiles."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import typer
import yaml
from rich.table import Table

from simbdp.batch.staging import prepare_tenant_dirs
from simbdp.cli.common import HOME, console, err_console, home_path, load, print_config_error
from simbdp.errors import ConfigError
from simbdp.home import make_private
from simbdp.profiles import check_profiles, load_profile, save_profile
from simbdp.units import format_bytes

if TYPE_CHECKING:
    from simbdp.profiles.infer import Inferred

__all__ = ["HOME", "tenants_app"]

tenants_app = typer.Typer(help="Manage tenant service profiles.", no_args_is_help=True)


@tenants_app.command("init")
def init(name: str = typer.Argument(..., help="the new tenant's id"),
         sample: Path = typer.Option(..., "--from", help="a sample file: CSV, TSV, JSON lines, "
                                     "JSON, Parquet (text types gzipped or not)"),
         output: Path | None = typer.Option(None, "--output", "-o",
                                            help="profile to write (default: NAME.yaml)"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing file")
         ) -> None:
    """Write a first profile for a tenant from a sample file: its table's columns, types,
    nullability and key as inferred from the sample, ready to edit and to ``tenants add``."""
    out = output or Path(f"{name}.yaml")
    try:
        if out.stem != name or out.suffix not in (".yaml", ".yml"):
            raise ConfigError(f"{out}: a profile must be named {name}.yaml (its tenant id)")
        if out.exists() and not force:
            raise ConfigError(f"{out}: already exists; use --force to overwrite it")
        from simbdp.profiles.infer import infer_profile  # DuckDB's sniffer: this command only

        inferred = infer_profile(name, sample)
        _write_profile(out, sample, inferred)
        load_profile(out)
    except ConfigError as e:
        print_config_error(e)
        raise typer.Exit(2) from e
    _print_inferred(inferred)
    add = f"simbdp tenants add {out}"
    if inferred.app_source is not None:
        apps = out.with_name(f"{name}-apps")
        apps.mkdir(exist_ok=True)
        (apps / "rename_columns.py").write_text(inferred.app_source, encoding="utf-8")
        console.print(f"wrote {apps}/rename_columns.py: an app that gives the file's columns "
                      "the table's names", highlight=False, markup=False)
        add += f" --app-dir {apps}"
    console.print(f"wrote {out}; check the types, then: {add}", highlight=False, markup=False)


def _write_profile(out: Path, sample: Path, inferred: Inferred) -> None:
    how = "the whole file" if inferred.whole_file else f"its first {inferred.sample_rows} rows"
    head = (f"# Written by `simbdp tenants init` from {sample.name} ({how}); edit as needed.\n"
            "# Reference: docs/profiles.md. Editor checks: simbdp schema profile > "
            "profile.schema.json\n# yaml-language-server: $schema=profile.schema.json\n")
    body = yaml.safe_dump(inferred.profile, sort_keys=False, default_flow_style=None,
                          width=100)
    out.write_text(head + body, encoding="utf-8")


def _print_inferred(inferred: Inferred) -> None:
    spec = inferred.profile["tables"][0]
    original = {v: k for k, v in inferred.renamed.items()}
    t = Table(title=f"table {spec['name']}: {len(spec['columns'])} columns from "
                    f"{inferred.sample_rows} sample rows"
                    f"{'' if inferred.whole_file else ' (not the whole file)'}")
    for col in ("column", "in the file", "type", "nullable", "key"):
        t.add_column(col)
    for c in spec["columns"]:
        t.add_row(c["name"], original.get(c["name"], c["name"]), c["type"],
                  "no" if c.get("nullable") is False else "yes",
                  "yes" if c["name"] in spec.get("primary_key", []) else "")
    console.print(t)
    if inferred.null_values != [""] and inferred.null_values:
        console.print(f"null values: {inferred.null_values}", highlight=False, markup=False)
    if inferred.renamed:
        console.print(f"{len(inferred.renamed)} column name(s) made into identifiers "
                      "(see 'in the file')", highlight=False, markup=False)


@tenants_app.command("check")
def check(path: Path = typer.Argument(..., help="a profile file or a folder of them")) -> None:
    """Validate profiles; print every error with the file, the field and what is wrong."""
    if not path.exists():
        err_console.print(f"[red]error[/red] {path}: no such file or folder")
        raise typer.Exit(2)
    good, problems = check_profiles(path)
    for p in good:
        console.print(f"[green]ok[/green] {p.tenant_id}")
    if problems:  # patterns such as '^[a-z][a-z0-9_]{0,62}$' printed as written
        print_config_error(ConfigError(f"{path}: invalid profiles", problems))
        raise typer.Exit(1)


@tenants_app.command("add")
def add(profile_file: Path, home: Path | None = HOME,
        app_dir: Path | None = typer.Option(None, help="folder with the tenant's app code")
        ) -> None:
    """Validate a profile and install it (with its app code) into the platform."""
    profile = load_profile(profile_file)  # a ConfigError: every problem printed, exit 2
    platform = load(home_path(home))
    prepare_tenant_dirs(platform.config, profile.tenant_id)
    if app_dir is not None:
        dest_apps = platform.config.apps_dir(profile.tenant_id)
        shutil.copytree(app_dir, dest_apps, dirs_exist_ok=True)
        make_private(dest_apps)  # copytree copies the source's modes
    # the profile last: a running `serve` reloads it at once, so the code must be there
    dest = save_profile(platform.config, profile)
    console.print(f"added tenant [bold]{profile.tenant_id}[/bold] ({dest}); staging folder: "
                  f"{platform.config.staging_dir(profile.tenant_id)}")


@tenants_app.command("list")
def list_(home: Path | None = HOME) -> None:
    """List tenants with their tables, apps and limits."""
    platform = load(home)
    t = Table()
    for col in ("tenant", "enabled", "tables", "apps", "file types", "max file",
                "files/day", "bytes/day", "disabled because"):
        t.add_column(col)
    for p in platform.tenants.values():
        t.add_row(p.tenant_id, "yes" if p.enabled else "no",
                  ", ".join(x.name for x in p.tables), ", ".join(a.name for a in p.apps) or "-",
                  ", ".join(p.batch.file_types), format_bytes(p.batch.max_file_bytes),
                  str(p.batch.max_files_per_day), format_bytes(p.batch.max_bytes_per_day),
                  "" if p.enabled else "enabled: false in its profile")
    for tenant, reason in sorted(platform.broken.items()):
        t.add_row(tenant, "no", *["-"] * 6, f"profile did not load: {reason}")
    console.print(t)


@tenants_app.command("show")
def show(tenant: str, home: Path | None = HOME) -> None:
    """Print one tenant's profile as JSON."""
    profile = load(home).tenant(tenant)
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
    # unknown tenant: exit 2; secret handed out already (CredentialsIssued): 1; broker down: 3
    from simbdp.stream.client import issue_broker_credentials  # the brokers' clients

    creds = asyncio.run(issue_broker_credentials(load(home), tenant, rotate=rotate))
    console.print(f"tenant:   {creds.tenant}\nuser:     {creds.username}\n"
                  f"secret:   {creds.password}\nurl:      {creds.url}", soft_wrap=True,
                  highlight=False, markup=False)
    if creds.inbox_prefix:
        console.print(f"inbox prefix: {creds.inbox_prefix} (the client's reply subjects must "
                      "start with it)", highlight=False, markup=False)
    err_console.print("shown once: simbdp keeps no copy of the secret; --rotate makes a new one")
