"""The walls around an app process: its user, its private folder, its environment, its limits.

- User: when the platform runs as root, each tenant's app processes run as an unprivileged uid
  of their own (``_UID_BASE`` + a hash of the tenant id; no passwd entry needed), or as
  ``nobody`` when the user namespace maps no such uid. They then cannot read folders that are
  not world-readable (keep the platform home 0700), nor signal, trace or read the ``/proc`` of
  the platform or of other tenants' app processes. This needs an interpreter and packages that
  any user can read; when they live under root's private home (pyenv in ``/root``) the drop is
  impossible and apps run as root: then nothing below stops an app that wants to get out.
- Folder: a private temporary folder (mode 0700, the cwd and HOME) holding a copy of the
  tenant's app folder, the only folder added to ``sys.path``. Symlinks that leave the folder,
  ``__pycache__`` and special files are not copied.
- Environment: a fixed minimal set (no inherited variables: no DSNs, keys or tokens).
- Limits (set by the child itself before it imports pyarrow or tenant code):
  ``RLIMIT_AS`` = ``memory_mb``: address space, not RSS. Python with pyarrow needs ~200 MB of
  it before the first row, plus about twice the chunk size. An app that uses duckdb should
  get ``memory_mb >= 1024`` (import and connect alone take ~384 MB here; below that
  ``duckdb.connect()`` dies by SIGSEGV or abort, reported as ``memory``) and should set
  duckdb's own ``memory_limit`` below it, as duckdb sizes its buffers from the machine's RAM.
  ``RLIMIT_CPU``: a backstop for orphans; the runner recycles the process long before it.
  ``RLIMIT_FSIZE``: 1 GiB per file. ``RLIMIT_CORE``: 0. ``RLIMIT_NPROC``: only for a
  dedicated uid (it counts every process of the user; root ignores it).
- Not provided: network isolation, a disk quota for the private folder, CPU shares, and
  a kill of processes an app detaches with ``setsid`` (cgroups or containers do those).
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import stat
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

__all__ = ["Limits", "child_env", "make_private_dir", "sandbox_ids"]

_UID_BASE, _UID_SPAN = 1_900_000_000, 100_000_000
_FSIZE_BYTES = 1024**3
_NPROC = 1024
_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    """Resource limits the child applies to itself (``None``: leave as inherited)."""

    memory_mb: int
    cpu_secs: int
    fsize_bytes: int = _FSIZE_BYTES
    nproc: int | None = None

    @classmethod
    def for_app(cls, memory_mb: int, timeout_secs: float,
                ids: tuple[int, int] | None) -> Limits:
        """Limits for one app; RLIMIT_CPU outlasts 4 calls using every core till timeout."""
        cpu = int(max(3600, 4 * timeout_secs * (os.cpu_count() or 1)))
        dedicated = ids is not None and ids[0] != 0
        return cls(memory_mb=memory_mb, cpu_secs=cpu, nproc=_NPROC if dedicated else None)

    def to_json(self) -> dict[str, int | None]:
        return asdict(self)


def _mapped(uid: int) -> bool:
    """Whether the current user namespace maps ``uid`` (so setuid to it can work)."""
    try:
        lines = Path("/proc/self/uid_map").read_text().split("\n")
    except OSError:
        return uid < 65536
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and int(parts[0]) <= uid < int(parts[0]) + int(parts[2]):
            return True
    return False


def _others_can(path: Path, bits: int) -> bool:
    """Whether a user with no relation to ``path``'s owner can reach it with ``bits``."""
    try:
        for p in {path.absolute(), path.resolve()}:
            if not all(d.stat().st_mode & stat.S_IXOTH for d in p.parents):
                return False
            if p.stat().st_mode & bits != bits:
                return False
    except OSError:
        return False
    return True


@functools.cache
def _runtime_readable() -> bool:
    import simbdp
    from simbdp.observe.logs import get_logger

    files = [Path(pa.__file__), Path(str(simbdp.__file__))]
    ok = _others_can(Path(sys.executable), stat.S_IXOTH) and all(
        _others_can(f, stat.S_IROTH) for f in files)
    if not ok:
        get_logger("simbdp.apps").warning(
            "apps_run_as_root", interpreter=sys.executable,
            reason="the interpreter or its packages are not readable by other users")
    return ok


def sandbox_ids(tenant: str) -> tuple[int, int] | None:
    """(uid, gid) the tenant's app processes run as, or None to keep the platform's own.

    None when the platform is not root (it cannot switch users) or when the interpreter and
    its packages are not readable by other users (the child could not even start).
    """
    if os.geteuid() != 0 or not _runtime_readable():
        return None
    uid = _UID_BASE + zlib.crc32(tenant.encode()) % _UID_SPAN
    try:
        pwd.getpwuid(uid)
        taken = True
    except KeyError:
        taken = False
    if _mapped(uid) and not taken:
        return uid, uid
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _copy_app(src: Path, dst: Path) -> None:
    """Copy the tenant's app folder, keeping only regular files and folders inside it."""
    dst.mkdir(mode=0o755)
    if not src.is_dir():
        return
    root = src.resolve()
    for entry in os.scandir(src):
        path = Path(entry.path)
        if entry.name == "__pycache__":
            continue
        if entry.is_symlink():
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError):  # dangling, or a loop
                continue
            if not target.is_relative_to(root) or not target.is_file():
                continue
        if entry.is_dir(follow_symlinks=False):
            _copy_app(path, dst / entry.name)
        elif entry.is_file():
            shutil.copyfile(path, dst / entry.name)


def make_private_dir(tenant: str, app_dir: Path, ids: tuple[int, int] | None) -> Path:
    """A fresh 0700 folder for one app process, with ``app/`` a copy of ``app_dir``."""
    tmp = Path(tempfile.mkdtemp(prefix=f"simbdp-app-{tenant}-"))
    try:
        _copy_app(app_dir, tmp / "app")
        if ids is not None:
            for p in [tmp, *tmp.rglob("*")]:
                os.chown(p, *ids, follow_symlinks=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def child_env(private_dir: Path) -> dict[str, str]:
    """The whole environment of an app process: nothing is inherited from the platform."""
    return {
        "PATH": _PATH,
        "LANG": "C.UTF-8",
        "HOME": str(private_dir),
        "TMPDIR": str(private_dir),
        # a thread pool per core multiplies the address space counted by RLIMIT_AS
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        # the system allocator reserves address space close to what it uses (mimalloc
        # reserves a 1 GiB arena), so RLIMIT_AS stays close to the memory the app uses
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "MALLOC_ARENA_MAX": "1",
    }
