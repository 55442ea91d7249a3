"""``simbdp top``: the dashboard in the terminal, refreshed every second.

Reads the figures the web dashboard shows (:func:`simbdp.observe.dashboard.dashboard_view`),
either from a running ``simbdp serve`` (``--server`` and the key in ``SIMBDP_KEY``, as
``simbdp push``) or straight from a platform home's state store (every tenant).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from simbdp.cli.common import EXIT_UNREACHABLE, EXIT_USAGE, console, err_console, load
from simbdp.cli.report import parse_since
from simbdp.observe.dashboard import DEFAULT_WINDOW_SECS, dashboard_view, visible_tenants
from simbdp.state import StateStore
from simbdp.units import format_bytes

__all__ = ["render", "top"]

Fetch = Callable[[], dict[str, Any]]


def _window_secs(text: str) -> int:
    since = parse_since(text)
    if since is None or not text[:1].isdigit():
        raise typer.BadParameter(f"--window {text!r}: use e.g. 5m, 15m, 1h")
    secs = round(time.time() - since)
    if not 60 <= secs <= 7 * 86400:
        raise typer.BadParameter(f"--window {text!r}: between 1m and 7d")
    return secs


def _from_home(home: Path | None, window: int) -> Fetch:
    platform = load(home)
    store = StateStore.open(platform.config)
    return lambda: dashboard_view(platform, store, visible_tenants(platform, None), window)


def _from_server(server: str, key: str, window: int, cafile: Path | None) -> Fetch:
    client = httpx.Client(base_url=server.rstrip("/"), timeout=10,
                          headers={"Authorization": f"Bearer {key}"},
                          verify=str(cafile) if cafile else True)

    def fetch() -> dict[str, Any]:
        r = client.get("/v1/dashboard", params={"window_secs": window})
        if r.status_code == 401:
            err_console.print(f"[red]error[/red] {server}: the key was refused (wrong or "
                              "revoked); set SIMBDP_KEY to a valid key", highlight=False)
            raise typer.Exit(EXIT_USAGE)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]
    return fetch


def _state(v: dict[str, Any]) -> Text:
    t = v["totals"]
    if not v["enabled"]:
        return Text("disabled", style="red")
    if t["crash_looping"]:
        return Text("crash loop", style="bold red")
    if t["failed_files"]:
        return Text("failures", style="yellow")
    return Text("ok", style="green")


def render(view: dict[str, Any], source: str, problem: str | None = None) -> RenderableType:
    """One screen: a tenant per row, then the latest decisions and why tenants are off."""
    when = datetime.fromtimestamp(view["now"]).strftime("%H:%M:%S")
    head = Text(f"simbdp top · {source} · window {view['window_secs'] / 60:g} min · "
                f"updated {when} · Ctrl-C quits", style="bold")
    table = Table(expand=False, pad_edge=False)
    for col in ("tenant", "state", "rows/s", "rows loaded", "rows rej", "files ok", "files rej",
                "failed", "messages", "backlog", "instances", "quota"):
        table.add_column(col, justify="left" if col in ("tenant", "state") else "right",
                         no_wrap=True, overflow="ellipsis", max_width=28)
    for v in view["tenants"]:
        t, files = v["totals"], v["totals"]["files"]
        quota = t["quota_max_fraction"]
        table.add_row(
            v["tenant"], _state(v), f"{t['rows_per_sec_now']:,.1f}", f"{t['rows_loaded']:,}",
            f"{t['batch_rows_rejected']:,}/{t['dead_letters']:,}",
            f"{files.get('processed', 0):,}",
            f"{files.get('rejected', 0) + files.get('duplicate', 0):,}",
            Text(f"{files.get('failed', 0):,}", style="red" if files.get("failed") else ""),
            f"{t['messages']:,}", f"{t['backlog']:,}",
            f"{t['instances_running']}/{t['instances_desired']}",
            Text(f"{quota * 100:.1f}%", style="red" if quota >= 0.9 else ""))
    parts: list[RenderableType] = [head, table]
    if not view["tenants"]:
        parts.append(Text("no tenants yet"))
    elif not any(v["totals"]["files"] or v["totals"]["messages"] for v in view["tenants"]):
        parts.append(Text("no records in this window yet"))
    notes = [f"{v['tenant']}: {v['disabled_reason']}" for v in view["tenants"]
             if v["disabled_reason"]]
    notes += [f"{v['tenant']}/{a['app']}: crash loop, {a['restarts']} restarts in 15 min"
              for v in view["tenants"] for a in v["apps"] if a["crash_looping"]]
    decisions = sorted(((d, v["tenant"]) for v in view["tenants"] for d in v["decisions"]),
                       key=lambda x: -x[0]["at"])[:5]
    for d, tenant in decisions:
        at = datetime.fromtimestamp(d["at"]).strftime("%H:%M:%S")
        notes.append(f"{at} {tenant}/{d['app'] or '-'} {d['action']}: {d['reason']}")
    parts += [Text(n[:300], overflow="fold") for n in notes]
    total = sum(v["totals"]["bytes"] for v in view["tenants"])
    parts.append(Text(f"batch bytes in window: {format_bytes(total)}", style="dim"))
    if problem:
        parts.append(Text(problem, style="bold red"))
    return Group(*parts)


def top(home: Path | None = typer.Option(None, "--home", envvar="SIMBDP_HOME",
                                         help="platform home (read its state store)"),
        server: str | None = typer.Option(None, help="a running serve, e.g. "
                                          "http://127.0.0.1:8470 (the key in SIMBDP_KEY)"),
        key: str | None = typer.Option(None, envvar="SIMBDP_KEY", hidden=True),
        window: str = typer.Option(f"{DEFAULT_WINDOW_SECS // 60}m",
                                   help="the last 5m, 15m, 1h, ..."),
        interval: float = typer.Option(1.0, min=0.1, help="seconds between refreshes"),
        once: bool = typer.Option(False, help="print one screen and exit"),
        cafile: Path | None = typer.Option(None, help="CA bundle for an HTTPS server")
        ) -> None:
    """Tenants live in the terminal: rows/s, backlog, instances, quota use and failures."""
    secs = _window_secs(window)
    if server is not None:
        if not key:
            err_console.print("[red]error[/red] --server needs an API key in SIMBDP_KEY",
                              highlight=False)
            raise typer.Exit(EXIT_USAGE)
        fetch, source = _from_server(server, key, secs, cafile), server
    else:
        fetch, source = _from_home(home, secs), "state store"
    if once:
        try:
            console.print(render(fetch(), source))
        except httpx.HTTPError as e:
            err_console.print(f"[red]error[/red] {server}: {e}", highlight=False)
            raise typer.Exit(EXIT_UNREACHABLE) from e
        return
    last: dict[str, Any] | None = None
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                problem = None
                try:
                    last = fetch()
                except httpx.HTTPError as e:  # keep showing the last figures; retry
                    problem = f"{server} does not answer ({e}); retrying"
                if last is not None:
                    live.update(render(last, source, problem), refresh=True)
                elif problem:
                    live.update(Text(problem, style="bold red"), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
