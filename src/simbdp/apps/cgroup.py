"""A cgroup per app process: resident memory and a process count that the kernel enforces.

Uses the cgroup v1 ``memory`` and ``pids`` controllers, each group created under the
platform's own group of that controller (so the platform's own limits still cover its apps).
``memory.limit_in_bytes`` counts what the app really holds (RSS, page cache, its tmpfs), across
every process and thread of the app; over it the kernel's OOM killer ends a process of the
group with SIGKILL, which :meth:`AppCgroup.oom_killed` tells apart from other kills.
``pids.max`` bounds processes and threads together: a fork bomb gets ``EAGAIN``.

Where the controllers are not mounted or not writable (not root, cgroup v2 only), the
platform falls back to the rlimits of :mod:`simbdp.apps.sandbox` (``RLIMIT_AS``), and
:func:`cgroup_problem` says why.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import time
from pathlib import Path

__all__ = ["AppCgroup", "cgroup_problem"]

_ROOT = Path("/sys/fs/cgroup")
_CONTROLLERS = ("memory", "pids")
_PREFIX = "simbdp-app-"
_OOM_KILL = re.compile(rb"^oom_kill (\d+)$", re.M)
_serial = itertools.count()


def _own_group(controller: str) -> Path | None:
    """The folder of this process's cgroup for a v1 controller, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            folder = _ROOT / controller / path.lstrip("/")
            # inside a cgroup namespace the mount's root is our own group
            return folder if folder.is_dir() else _ROOT / controller
    return None


@functools.cache
def cgroup_problem() -> str | None:
    """Why app cgroups cannot be made here, or None when they can."""
    for c in _CONTROLLERS:
        folder = _own_group(c)
        if folder is None or not (folder / "cgroup.procs").exists():
            return f"the cgroup v1 {c} controller is not mounted"
        if not os.access(folder, os.W_OK):
            return f"cannot create cgroups in {folder} (not writable)"
    return None


def _sweep(parent: Path) -> None:
    """Remove groups left by platform processes that died (empty ones only)."""
    for d in parent.glob(f"{_PREFIX}*"):
        pid = d.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                d.rmdir()


class AppCgroup:
    """One memory + pids cgroup pair for one app process (and everything it starts)."""

    def __init__(self, memory_bytes: int, pids_max: int):
        self.dirs: dict[str, Path] = {}
        name = f"{_PREFIX}{os.getpid()}-{next(_serial)}"
        try:
            for c in _CONTROLLERS:
                parent = _own_group(c)
                assert parent is not None  # cgroup_problem() said it exists
                if not self.dirs:
                    _sweep(parent)
                folder = parent / name
                folder.mkdir()
                self.dirs[c] = folder
            mem = self.dirs["memory"]
            (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # only where swap accounting is on
                (mem / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            (self.dirs["pids"] / "pids.max").write_text(str(pids_max))
        except BaseException:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[str]:
        """Where a process writes its pid to enter the group (before it execs the app)."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def _read(self, controller: str, file: str) -> bytes:
        try:
            return (self.dirs[controller] / file).read_bytes()
        except (OSError, KeyError):
            return b""

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for going over its memory."""
        m = _OOM_KILL.search(self._read("memory", "memory.oom_control"))
        return bool(m and int(m.group(1)) > 0)

    def peak_bytes(self) -> int:
        """The most memory the group held at once."""
        raw = self._read("memory", "memory.max_usage_in_bytes").strip()
        return int(raw) if raw.isdigit() else 0

    def remove(self) -> None:
        """Delete the groups; their processes must have ended (a kill is asynchronous)."""
        for folder in self.dirs.values():
            for _ in range(200):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the killed processes are torn down
                    time.sleep(0.005)
        self.dirs = {}
