"""Shared helpers of the CLI: the platform home, loading, printing errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from simbdp.apps.sandbox import check_confinement
from simbdp.errors import ConfigError
from simbdp.observe.logs import configure_logging, get_logger
from simbdp.profiles import Platform, load_platform

__all__ = ["console", "err_console", "home_path", "load"]

# piped output (CI logs, files) gets room for the report's columns instead of 80
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)


def home_path(home: Path | None) -> Path:
    return (home or Path(os.environ.get("SIMBDP_HOME", ".simbdp"))).resolve()


def load(home: Path | None, *, log_console: bool = False, runs_apps: bool = False
         ) -> Platform:
    """Load the platform or exit with every config problem printed.

    ``runs_apps``: the command runs tenant apps, so they must be confinable here (or the
    operator must have said ``apps.unconfined``).
    """
    path = home_path(home)
    try:
        platform = load_platform(path)
        configure_logging(platform.config.home / "logs" / "simbdp.jsonl", console=log_console)
        if runs_apps:
            check_confinement(platform)
    except ConfigError as e:
        print_config_error(e)
        raise typer.Exit(2) from e
    log = get_logger("simbdp.profiles")
    for tenant, reason in platform.broken.items():
        log.error("profile_broken", tenant=tenant, reason=reason,
                  action="tenant disabled until its profile file is fixed")
        err_console.print(f"[yellow]warning[/yellow] tenant {tenant!r} is disabled: {reason}")
    return platform


def print_config_error(e: ConfigError) -> None:
    if e.problems:
        for f, loc, msg in e.problems:
            err_console.print(f"[red]error[/red] {f}: [bold]{loc or '(file)'}[/bold]: {msg}")
    else:
        err_console.print(f"[red]error[/red] {e}")
