"""Shared helpers of the CLI: the platform home, loading, printing errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from simbdp.apps.sandbox import check_confinement
from simbdp.errors import AuthError, ConfigError, SimbdpError, TransientError
from simbdp.observe.logs import configure_logging, get_logger
from simbdp.profiles import Platform, load_platform

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "HOME", "CliGroup",
           "console", "err_console", "exit_code", "home_path", "load", "print_config_error"]

# piped output (CI logs, files) gets room for the report's columns instead of 80
console = Console() if sys.stdout.isatty() else Console(width=160)
# an error is one line, never cut by rich (the terminal wraps it if it must)
err_console = Console(stderr=True, soft_wrap=True)
#: the ``--home`` option of every command that works on a platform home
HOME = typer.Option(None, "--home", envvar="SIMBDP_HOME", help="platform home")


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
            err_console.print(f"[red]error[/red] {escape(str(f))}: "
                              f"[bold]{escape(loc or '(file)')}[/bold]: {escape(msg)}",
                              highlight=False)
    else:
        err_console.print(f"[red]error[/red] {escape(str(e))}", highlight=False)


#: exit codes of every ``simbdp`` command (README, "Exit codes")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def exit_code(e: SimbdpError) -> int:
    """Config, credentials and usage problems: 2; a service not reachable: 3; else 1."""
    if isinstance(e, ConfigError | AuthError):
        return EXIT_USAGE
    if isinstance(e, TransientError):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


class CliGroup(TyperGroup):
    """The top-level group: an expected failure (a ``SimbdpError``, an HTTP client error)
    becomes one line on stderr that says what and what to do, and an exit code; never a
    traceback. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            print_config_error(e)
            raise typer.Exit(EXIT_USAGE) from e
        except SimbdpError as e:
            err_console.print(f"[red]error[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(exit_code(e)) from e
        except Exception as e:
            # only a command that imported httpx can raise its errors: not imported for others
            httpx = sys.modules.get("httpx")
            if httpx is None or not isinstance(e, httpx.TransportError):
                raise
            err_console.print(f"[red]error[/red] cannot reach the server: {escape(str(e))}; "
                              "check the address and that it runs (`simbdp serve`)",
                              highlight=False)
            raise typer.Exit(EXIT_UNREACHABLE) from e
