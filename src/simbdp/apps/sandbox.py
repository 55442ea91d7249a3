"""The walls around an app process: namespaces, a private folder, an empty environment, limits.

Confined (the default): the app process runs under bubblewrap (``bwrap``, the sandbox of
Flatpak) in its own user, PID, IPC, UTS, mount, network and cgroup namespaces, as uid/gid
65534 inside, with no capabilities. Its file system holds only:

- ``/usr`` (and the ``/bin``, ``/lib*`` links), ``/etc/ld.so.cache`` and ``/etc/localtime``,
  read-only: nothing else of ``/etc`` (no passwd, no shadow, no hosts);
- the interpreter, its standard library, the venv and the ``simbdp`` package, read-only;
- ``/app``: a read-only copy of the tenant's app folder, made for this process;
- ``/tmp``: a private tmpfs of ``apps.tmp_mb`` MB, its cwd, ``HOME`` and ``TMPDIR``;
- ``/proc`` of its own PID namespace and a minimal ``/dev``.

No network: only a loopback of its own. The platform home, other tenants, the state store and
the brokers are not in its view at all. bwrap's own init is PID 1 of the namespace and exits
with the app, so a child that detaches with ``setsid`` dies with it, and the whole namespace
dies with the platform process that started it. bwrap's exit status is the app's, or 128 +
the signal that killed it.
Its standard output and error go to a log file the platform opened; data crosses two pipes.

Limits: a cgroup per app process (:mod:`simbdp.apps.cgroup`) bounds resident memory to
``memory_mb`` and processes plus threads to ``apps.pids_max``, across everything the app
starts. The child also lowers its own rlimits before it imports pyarrow or tenant code:
``RLIMIT_AS`` = ``memory_mb`` (address space of each process; Python with pyarrow needs
~200 MB of it before the first row, an app that uses duckdb needs ``memory_mb >= 1024``),
``RLIMIT_CPU`` (a backstop: the runner recycles the process long before), ``RLIMIT_FSIZE``
1 GiB, ``RLIMIT_CORE`` 0.

Unconfined: where bwrap is missing or cannot create namespaces, apps run only if the operator
sets ``apps.unconfined: true``: then a plain child process as the platform's user, with the
same private folder, environment and rlimits, and every record of such a run says so.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import simbdp
from simbdp.errors import ConfigError
from simbdp.observe.logs import get_logger

if TYPE_CHECKING:
    from simbdp.profiles.loader import Platform

__all__ = [
    "APP_DIR",
    "Limits",
    "bwrap_command",
    "check_confinement",
    "check_home_hidden",
    "child_env",
    "make_private_dir",
    "sandbox_problem",
]

#: where the app's folder appears inside the sandbox
APP_DIR = "/app"
_SANDBOX_TMP = "/tmp"
_SANDBOX_UID = 65534
_FSIZE_BYTES = 1024**3
_PATH = "/usr/local/bin:/usr/bin:/bin"
_ETC = ("/etc/ld.so.cache", "/etc/localtime")


@dataclass(frozen=True)
class Limits:
    """Resource limits the child applies to itself."""

    memory_mb: int
    cpu_secs: int
    fsize_bytes: int = _FSIZE_BYTES

    @classmethod
    def for_app(cls, memory_mb: int, timeout_secs: float) -> Limits:
        """Limits for one app; RLIMIT_CPU outlasts 4 calls using every core till timeout."""
        cpu = int(max(3600, 4 * timeout_secs * (os.cpu_count() or 1)))
        return cls(memory_mb=memory_mb, cpu_secs=cpu)

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@functools.cache
def runtime_paths() -> tuple[str, ...]:
    """Folders the child's interpreter reads: the Python install, the venv, simbdp, pyarrow."""
    spec = importlib.util.find_spec("pyarrow")  # found, not imported: the CLI does not need it
    if spec is None or spec.origin is None:
        raise ConfigError("pyarrow is not installed: tenant apps need it (pip install pyarrow)")
    paths = {sys.base_prefix, sys.prefix, Path(simbdp.__file__).parent,
             Path(spec.origin).parent, Path(sys.executable).parent}
    real = sorted({os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths})
    # a folder inside another bound one is bound already
    return tuple(p for p in real if not any(p != q and p.startswith(q + os.sep) for q in real)
                 and p != "/usr" and not p.startswith("/usr/"))


def _root_links() -> list[str]:
    """``/bin``, ``/lib``... as the host has them: links into /usr, or folders bound as-is."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def bwrap_command(private_dir: Path, tmp_mb: int) -> list[str]:
    """The bwrap command line that runs what follows it confined (see the module docstring)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID),
            "--hostname", "simbdp-app", "--ro-bind", "/usr", "/usr", *_root_links()]
    for f in _ETC:
        args += ["--ro-bind-try", f, f]
    for p in runtime_paths():
        args += ["--ro-bind", p, p]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(tmp_mb * 1024**2), "--tmpfs", _SANDBOX_TMP,
             "--ro-bind", str(private_dir / "app"), APP_DIR,
             "--chdir", _SANDBOX_TMP, "--"]
    return args


@functools.cache
def sandbox_problem() -> str | None:
    """Why apps cannot be confined on this machine, or None when they can."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="simbdp-probe-") as tmp:
        (Path(tmp) / "app").mkdir()
        try:
            # the same walls as an app's, around the cheapest program: a few ms, once a process
            done = subprocess.run([*bwrap_command(Path(tmp), 1), "true"],
                                  capture_output=True, text=True, timeout=30, env=child_env(tmp))
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap cannot run: {e}"
    if done.returncode != 0:
        return f"bwrap cannot create namespaces here: {done.stderr.strip()[:300]}"
    return None


def check_confinement(platform: Platform) -> None:
    """At start-up: refuse to run tenant apps unconfined unless the operator said so.

    Raises ConfigError when some enabled tenant has apps, they cannot be confined here and
    ``apps.unconfined`` is not set; logs a warning for every start without walls.
    """
    with_apps = sorted(t.tenant_id for t in platform.tenants.values() if t.enabled and t.apps)
    if not with_apps:
        return
    check_home_hidden(platform.config.home)
    problem = sandbox_problem()
    if problem is None:
        return
    if not platform.config.apps.unconfined:
        raise ConfigError(f"tenant apps ({', '.join(with_apps)}) cannot run confined: "
                          f"{problem}. Install bubblewrap, or set apps.unconfined: true in "
                          "platform.yaml to run them without walls between tenants")
    get_logger("simbdp.apps").warning(
        "apps_unconfined", tenants=with_apps, reason=problem,
        effect="tenant apps run as the platform's user and can read every tenant's data")


def check_home_hidden(home: Path) -> None:
    """Refuse a platform home inside a folder that every app sees (the interpreter's)."""
    real = os.path.realpath(home)
    for p in runtime_paths():
        if real == p or real.startswith(p + os.sep):
            raise ConfigError(f"the platform home {home} is inside {p}, which tenant apps "
                              "see read-only: move the home elsewhere")


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


def _sweep_private_dirs() -> None:
    """Remove the folders of app processes whose platform process was killed."""
    for d in Path(tempfile.gettempdir()).glob("simbdp-app-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


def make_private_dir(tenant: str, app_dir: Path) -> Path:
    """A fresh 0700 folder for one app process, with ``app/`` a copy of ``app_dir``."""
    _sweep_private_dirs()
    tmp = Path(tempfile.mkdtemp(prefix=f"simbdp-app-{os.getpid()}-{tenant}-"))
    try:
        _copy_app(app_dir, tmp / "app")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def child_env(home: str) -> dict[str, str]:
    """The whole environment of an app process: nothing is inherited from the platform."""
    return {
        "PATH": _PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        # a thread pool per core multiplies the address space counted by RLIMIT_AS
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        # the system allocator reserves address space close to what it uses (mimalloc
        # reserves a 1 GiB arena), so RLIMIT_AS stays close to the memory the app uses
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "MALLOC_ARENA_MAX": "1",
    }
