"""Staging folders: which files are ready, which names are safe, and where files end up."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from simbdp.errors import Rejected
from simbdp.profiles.models import PlatformConfig

__all__ = [
    "FileTracker",
    "check_inside",
    "check_name",
    "ignored",
    "move_to_outcome",
    "prepare_tenant_dirs",
]

OUTCOME_DIRS = ("processed", "rejected", "failed")
_MAX_NAME = 200


def prepare_tenant_dirs(config: PlatformConfig, tenant: str) -> Path:
    """Create the tenant's staging folder and its outcome folders (0700, the platform's own;
    see docs/design.md on giving a tenant's user access); return the staging one."""
    staging = config.staging_dir(tenant)
    folders = [config.tenant_dir(tenant).parent, config.tenant_dir(tenant), staging,
               *(config.outcome_dir(tenant, d) for d in OUTCOME_DIRS)]
    config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for d in folders:  # one by one: mkdir(parents=True) gives parents the umask's mode
        d.mkdir(mode=0o700, exist_ok=True)
    return staging


def ignored(name: str) -> bool:
    """Files still being written by convention: ``*.part``, ``*.tmp``, dot files, ``~`` files."""
    return name.startswith(".") or name.endswith((".part", ".tmp", "~", ".crdownload"))


def check_name(tenant: str, name: str) -> None:
    """Refuse names that could escape a folder or confuse tools downstream."""
    if not name or name in (".", ".."):
        raise Rejected(f"tenant {tenant!r}: empty or special file name {name!r}", "bad_name")
    if ".." in name:
        raise Rejected(f"tenant {tenant!r}: file name {name!r} contains '..'", "bad_name")
    if "/" in name or "\\" in name:
        raise Rejected(f"tenant {tenant!r}: file name {name!r} contains a path separator",
                       "bad_name")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Rejected(f"tenant {tenant!r}: file name {name!r} contains a control character",
                       "bad_name")
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME:
        raise Rejected(f"tenant {tenant!r}: file name is longer than {_MAX_NAME} bytes",
                       "bad_name")


def check_inside(tenant: str, path: Path, folder: Path) -> None:
    """Refuse a symlink (or anything) that resolves outside the tenant's staging folder."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(folder.resolve()):
            raise Rejected(f"tenant {tenant!r}: {path.name!r} is a symlink out of the staging "
                           f"folder (to {target})", "bad_name")
    if not path.is_file():
        raise Rejected(f"tenant {tenant!r}: {path.name!r} is not a regular file", "bad_name")


def move_to_outcome(config: PlatformConfig, tenant: str, path: Path, outcome: str,
                    details: dict[str, Any]) -> Path:
    """Move a staged file to ``processed/``, ``rejected/`` or ``failed/`` with a reason file.

    Never overwrites: a name already taken gets a numeric suffix. Returns the new path.
    """
    if outcome not in OUTCOME_DIRS:
        raise ValueError(f"unknown outcome folder {outcome!r}")
    dest_dir = config.outcome_dir(tenant, outcome)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    n = 1
    while dest.exists() or dest.is_symlink():
        dest = dest_dir / f"{path.name}.{n}"
        n += 1
    if path.exists() or path.is_symlink():
        shutil.move(str(path), dest)
    reason = dest.with_name(dest.name + ".reason.json")
    tmp = reason.with_name(reason.name + ".tmp")
    tmp.write_text(json.dumps({"tenant": tenant, "file": path.name, "outcome": outcome,
                               **details}, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, reason)
    return dest


class FileTracker:
    """Decides when a staged file is complete.

    With the watcher running, a file written in place is complete when its writer closes it
    (inotify close-write) or renames it into the folder; without events (files found by a
    rescan after a restart), when its size and mtime stay unchanged for ``stable_secs``. A
    file whose writer keeps it open without writing for ``stuck_secs`` is taken too.
    """

    def __init__(self, stable_secs: float, stuck_secs: float = 60.0):
        self.stable_secs, self.stuck_secs = stable_secs, max(stuck_secs, stable_secs)
        self._seen: dict[Path, tuple[int, int, float]] = {}
        self._complete: set[Path] = set()
        self._writing: set[Path] = set()

    def mark_writing(self, path: Path) -> None:
        self._writing.add(path)
        self._complete.discard(path)

    def mark_complete(self, path: Path) -> None:
        self._writing.discard(path)
        self._complete.add(path)

    def ready(self, path: Path, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        try:
            st = path.lstat()
        except FileNotFoundError:
            self.forget(path)
            return False
        sig = (st.st_size, st.st_mtime_ns)
        prev = self._seen.get(path)
        if prev is None or prev[:2] != sig:
            self._seen[path] = (*sig, now)
            stable_for = 0.0
        else:
            stable_for = now - prev[2]
        if path in self._complete:
            return True
        if path in self._writing:
            return stable_for >= self.stuck_secs
        return stable_for >= self.stable_secs if prev is not None else self.stable_secs == 0

    @property
    def pending(self) -> bool:
        """Files seen but not yet taken."""
        return bool(self._seen)

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)
        self._complete.discard(path)
        self._writing.discard(path)
