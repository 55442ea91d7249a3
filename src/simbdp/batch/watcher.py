"""Watch every tenant's staging folder with inotify; events act at once, the rescan is the
fallback.

One inotify descriptor for all folders, read without a thread: the manager waits on
:meth:`StagingWatcher.fileno` beside its workers, so a file closed after writing
(``IN_CLOSE_WRITE``) or renamed into a folder (``IN_MOVED_TO``) is taken within milliseconds.
watchdog, used before, held events back up to 0.5 s to pair renames and reported a file
renamed in from another folder as merely created, so such files waited for ``stable_secs``.
Where inotify is missing, :meth:`fileno` is None and only the periodic rescan finds files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from pathlib import Path

__all__ = ["StagingWatcher"]

_IN_MODIFY, _IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x8, 0x80, 0x100
_IN_Q_OVERFLOW, _IN_ISDIR = 0x4000, 0x40000000
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return libc if hasattr(libc, "inotify_init1") else None


class StagingWatcher:
    """Yields ``(tenant, path, "seen" | "writing" | "complete")`` from :meth:`drain`, and
    ``("", Path(), "overflow")`` when the kernel dropped events (rescan then)."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._fd = -1
        if self._libc is not None:
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            self._fd = fd if fd >= 0 else -1
        self._folders: dict[int, tuple[str, Path]] = {}

    def watch(self, tenant: str, folder: Path) -> None:
        if self._fd < 0 or any(f == folder for _, f in self._folders.values()):
            return
        wd = self._libc.inotify_add_watch(  # type: ignore[union-attr]
            self._fd, os.fsencode(folder), _MASK)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"cannot watch {folder}: {os.strerror(e)}")
        self._folders[wd] = (tenant, folder)

    def fileno(self) -> int | None:
        """Readable when events are waiting; None without inotify."""
        return self._fd if self._fd >= 0 else None

    def start(self) -> None:
        """Nothing to start: events queue in the kernel until :meth:`drain`."""

    def stop(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def drain(self) -> list[tuple[str, Path, str]]:
        out: list[tuple[str, Path, str]] = []
        while self._fd >= 0:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size: offset + _HEADER.size + size]
                offset += _HEADER.size + size
                if mask & _IN_Q_OVERFLOW:
                    out.append(("", Path(), "overflow"))
                    continue
                if mask & _IN_ISDIR or wd not in self._folders:
                    continue
                tenant, folder = self._folders[wd]
                path = folder / os.fsdecode(raw.rstrip(b"\0"))
                if mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO):
                    out.append((tenant, path, "complete"))
                elif mask & _IN_MODIFY:
                    out.append((tenant, path, "writing"))
                elif mask & _IN_CREATE:
                    # a hint only: a hard link or a copy-then-close also starts with a creation
                    out.append((tenant, path, "seen"))
        return out
