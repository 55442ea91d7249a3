"""``simbdp stream`` and ``simbdp publish``: near-realtime ingestion from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from simbdp.cli.common import EXIT_UNREACHABLE, EXIT_USAGE, console, err_console, load
from simbdp.errors import BrokerUnavailable, PublishInterrupted
from simbdp.observe.report import describe_sink
from simbdp.profiles import Platform
from simbdp.state import StateStore

if TYPE_CHECKING:
    from simbdp.crypto.keyset import Keyset

__all__ = ["publish", "stream_app"]

stream_app = typer.Typer(help="Start, stop and scale tenants' stream apps.",
                         no_args_is_help=True)
HOME = typer.Option(None, "--home", envvar="SIMBDP_HOME", help="platform home")
TENANT = typer.Option(..., "--tenant", "-t")
APP = typer.Option(..., "--app", "-a")


def _check(platform: Platform, tenant: str, app: str) -> None:
    try:
        spec = platform.tenant(tenant).app(app)
    except KeyError as e:
        err_console.print(f"[red]error[/red] tenant {tenant!r} has no app {app!r}; "
                          "`simbdp tenants show` lists its apps", highlight=False)
        raise typer.Exit(EXIT_USAGE) from e
    if spec.kind != "stream":
        err_console.print(f"[red]error[/red] app {app!r} of tenant {tenant!r} is a batch app")
        raise typer.Exit(2)


def set_instances(platform: Platform, store: StateStore, tenant: str, app: str, n: int,
                  action: str) -> None:
    """Record the operator's wish; ``simbdp serve``'s stream manager carries it out."""
    spec = platform.tenant(tenant).app(app)
    if n > spec.max_instances:
        raise typer.BadParameter(f"{n} instances is above the profile's max_instances "
                                 f"({spec.max_instances})")
    before = {(r["tenant"], r["app"]): r["instances"] for r in store.desired()}
    store.set_desired(tenant, app, n)
    store.add_decision(tenant, app, action, f"requested by the operator: {n} instance(s)",
                       before.get((tenant, app), 0), n)


@stream_app.command()
def start(tenant: str = TENANT, app: str = APP, instances: int | None = typer.Option(None),
          home: Path | None = HOME) -> None:
    """Start a tenant's stream app (its min_instances, or --instances)."""
    platform = load(home)
    _check(platform, tenant, app)
    n = instances or max(1, platform.tenant(tenant).app(app).min_instances)
    set_instances(platform, StateStore.open(platform.config), tenant, app, n, "start")
    console.print(f"{tenant}/{app}: {n} instance(s) wanted")


@stream_app.command()
def stop(tenant: str = TENANT, app: str = APP, home: Path | None = HOME) -> None:
    """Stop every instance of a stream app (each finishes its batch in flight)."""
    platform = load(home)
    _check(platform, tenant, app)
    set_instances(platform, StateStore.open(platform.config), tenant, app, 0, "stop")
    console.print(f"{tenant}/{app}: stopping")


@stream_app.command()
def scale(tenant: str = TENANT, app: str = APP, instances: int = typer.Option(...),
          home: Path | None = HOME) -> None:
    """Set the number of instances of a stream app."""
    platform = load(home)
    _check(platform, tenant, app)
    set_instances(platform, StateStore.open(platform.config), tenant, app, instances, "scale")
    console.print(f"{tenant}/{app}: {instances} instance(s) wanted")


@stream_app.command()
def status(tenant: str | None = typer.Option(None, "--tenant", "-t"),
           home: Path | None = HOME) -> None:
    """Desired instances, pauses and the latest reports and decisions."""
    platform = load(home)
    store = StateStore.open(platform.config)
    t = Table(title="stream apps")
    for col in ("tenant", "app", "instances wanted", "paused", "last report", "backlog",
                "sinks", "last broker outage"):
        t.add_column(col)
    outages: dict[tuple[str, str], str] = {}
    for d in store.decisions(tenant, limit=1000):  # newest first
        if d["action"] == "broker_reconnected":
            outages.setdefault((d["tenant"], d["app"]), d["reason"])
    for r in store.desired():
        if tenant and r["tenant"] != tenant:
            continue
        last = store.stream_reports(r["tenant"], r["app"], limit=1)
        t.add_row(r["tenant"], r["app"], str(r["instances"]), r["paused_reason"] or "",
                  f"{last[0]['messages']} msgs" if last else "-",
                  str(last[0]["backlog"]) if last else "-",
                  "\n".join(f"{n}: {describe_sink(x)}" for n, x in
                            (last[0]["sinks"] or {}).items()) if last else "-",
                  outages.get((r["tenant"], r["app"]), "-"))
    console.print(t)
    d = Table(title="recent decisions")
    for col in ("tenant", "app", "action", "before", "after", "reason"):
        d.add_column(col)
    for r in store.decisions(tenant, limit=10):
        d.add_row(r["tenant"], r["app"] or "", r["action"], str(r["instances_before"]),
                  str(r["instances_after"]), r["reason"])
    console.print(d)


def publish(file: Path = typer.Argument(..., help="a JSON-lines file, one message a line"),
            tenant: str = TENANT,
            rate: float | None = typer.Option(None, help="messages per second"),
            id_field: str | None = typer.Option(None, help="field holding the message id"),
            table: str | None = typer.Option(None, help="target table (header)"),
            encrypt: bool = typer.Option(False, help="seal each message (Tink Aead)"),
            keyset: Path | None = typer.Option(None, help="with --encrypt: this keyset file "
                                                          "(default: the tenant's, from its "
                                                          "profile)"),
            home: Path | None = HOME) -> None:
    """Publish messages to a tenant's queue (confirmed by the broker)."""
    from simbdp.stream.client import publish_jsonl

    platform = load(home)
    keys = _publish_keyset(platform, tenant, keyset) if encrypt else None
    try:
        n = publish_jsonl(platform, tenant, file, rate=rate, id_field=id_field, table=table,
                          keyset=keys)
    except PublishInterrupted as e:
        err_console.print(f"[red]error[/red] {escape(str(e))}\n{e.confirmed} of {e.total} "
                          "message(s) were confirmed; publishing the same file again is safe "
                          "(the ids are derived from its content, so confirmed messages load "
                          "once)", highlight=False)
        raise typer.Exit(1) from e
    except BrokerUnavailable as e:
        err_console.print(f"[red]error[/red] tenant {tenant!r}: no batch of messages was "
                          f"confirmed: {escape(str(e))}\ncheck that the broker runs; "
                          "publishing the same file again is safe", highlight=False)
        raise typer.Exit(EXIT_UNREACHABLE) from e
    console.print(f"published {n} message(s) for tenant {tenant!r}")


def _publish_keyset(platform: Platform, tenant: str, path: Path | None) -> Keyset:
    from simbdp.crypto.keyset import parse_keyset, read_keyset_doc, tenant_keyset

    if path is not None:
        return parse_keyset(read_keyset_doc(path), path)
    found = tenant_keyset(platform.config, platform.tenant(tenant))
    if found is None:
        err_console.print(f"[red]error[/red] tenant {tenant!r} has no keyset registered "
                          "(profile: encryption.keyset); give one with --keyset",
                          highlight=False)
        raise typer.Exit(EXIT_USAGE)
    return found
