"""Staging folders: which files are ready, which names are safe, and where files end up."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from simbdp.errors import Rejected
from simbdp.profiles.platform import PlatformConfig

__all__ = [
    "FileTracker",
    "check_name",
    "check_regular",
    "claim",
    "ignored",
    "inflight_dir",
    "inflight_files",
    "move_to_outcome",
    "prepare_tenant_dirs",
]

OUTCOME_DIRS = ("processed", "rejected", "failed")
INFLIGHT = "inflight"
_MAX_NAME = 200


def prepare_tenant_dirs(config: PlatformConfig, tenant: str) -> Path:
    """Create the tenant's staging folder and its outcome folders (0700, the platform's own;
    see docs/design.md on giving a tenant's user access); return the staging one."""
    staging = config.staging_dir(tenant)
    folders = [config.tenant_dir(tenant).parent, config.tenant_dir(tenant), staging,
               inflight_dir(config, tenant),
               *(config.outcome_dir(tenant, d) for d in OUTCOME_DIRS)]
    config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for d in folders:  # one by one: mkdir(parents=True) gives parents the umask's mode
        d.mkdir(mode=0o700, exist_ok=True)
    return staging


_TEMP_SUFFIXES = (".part", ".tmp", "~", ".crdownload")


def ignored(name: str) -> bool:
    """Names staging never takes: files still being written by convention (``*.part``,
    ``*.tmp``, ``~``, ``.crdownload``) and dot files. ``check_name`` refuses them too, so the
    API and the push client never accept what the watcher would leave lying."""
    return name.startswith(".") or name.endswith(_TEMP_SUFFIXES)


def check_name(tenant: str, name: str) -> None:
    """Refuse names that could escape a folder, confuse tools downstream or that staging
    ignores; the one set of name rules of uploads, the push client and the watcher.

    Raises Rejected (code ``bad_name``) naming the tenant, the file and why.
    """
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
    if name.startswith("."):
        raise Rejected(f"tenant {tenant!r}: file name {name!r} starts with a dot; staging "
                       "ignores dot files, so it would never be ingested", "bad_name")
    if name.endswith(_TEMP_SUFFIXES):
        raise Rejected(f"tenant {tenant!r}: file name {name!r} ends with "
                       f"{next(s for s in _TEMP_SUFFIXES if name.endswith(s))!r}, the mark of "
                       "a file still being written; staging ignores it, so it would never be "
                       "ingested", "bad_name")


def inflight_dir(config: PlatformConfig, tenant: str) -> Path:
    """Where accepted files wait and are read: the platform's, never the tenant's to write."""
    return config.tenant_dir(tenant) / INFLIGHT


#: this process's folders under ``inflight/`` (``<_SLOTS>-0``, ``-1``...): only it renames into
#: them, so a name checked free there stays free until its rename
_SLOTS = f"s-{uuid.uuid4().hex[:12]}"


def claim(config: PlatformConfig, tenant: str, path: Path) -> Path:
    """Move a staged entry, as it is (a link stays a link, a FIFO a FIFO), under
    ``inflight/``, keeping its name (in the first of this process's folders there where the
    name is free); return its new path. Raises FileNotFoundError if it is gone.

    A rename in one filesystem is atomic: what is checked and read afterwards is exactly the
    entry taken, and nobody but the platform can swap it any more. The folders stay for the
    next files (a folder per file cost a mkdir and a rmdir each, ~2 ms on a journaled disk);
    recovery removes empty ones.
    """
    root = inflight_dir(config, tenant)
    n = 0
    while os.path.lexists(target := root / f"{_SLOTS}-{n}" / path.name):
        n += 1
    try:
        os.rename(path, target)
    except FileNotFoundError:
        if not os.path.lexists(path):
            raise
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.rename(path, target)
    return target


def inflight_files(config: PlatformConfig, tenant: str) -> list[Path]:
    """Entries left in ``inflight/`` (by a manager that stopped); empty folders are removed."""
    root = inflight_dir(config, tenant)
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        entries = sorted(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
        if entries:
            found.extend(entries)
        elif folder.is_dir():
            folder.rmdir()
    return found


_KINDS = ((stat.S_ISLNK, "is a symlink"), (stat.S_ISFIFO, "is a FIFO"),
          (stat.S_ISSOCK, "is a socket"), (stat.S_ISCHR, "is a character device"),
          (stat.S_ISBLK, "is a block device"), (stat.S_ISDIR, "is a folder"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _not_regular(tenant: str, name: str, mode: int) -> Rejected:
    what = next((w for test, w in _KINDS if test(mode)), "is not a regular file")
    return Rejected(f"tenant {tenant!r}: {name!r} {what}; only regular files are ingested "
                    "(it is kept in rejected/, never opened or followed)", "not_regular_file")


def check_regular(tenant: str, path: Path) -> int:
    """Check that ``path`` is a regular file with no other name; return its size.

    The verdict comes from ``fstat`` of a descriptor opened with ``O_NOFOLLOW`` (a symlink
    fails with ELOOP) and ``O_NONBLOCK`` (a FIFO opens without waiting for a writer), so it
    is about what was opened, not about what a name pointed to a moment before. Devices and
    sockets are refused on ``lstat`` without being opened (opening a device can act on it).
    A second hard link (``st_nlink > 1``) means the content lives elsewhere too: refused.
    """
    name = path.name
    mode = path.lstat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISFIFO(mode)):
        raise _not_regular(tenant, name, mode)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _not_regular(tenant, name, stat.S_IFLNK) from None
        raise Rejected(f"tenant {tenant!r}: {name!r} cannot be opened: {e.strerror}",
                       "unreadable") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(tenant, name, st.st_mode)
    if st.st_nlink != 1:
        raise Rejected(f"tenant {tenant!r}: {name!r} has {st.st_nlink} hard links; a file "
                       "linked from elsewhere is not ingested", "hard_link")
    return st.st_size


#: every ``.reason.json`` has these fields (null when they do not apply): ``outcome`` is the
#: folder, ``result`` the record's outcome (a duplicate goes to ``rejected/``)
REASON_FIELDS = ("tenant", "file", "outcome", "result", "reason", "code", "record",
                 "content_key", "rows_in", "rows_loaded", "rows_updated", "rows_rejected",
                 "read_secs", "app_secs", "write_secs", "rejected_rows_file", "quality")


def move_to_outcome(config: PlatformConfig, tenant: str, path: Path, outcome: str,
                    details: dict[str, Any]) -> Path:
    """Move a staged file to ``processed/``, ``rejected/`` or ``failed/`` with a reason file
    (the fields of :data:`REASON_FIELDS`, from ``details``).

    The entry itself is renamed (a symlink is moved, not its target; nothing is opened).
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
    if os.path.lexists(path):
        os.rename(path, dest)  # same filesystem: everything lives under data/<tenant>/
    reason = dest.with_name(dest.name + ".reason.json")
    tmp = reason.with_name(reason.name + ".tmp")
    unknown = set(details) - set(REASON_FIELDS)
    if unknown:
        raise ValueError(f"unknown reason fields {sorted(unknown)}")
    fields = {**dict.fromkeys(REASON_FIELDS), "result": outcome, **details,
              "tenant": tenant, "file": path.name, "outcome": outcome}
    tmp.write_text(json.dumps(fields, indent=2, default=str), encoding="utf-8")
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
