"""The platform home is the platform's alone: folders 0700, files 0600.

The CLI sets the process umask to 0o077 before it creates anything, so every folder and file
the platform or a library makes under the home (state.sqlite and its -wal/-shm siblings,
DuckDB files and their .wal, queue databases, logs, profiles) is private to the platform's
user; ``make_private`` narrows what is copied in with its own modes (tenant app folders).
``check_home`` runs at start-up and warns about every path that is wider than that.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from simbdp.observe.logs import get_logger
from simbdp.profiles.platform import PlatformConfig

__all__ = ["PRIVATE_UMASK", "check_home", "make_private", "start_home", "too_wide",
           "use_private_umask"]

PRIVATE_UMASK = 0o077


def use_private_umask() -> None:
    """From now on, this process (and what it starts) creates private folders and files."""
    os.umask(PRIVATE_UMASK)


def make_private(root: Path) -> None:
    """Drop group and other permissions of ``root`` and everything under it (not links)."""
    for path in [root, *_walk(root)]:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(st.st_mode) & 0o700)


def _walk(root: Path, prune: Path | None = None) -> Iterator[Path]:
    """Every path under ``root``, without following links; the contents of folders two
    levels under ``prune`` (``data/<tenant>/<folder>/``: tenant files) are not listed."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if prune is not None and here.parent.parent == prune:
            dirnames.clear()
            continue
        for name in [*dirnames, *filenames]:
            yield here / name


def too_wide(config: PlatformConfig) -> list[tuple[Path, int]]:
    """Platform paths whose mode lets anyone but the platform's user in, with their mode.

    Looks at the home and the sink and broker folders outside it; under ``data/`` it checks
    each tenant's folders but not the tenant files in them.
    """
    roots = [config.home]
    for extra in [*(s.path for s in config.sinks.values()), config.broker.path]:
        if extra is not None and not Path(extra).resolve().is_relative_to(config.home):
            roots.append(Path(extra).resolve())
    wide = []
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *_walk(root, prune=config.home / "data")]:
            try:
                st = path.lstat()
            except FileNotFoundError:  # gone meanwhile (a -wal file)
                continue
            mode = stat.S_IMODE(st.st_mode)
            if not stat.S_ISLNK(st.st_mode) and mode & 0o077:
                wide.append((path, mode))
    return wide


def check_home(config: PlatformConfig) -> list[tuple[Path, int]]:
    """Log ``home_permissions_too_wide`` (path, mode) for each path ``too_wide`` finds."""
    log = get_logger("simbdp.home")
    wide = too_wide(config)
    for path, mode in wide:
        log.warning("home_permissions_too_wide", path=str(path), mode=f"{mode:04o}",
                    reason="readable or writable by other users; folders should be 0700, "
                           "files 0600")
    return wide


def start_home(config: PlatformConfig) -> None:
    """Start-up of ``simbdp serve`` and ``simbdp ingest``: private umask, then the check."""
    use_private_umask()
    config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_home(config)
